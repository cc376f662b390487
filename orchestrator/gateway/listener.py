"""The raw-entry listener: every entry this instance acknowledged reaches git, exactly once.

With ``MAO_RAW_DATASET`` set, each instance watches ``/mao/v1/raw/`` and keeps the entries it wrote
itself (``instance`` in the stored value): each instance answers for what it acknowledged, so an
entry is kept once however many instances listen. Entries are collected in memory and written, every
``MAO_RAW_BATCH_SECONDS`` or ``MAO_RAW_BATCH_SIZE`` entries, as one commit on the dataset's node
branch ``raw-<instance>``, which is then voted into ground-truth like a step's output (merged under
the dataset's lock, or pushed and queued while etcd is away).

Exactly once, across crashes:
- An entry is the file ``<key>@<revision>.json``, ``revision`` being the etcd revision ``/write``
  answered. The name depends only on the entry, so writing it again changes nothing: a replayed
  batch is a commit that changes nothing, and a vote of a commit ground-truth already has is a
  no-op. (``@`` is in no key segment, so such a file never collides with a key's folder.)
- SQL keeps a revision up to which every acknowledged entry is committed (``ListenerProgress``):
  after each commit, and meanwhile (at the first start, and every 30 s) the revision just before the
  oldest entry still waiting. At start the watch resumes right after it: etcd replays its history,
  so entries acknowledged just before a crash are collected again even when their lease has expired
  meanwhile. Only if etcd has compacted that history does the listener fall back to listing the
  prefix (what is still there); the very first start lists it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..datasets.files import commit_files
from ..domain.pipeline import Dataset, node_branch
from ..errors import DatabaseUnavailable, EtcdUnavailable, MaoError, NotFound
from ..federation import keys, records
from ..federation.answers import KeyValue, WatchEvent
from ..federation.etcd import Etcd
from ..federation.registry import Registry
from ..federation.watch import PrefixWatch
from ..store.gateway import ListenerProgress
from ..store.pins import RAW_SCOPE
from ..tasks import spawn
from .namespace import key_problem
from .raw import entry_mac, without_mac

if TYPE_CHECKING:
    from ..config import Settings
    from ..datasets import Datasets
    from ..merging.pins import Pins
    from ..merging.registrations import Registrations
    from ..merging.voting import Voting

log = logging.getLogger(__name__)

RETRY_FIRST, RETRY_MAX = 2.0, 60.0
IDLE_SAVE = 30.0  # how often the position is saved while no entry of ours arrives
CLOSE_FLUSH_TIMEOUT = 10.0


class RawListener:
    def __init__(
        self,
        settings: Settings,
        dataset: str,
        etcd: Etcd,
        registry: Registry,
        registrations: Registrations,
        datasets: Datasets,
        voting: Voting,
        progress: ListenerProgress,
        secret: bytes | None = None,
        pins: Pins | None = None,
    ) -> None:
        self.secret = secret
        self.pins = pins
        # Entries up to this revision may predate the MAC (written by an older version before this
        # start): taken without one. Set at start; 0 until then (none is).
        self._unmarked_until = 0
        self.instance = settings.instance_name
        self.dataset = dataset
        self.branch = node_branch("raw", self.instance)
        self.batch_seconds = settings.raw_batch_seconds
        self.batch_size = settings.raw_batch_size
        self.max_pending = max(10 * self.batch_size, 1000)
        self.etcd = etcd
        self.registry = registry
        self.registrations = registrations
        self.datasets = datasets
        self.voting = voting
        self.progress = progress
        self._pending: dict[int, tuple[str, dict[str, Any]]] = {}  # revision -> (key, stored value)
        self._seen = 0  # every event up to this revision has been collected
        self._done = 0  # every entry of ours up to this revision is committed
        self._saved = 0  # the position saved in SQL (never beyond what is committed)
        self._has_entries = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._drained = asyncio.Event()
        self._registered = False
        self._flush_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._spawn(self._run(), "raw listener")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending:
            # A clean stop commits what it has; whatever does not make it is replayed at the next start.
            try:
                await asyncio.wait_for(self._flush(), CLOSE_FLUSH_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - git, etcd, SQL, a full disk: the shutdown goes on
                log.warning(
                    "raw listener: %d entries not committed at shutdown, they are replayed at the next "
                    "start (%s)",
                    len(self._pending),
                    "timed out"
                    if isinstance(exc, TimeoutError)
                    else getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}",
                )

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        spawn(coroutine, name, self._tasks)

    # -- collecting -----------------------------------------------------------------------------
    async def _run(self) -> None:
        saved = await self._saved_position()
        self._seen = self._done = self._saved = saved or 0
        if self.secret is not None:
            self._unmarked_until = await self._revision_now()
        log.info(
            "raw listener: keeping the entries this instance acknowledges in dataset %s, branch %s (%s)",
            self.dataset,
            self.branch,
            f"resuming after revision {saved}" if saved else "starting from the entries in etcd now",
        )
        self._spawn(self._flush_loop(), "raw listener flush")
        watch = PrefixWatch(
            self.etcd,
            keys.RAW,
            on_list=self._on_list,
            on_event=self._on_event,
            what="raw listener",
            start_revision=saved + 1 if saved else None,
        )
        await watch.run()

    async def _revision_now(self) -> int:
        delay = RETRY_FIRST
        while True:
            try:
                return await self.etcd.revision()
            except MaoError as exc:
                log.debug("raw listener waits for etcd: %s", exc.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _saved_position(self) -> int | None:
        delay = RETRY_FIRST
        while True:
            try:
                saved = await self.progress.get(self.dataset)
                return saved[0] if saved else None
            except MaoError as exc:
                log.warning("raw listener waits for the database: %s", exc.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _on_list(self, values: list[KeyValue], revision: int) -> None:
        for kv in values:
            self._collect(kv.key, kv.value, kv.mod_revision)
        self._seen = max(self._seen, revision)
        # From now on a crash resumes from etcd's history rather than from a list of what survived.
        with contextlib.suppress(DatabaseUnavailable):
            await self._save_position()
        await self._backpressure()

    async def _on_event(self, event: WatchEvent) -> None:
        if event.kind == "PUT":
            self._collect(event.key, event.value, event.revision)
        # Each /write is one put, one revision: only a lease expiring deletes several raw keys in one
        # revision, and deletions are of no interest here. So an event's revision is fully seen.
        self._seen = max(self._seen, event.revision)
        await self._backpressure()

    def _collect(self, key: str, value: Any, revision: int) -> None:
        if revision <= self._done or revision in self._pending:
            return  # committed already, or a watch resumed at a revision it had delivered
        if not isinstance(value, dict) or value.get("instance") != self.instance:
            return
        if not self._acknowledged_here(key, revision, value):
            return
        path = key.removeprefix(keys.RAW)
        if key_problem(path) is not None:  # not written by a gateway (etcdctl?): never a file name
            log.warning("raw listener: ignoring %s, not a gateway key", key[:300])
            return
        self._pending[revision] = (path, value)
        self._has_entries.set()
        if len(self._pending) >= self.batch_size:
            self._batch_full.set()

    def _acknowledged_here(self, key: str, revision: int, value: dict[str, Any]) -> bool:
        """Whether this instance's ``/write`` acknowledged the entry: it carries this instance's MAC
        (``raw.entry_mac``). Any member can write a key naming this instance; only what this instance
        acknowledged goes into its branch. Entries written before this start may come from an older
        version without MACs (the one upgrade): taken as they are."""
        if self.secret is None:
            return True
        mac = value.get("mac")
        if isinstance(mac, str) and hmac.compare_digest(mac, entry_mac(self.secret, key, value)):
            return True
        if mac is None and revision <= self._unmarked_until:
            return True
        records.refuse(key, revision, f"a raw entry naming {self.instance} that it did not acknowledge")
        return False

    async def _backpressure(self) -> None:
        # The watch waits while git is far behind, rather than holding any number of entries in memory;
        # it resumes from its revision, so nothing is lost by waiting.
        while len(self._pending) >= self.max_pending:
            self._drained.clear()
            await self._drained.wait()

    # -- committing -----------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        delay = RETRY_FIRST
        while True:
            if not self._pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_SAVE):  # not wait_for: it can swallow a cancel
                        await self._has_entries.wait()
            if self._pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.batch_seconds):
                        await self._batch_full.wait()
            try:
                await self._save_position()  # while a batch waits for git, the position still moves
                await self._flush()
                delay = RETRY_FIRST
            except Exception as exc:  # noqa: BLE001 - git, etcd, the database or a full disk: retry
                log.warning(
                    "raw listener: %d entries wait to be committed to %s, retrying in %g s: %s",
                    len(self._pending),
                    self.dataset,
                    delay,
                    getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _flush(self) -> None:
        async with self._flush_lock:
            batch = dict(self._pending)
            watermark = self._seen  # all of our entries up to here are in ``batch`` or done
            self._batch_full.clear()
            if batch:
                await self._commit(batch)
            self._done = max(self._done, watermark)
            for revision in batch:
                self._pending.pop(revision, None)
            await self._save_position(added=len(batch))
            if not self._pending:
                self._has_entries.clear()
            self._drained.set()

    async def _save_position(self, added: int = 0) -> None:
        """Save the revision before the oldest entry still waiting (or everything seen when none
        waits): a restart replays etcd's history from there, and replays are no-ops."""
        position = min(self._pending) - 1 if self._pending else self._seen
        if position > self._saved or added:
            await self.progress.put(self.dataset, position, added=added)
            self._saved = max(self._saved, position)

    async def _commit(self, batch: dict[int, tuple[str, dict[str, Any]]]) -> None:
        if self.pins is not None:
            # As this instance accepted it (pinned at the first batch): never a master swapped in since.
            dataset: Dataset | None = await self.pins.dataset(RAW_SCOPE, self.dataset)
        else:
            dataset = await self.registrations.dataset(self.dataset)  # etcd, or this instance's copy
        if dataset is None:
            raise NotFound(f"MAO_RAW_DATASET names dataset {self.dataset!r}, which is not registered")
        await self._register_branch(dataset)
        files = {
            f"{path}@{revision}.json": _file(path, revision, stored)
            for revision, (path, stored) in batch.items()
        }
        first, last = min(batch), max(batch)
        message = (
            f"gateway: {len(batch)} raw entries acknowledged by {self.instance} (revisions {first}-{last})"
        )
        trailers = {"MAO-Instance": self.instance, "MAO-Gateway-Entries": str(len(batch))}

        def write(repo: Any) -> tuple[str, bool]:
            # The vote fetches anyway (merge_and_push): fetch here only when there is nothing local
            # to build on yet, rather than twice per batch.
            if not repo.has_local_branch(self.branch):
                repo.sync()
                repo.ensure_ground_truth()
            return commit_files(repo, self.branch, files, message, trailers)

        commit, changed = await self.datasets.run(dataset.name, dataset.master, write)
        merge_message = (
            f"Merge {self.branch} into ground-truth ({len(batch)} raw entries, revisions {first}-{last})"
        )
        vote = await self.voting.vote(None, dataset, self.branch, commit, merge_message, trailers)
        if vote.conflicts:
            # Only a file written into the dataset by someone else under one of our names gets here.
            log.error(
                "raw listener: %s conflicts with ground-truth of %s in %s; the entries are committed on "
                "the branch, ground-truth is left alone",
                self.branch,
                dataset.name,
                ", ".join(vote.conflicts[:10]),
            )
        log.info(
            "raw listener: %d entries (revisions %d-%d) %s on %s, ground-truth %s",
            len(batch),
            first,
            last,
            "committed" if changed else "were committed already",
            self.branch,
            vote.state,
        )

    async def _register_branch(self, dataset: Dataset) -> None:
        """List ``raw-<instance>`` among the dataset's node branches (audits look there)."""
        if self._registered or self.branch in dataset.nodes:
            self._registered = True
            return
        try:
            await self.registry.add_node_branches(dataset.name, [self.branch])
            self._registered = True
        except EtcdUnavailable:
            pass  # the commit does not need it; registered at the next batch


def _file(path: str, revision: int, stored: dict[str, Any]) -> bytes:
    record = {"key": f"raw/{path}", "revision": revision, **without_mac(stored)}
    return (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode()
