"""Every live instance answers each audit once, with its own copies of the audited file.

An instance watches ``/mao/v1/audits/`` (list-then-watch). For each audit it has not answered, it
looks for its node branches of the audited dataset: the branches its own pipelines' steps write
(``<step>-<instance>``) and, for the raw dataset, ``raw-<instance>``, as far as they are listed in
the dataset's ``nodes``. It fetches the dataset's master and answers, per branch, with the file as
pushed there: inline up to 64 KiB, otherwise by commit and path (the auditor fetches it from the
master). A branch without the file answers ``missing``; an instance without a branch answers
nothing. Answers ride on the audit's lease and are compare-and-create per branch, so a restart
never answers twice, and an attempt that failed half-way (etcd away) answers the other branches
when it is tried again, until the deadline. The auditor's own instance also learns here of the audits it has to decide.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..datasets.files import pushed_tip, read_file
from ..domain.pipeline import Dataset, node_branch
from ..errors import EtcdUnavailable, MaoError
from ..federation import keys
from ..federation.answers import KeyValue, WatchEvent
from ..federation.etcd import Etcd
from ..federation.failover import LeaseNotFound
from ..federation.registry import Registry
from ..federation.watch import PrefixWatch
from ..tasks import cancel_all, spawn
from .records import INLINE_LIMIT, LEASE_MARGIN, AuditBook, audit_id_of, deadline_of, record_problem

if TYPE_CHECKING:
    from ..config import Settings
    from ..datasets import Datasets
    from ..merging.pins import Pins
    from ..store import Store

log = logging.getLogger(__name__)

OwnAudit = Callable[[str, dict[str, Any], int], None]  # (audit id, record, lease)
RETRY_FIRST, RETRY_MAX = 1.0, 10.0


class AuditAnswerer:
    def __init__(
        self,
        settings: Settings,
        etcd: Etcd,
        registry: Registry,
        store: Store,
        datasets: Datasets,
        on_own_audit: OwnAudit,
        pins: Pins | None = None,
    ) -> None:
        self.instance = settings.instance_name
        self.raw_dataset = settings.raw_dataset
        self.etcd = etcd
        self.pins = pins
        self.book = AuditBook(etcd, getattr(registry, "sealer", None))
        self.registry = registry
        self.store = store
        self.datasets = datasets
        self.on_own_audit = on_own_audit
        self._handled: dict[str, datetime] = {}  # audit id -> its deadline (to forget it after)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        watch = PrefixWatch(
            self.etcd, keys.AUDITS, on_list=self._on_list, on_event=self._on_event, what="audit answers"
        )
        self._spawn(watch.run(), "audit watch")

    async def close(self) -> None:
        await cancel_all(self._tasks)

    async def _on_list(self, values: list[KeyValue], _revision: int) -> None:
        for kv in values:
            self._consider_safely(kv.key, kv.value, kv.lease)

    async def _on_event(self, event: WatchEvent) -> None:
        if event.kind == "PUT":
            self._consider_safely(event.key, event.value, event.lease)

    def _consider_safely(self, key: str, record: Any, lease: int) -> None:
        # The watch is shared by every audit: one bad record must not stall it, nor the records after
        # it in a listing.
        try:
            self._consider(key, record, lease)
        except Exception:  # noqa: BLE001 - whatever a record holds, the next one is still considered
            log.exception("audit watch: skipping %s", key[:200])

    def _consider(self, key: str, record: Any, lease: int) -> None:
        audit_id = audit_id_of(key)  # its identity comes from its key, never from its fields
        if audit_id is None or audit_id in self._handled:
            return
        if problem := record_problem(record, lease):
            log.warning("audit %s: ignoring its record: %s", audit_id, problem)
            return
        if not self.book.sealed_by(key, 0, record, record.get("auditor")):
            return  # a record its auditor did not write: never decided, never answered
        deadline = deadline_of(record)
        assert deadline is not None  # checked by record_problem
        if _over(deadline):  # an old record seen again (a watch resumed in its past): it is gone
            return
        self._forget_old()
        self._handled[audit_id] = deadline
        if record["auditor"] == self.instance:
            self.on_own_audit(audit_id, record, lease)
        self._spawn(self._answer(audit_id, record, lease), f"answer audit {audit_id}")

    def _forget_old(self) -> None:
        for audit_id in [i for i, deadline in self._handled.items() if _over(deadline)]:
            del self._handled[audit_id]

    async def _answer(self, audit_id: str, record: dict[str, Any], lease: int) -> None:
        """Answer for every branch not answered yet; while etcd is unreachable, try again until the
        deadline (an answer after it is of no use)."""
        deadline = deadline_of(record)
        delay = RETRY_FIRST
        while True:
            try:
                await self._answer_rest(audit_id, record, lease)
                return
            except LeaseNotFound:
                log.info("audit %s not answered: it is over (its lease has ended)", audit_id)
                return
            except EtcdUnavailable as exc:
                if deadline is None or datetime.now(UTC) + timedelta(seconds=delay) >= deadline:
                    log.warning("audit %s not answered by its deadline: %s", audit_id, exc.message)
                    self._handled.pop(audit_id, None)  # seen again (a re-listed watch): try again
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            except MaoError as exc:
                log.warning("audit %s not answered: %s", audit_id, exc.message)
                self._handled.pop(audit_id, None)
                return

    async def _answer_rest(self, audit_id: str, record: dict[str, Any], lease: int) -> None:
        path = record["file"]
        dataset = await self.registry.dataset(record["dataset"])
        branches = await self._own_branches(dataset) if dataset else []
        if not branches or dataset is None:
            log.debug(
                "audit %s: no node branch of %s here, nothing to answer", audit_id, record.get("dataset")
            )
            return
        # Each answer is compare-and-create per instance and branch: after a failure half-way (or a
        # restart), only the branches not answered yet are read and answered.
        answered = await self.book.answered(audit_id, self.instance)
        rest = [branch for branch in branches if branch not in answered]
        if not rest:
            return
        answers = await self._read_copies(dataset, rest, path)
        for answer in answers:
            await self.book.answer(audit_id, answer, lease)
        log.info(
            "audit %s of %s:%s answered from %s",
            audit_id,
            dataset.name,
            path,
            ", ".join(f"{a['branch']} ({_what(a)})" for a in answers),
        )

    async def _own_branches(self, dataset: Dataset) -> list[str]:
        mine = {
            node_branch(step.name, self.instance)
            for pipeline in await self.store.list_pipelines()
            for step in pipeline.steps
            if step.output_dataset == dataset.name
        }
        if self.raw_dataset == dataset.name:
            mine.add(node_branch("raw", self.instance))
        return sorted(branch for branch in mine if branch in dataset.nodes)

    async def _read_copies(self, dataset: Dataset, branches: list[str], path: str) -> list[dict[str, Any]]:
        # Only from a master this instance accepted (merging.pins): the one its pipelines push to.
        master = await self.pins.master(dataset.name) if self.pins is not None else dataset.master
        if master is None:
            reason = "this instance has not accepted a master for the dataset"
            return [{"instance": self.instance, "branch": b, "error": reason} for b in branches]

        def read(repo: Any) -> list[dict[str, Any]]:
            repo.sync()
            answers = []
            for branch in branches:
                base = {"instance": self.instance, "branch": branch}
                tip = pushed_tip(repo, branch)
                copy = read_file(repo, tip, path, INLINE_LIMIT) if tip else None
                if tip is None or copy is None:
                    answers.append({**base, "commit": tip, "missing": True})
                    continue
                answer: dict[str, Any] = {**base, "commit": tip, "sha256": copy.sha256, "size": copy.size}
                if copy.content is None:
                    answer["fetch"] = {"commit": tip, "path": path}
                else:
                    answer.update(_inline(copy.content))
                answers.append(answer)
            return answers

        try:
            return await self.datasets.run(dataset.name, master, read)
        except MaoError as exc:  # the master is unreachable: say so rather than stay silent
            return [{"instance": self.instance, "branch": b, "error": exc.message[:500]} for b in branches]

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        spawn(coroutine, name, self._tasks)


def _over(deadline: datetime | None) -> bool:
    """Whether the audit's lease has surely ended (then its record is gone, whatever a watch says);
    a record without a usable deadline (missing, invalid, no time zone) counts as over."""
    return deadline is None or datetime.now(UTC) > deadline + timedelta(seconds=LEASE_MARGIN)


def _inline(content: bytes) -> dict[str, str]:
    try:
        return {"content": content.decode("utf-8")}
    except UnicodeDecodeError:
        return {"content_base64": base64.b64encode(content).decode()}


def _what(answer: dict[str, Any]) -> str:
    if answer.get("missing"):
        return "no such file"
    if answer.get("error"):
        return "error"
    return "fetch" if "fetch" in answer else "inline"
