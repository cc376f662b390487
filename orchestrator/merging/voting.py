"""Voting a node branch into a dataset's ground-truth, and what happens when the federation is away.

With etcd answering, the merge happens under the dataset's federation-wide lock (``Locks``), so
instances merge one after the other and no merge is lost. When etcd is unreachable (or the lock's
lease is lost before the merge), the step does not fail: its node branch is pushed to the dataset's
master and the merge is queued in SQL (``PendingMerges``), one per dataset and branch. A background
task retries the queue with backoff, and at once when etcd answers again. ``merge_and_push`` skips a
commit ground-truth already contains, so a retry after a crash never merges anything twice.

How it shows: the step is ``succeeded`` with ``merge: "queued"``, then ``"merged"`` (with its
``merge_commit``) once done; a queued merge that conflicts turns the step ``conflict`` and its run
``failed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..datasets import Datasets, MergeResult
from ..domain.pipeline import Dataset
from ..domain.states import MergeState
from ..errors import EtcdUnavailable, GitError, MaoError
from ..federation import keys
from ..federation.etcd import Etcd
from ..federation.locks import LockLost, Locks
from ..metrics import UNSERVED, Metrics
from ..phases import phase
from ..services import LoopService
from ..store.outage import PendingMerges
from .advances import announce, announced_commit
from .registrations import Registrations

if TYPE_CHECKING:
    from .pins import Pins

log = logging.getLogger(__name__)

RETRY_FIRST = 2.0
RETRY_MAX = 60.0
IDLE_CHECK = 60.0


@dataclass(frozen=True)
class Vote:
    state: MergeState
    commit: str | None  # ground-truth after the merge (None while queued)
    conflicts: list[str] = field(default_factory=list)


class Voting:
    metrics: Metrics = UNSERVED  # the node's, set by Node.build

    def __init__(
        self,
        datasets: Datasets,
        locks: Locks,
        pending: PendingMerges,
        registrations: Registrations,
        etcd: Etcd,
        pins: Pins | None = None,
    ) -> None:
        self.pins = pins
        self.datasets = datasets
        self.locks = locks
        self.pending = pending
        self.registrations = registrations
        self.etcd = etcd
        self._retrier = _QueuedMerges(self)
        etcd.on_available(self._retrier.wake)

    async def start(self) -> None:
        await self._retrier.start()

    async def close(self) -> None:
        await self._retrier.close()

    async def vote(
        self,
        step: tuple[str, str] | None,
        dataset: Dataset,
        branch: str,
        commit: str,
        message: str,
        trailers: Mapping[str, str],
    ) -> Vote:
        """Merge ``branch`` into ground-truth now, or queue the merge when the federation is away.
        ``step`` is the (run id, step name) whose record a queued merge settles (None: no run's)."""
        # An earlier merge of the branch still queued here, read beside the merge (which does not
        # depend on it): one queued before this vote is contained in what this vote merges (its
        # push moved the node branch this commit builds on); one queued meanwhile stays queued, and
        # its retry finds it contained and settles it.
        queued_read = asyncio.create_task(
            self.pending.get(dataset.name, branch), name=f"queued merge of {branch}"
        )
        try:
            with phase("vote/lock, merge, push, announce"):
                result = await self._merge(dataset.name, dataset.master, branch, message, trailers, commit)
        except (EtcdUnavailable, LockLost) as exc:
            await _finished(queued_read)
            # What was pushed: the commit, merged with the branch's tip if another vote landed since.
            pushed = await self.datasets.run(
                dataset.name, dataset.master, lambda repo: repo.push_branch(branch, commit, trailers)
            )
            covered = await self.pending.queue(
                dataset.name, branch, dataset.master, pushed, message, trailers, step
            )
            log.warning(
                "merge of %s into ground-truth of %s queued (%d step(s) waiting) and its node branch "
                "pushed, because the federation is unreachable: %s",
                branch,
                dataset.name,
                covered,
                exc.message,
            )
            self._retrier.wake()
            return Vote(MergeState.QUEUED, None)
        except BaseException:
            await _finished(queued_read)
            raise
        if result.conflicts:
            await _finished(queued_read)
            return Vote(MergeState.CONFLICT, result.commit, result.conflicts)
        # The tip merged now contains any earlier commit of the branch still queued here.
        with phase("vote/queued merges checked"):
            queued = await queued_read
        if queued is not None:
            await self.pending.settle(dataset.name, branch, queued["commit"], queued["steps"], result.commit)
            log.info("queued merge of %s into %s settled by a later run's merge", branch, dataset.name)
        return Vote(MergeState.MERGED, result.commit)

    async def _accepted_master(self, dataset: str, queued: str) -> str | None:
        """Where a queued merge goes: the master it was queued with (its step's pinned one) while this
        instance still accepts it, else the one it accepts now; never a master it did not accept."""
        if self.pins is None:  # no pins (unit tests of the queue alone): the registration's master
            registered = await self.registrations.dataset(dataset)
            return registered.master if registered else queued
        accepted = await self.pins.masters(dataset)
        if queued in accepted:
            return queued
        return await self.pins.master(dataset) if accepted else None

    async def _merge(
        self,
        dataset: str,
        master: str,
        branch: str,
        message: str,
        trailers: Mapping[str, str],
        commit: str | None = None,
    ) -> MergeResult:
        """``commit`` (None: the node branch's local tip, for a queued merge) into ground-truth."""
        advances = keys.ground_truth(dataset)
        async with self.locks.dataset(
            dataset, purpose=f"merge {branch} (run {trailers.get('MAO-Run', '?')})", reads=(advances,)
        ) as held:
            held.check()
            last = held.read.get(advances)
            try:
                # The push is killed if the lease is lost meanwhile: it never lands after the lease.
                with phase("vote/git merge and push"):
                    result = await self.datasets.run(
                        dataset,
                        master,
                        lambda repo: repo.merge_and_push(
                            branch,
                            message,
                            trailers,
                            abort=held.lost_event,
                            commit=commit,
                            announced=announced_commit(last),
                        ),
                    )
            except GitError:
                held.check()  # stopped because the lock was lost: queued like any lock lost
                raise
            # With the lock's release: the announcements (data triggers' key) come in the order of the
            # merges.
            if result.merged and result.commit:
                with phase("vote/release and announce (etcd)"):
                    await announce(self.locks, held, self.etcd, dataset, result.commit, trailers, last)
            return result

    # -- the queue ------------------------------------------------------------------------------
    async def _retry(self, queued: list[dict[str, Any]]) -> bool:
        """Try each queued merge once; False when the federation is still away (stop for now)."""
        all_done = True
        for item in queued:
            name, branch = item["dataset"], item["branch"]
            try:
                master = await self._accepted_master(name, item["master"])
                if master is None:
                    raise MaoError(
                        f"the master {item['master']} of dataset {name} is no longer one this instance "
                        "accepted (the dataset's registration changed): accept it to let this merge go on"
                    )
                result = await self._merge(name, master, branch, item["message"], item["trailers"])
            except (EtcdUnavailable, LockLost) as exc:
                await self.pending.failed_attempt(name, branch, exc.message)
                log.debug("queued merges wait: %s", exc.message)
                return False
            except MaoError as exc:  # e.g. the master is unreachable: keep it, try again later
                await self.pending.failed_attempt(name, branch, exc.message)
                log.warning("queued merge of %s into %s failed, will retry: %s", branch, name, exc.message)
                all_done = False
                continue
            except Exception as exc:  # noqa: BLE001 - one bad item must not stop the queue for good
                # E.g. a malformed registration in etcd, or an OSError from git's thread.
                log.exception("queued merge of %s into %s failed unexpectedly, will retry", branch, name)
                await self.pending.failed_attempt(name, branch, f"unexpected error: {exc}")
                all_done = False
                continue
            if result.conflicts:
                error = f"the queued merge of {branch} into ground-truth of {name} conflicts in " + ", ".join(
                    result.conflicts[:10]
                )
                ended = await self.pending.settle(
                    name, branch, item["commit"], item["steps"], None, result.conflicts, error
                )
                # A run still going counts its conflict step when it ends (Metrics.observe_run);
                # one that ended with the merge queued is counted here, or never.
                self.metrics.merge_conflicts.inc(ended)
                log.warning("%s: its step(s) are marked conflict and ground-truth is untouched", error)
            else:
                await self.pending.settle(name, branch, item["commit"], item["steps"], result.commit)
                log.info(
                    "queued merge of %s into ground-truth of %s done (%s), %d step(s) settled",
                    branch,
                    name,
                    "merged" if result.merged else "already contained",
                    len(item["steps"]),
                )
        return all_done


async def _finished(task: asyncio.Task[Any]) -> None:
    """Let a side read the vote no longer needs end (never left running); its result, or error, is
    of no use any more."""
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


class _NotYet(Exception):
    """A queued merge that could not be done this round (the federation is away, a master fails)."""


class _QueuedMerges(LoopService):
    """Retries the queue of merges now and then, and at once when etcd answers again or a merge is
    queued (``wake``); with backoff while they keep failing."""

    what = "queued merges"
    quiet = (_NotYet,)  # each merge says why it waits (voting._retry)

    def __init__(self, voting: Voting) -> None:
        self.voting = voting
        self._idle = False

    async def start(self) -> None:
        # Read at start, not at import: tests move them.
        self.first_wait, self.retry_first, self.retry_cap = RETRY_FIRST, RETRY_FIRST, RETRY_MAX
        await super().start()

    async def run_once(self) -> str | None:
        queued = await self.voting.pending.all()
        self._idle = not queued
        if queued and not await self.voting._retry(queued):
            raise _NotYet(f"{len(queued)} queued merge(s) wait")
        return None  # each merge done says so itself

    def next_wait(self) -> float:
        return IDLE_CHECK if self._idle else RETRY_FIRST
