"""Starting an audit, deciding it at its deadline, and reading its result.

``begin`` stores the audit's record (on its lease) and returns at once; every live instance answers
through its watch (``answering``), this one included. At the deadline the auditor reads the answers,
fetches the copies too large to travel inline from the dataset's master, checks each against its
SHA-256, scores them (``scoring.decide``), stores the result under ``/mao/v1/audit-results/<id>``
for 30 days and revokes the audit's lease, which removes the record and every answer. Instances
that did not answer by the deadline (down, or without a copy) are simply not candidates: nobody
waits for them. An auditor restarted before the deadline picks its audit up again from etcd.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ..datasets.files import path_problem, read_blob
from ..errors import BadRequest, EtcdUnavailable, MaoError, NotFound, PayloadTooLarge
from ..federation.etcd import Etcd
from ..federation.failover import LeaseNotFound
from ..federation.registry import Registry
from ..federation.seals import SEAL_FIELDS
from ..tasks import cancel_all, spawn
from .answering import AuditAnswerer
from .records import LEASE_MARGIN, MAX_WAIT, MIN_WAIT, AuditBook, deadline_of
from .scoring import Candidate, Scored, decide

if TYPE_CHECKING:
    from ..config import Settings
    from ..datasets import Datasets
    from ..merging.pins import Pins
    from ..store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_FETCH_BYTES = 64 * 1024 * 1024  # a copy larger than this is not scored (it would sit in memory)


class Audits:
    def __init__(
        self,
        settings: Settings,
        etcd: Etcd,
        registry: Registry,
        store: Store,
        datasets: Datasets,
        pins: Pins | None = None,
    ) -> None:
        self.instance = settings.instance_name
        self.book = AuditBook(etcd, getattr(registry, "sealer", None))
        self.registry = registry
        self.datasets = datasets
        self.pins = pins
        self.answerer = AuditAnswerer(settings, etcd, registry, store, datasets, self._own_audit, pins)
        self._deciding: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        await self.answerer.start()

    async def close(self) -> None:
        await self.answerer.close()
        await cancel_all(self._deciding.values())

    async def begin(self, dataset: str, file: str, wait: float) -> dict[str, Any]:
        if problem := path_problem(file):
            raise BadRequest(problem, code="invalid_file")
        if not MIN_WAIT <= wait <= MAX_WAIT:
            raise BadRequest(
                f"wait must be between {MIN_WAIT} and {MAX_WAIT} seconds", code="invalid_request"
            )
        if await self.registry.dataset(dataset) is None:
            raise NotFound(f"dataset {dataset!r} is not registered")
        now = datetime.now(UTC)
        audit_id = uuid.uuid4().hex
        record: dict[str, Any] = {
            "id": audit_id,
            "dataset": dataset,
            "file": file,
            "auditor": self.instance,
            "wait": wait,
            "deadline": (now + timedelta(seconds=wait)).isoformat(),
            "created_at": now.isoformat(),
        }
        lease = await self.book.create(record, ttl=math.ceil(wait) + LEASE_MARGIN)
        self._own_audit(audit_id, record, lease)
        log.info("audit %s of %s:%s started, decided at %s", audit_id, dataset, file, record["deadline"])
        return {**record, "status": "pending"}

    async def get(self, audit_id: str) -> dict[str, Any]:
        if (result := await self.book.result(audit_id)) is not None:
            return {**result, "status": "decided"}
        if (record := await self.book.record(audit_id)) is not None and isinstance(record.value, dict):
            answers = await self.book.answers(audit_id)
            shown = {k: v for k, v in record.value.items() if k not in SEAL_FIELDS}
            return {**shown, "status": "pending", "answers": len(answers)}
        raise NotFound(f"no audit {audit_id!r}: unknown, or its auditor died before the deadline")

    # -- deciding -------------------------------------------------------------------------------
    def _own_audit(self, audit_id: str, record: dict[str, Any], lease: int) -> None:
        """Decide ``record`` at its deadline (once; also called again by the watch). ``audit_id`` is
        the one of its key, and ``record`` passed ``records.record_problem``."""
        if audit_id in self._deciding:
            return
        task = spawn(self._decide(audit_id, record, lease), name=f"decide audit {audit_id}")
        self._deciding[audit_id] = task
        task.add_done_callback(lambda _: self._deciding.pop(audit_id, None))

    async def _decide(self, audit_id: str, record: dict[str, Any], lease: int) -> None:
        deadline = deadline_of(record)
        if deadline is None:
            log.warning("audit %s cannot be decided: its deadline is not a time with a zone", audit_id)
            return
        await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()))
        retry = _Retry(audit_id, gives_up=deadline + timedelta(seconds=LEASE_MARGIN))
        result_lease: int | None = None

        async def open_answers() -> list[dict[str, Any]] | None:
            current = await self.book.record(audit_id)
            if current is None or current.lease != lease:
                return None  # decided already (this is a record seen again), or its lease ran out
            return await self.book.answers(audit_id)

        async def store(result: dict[str, Any]) -> bool:
            nonlocal result_lease
            if result_lease is None:
                result_lease = await self.book.result_lease()
            try:
                return await self.book.store_result(audit_id, result, result_lease)
            except LeaseNotFound:  # gone with nothing on it (an etcd restored from a backup)
                result_lease = None
                raise

        try:
            answers = await retry(open_answers)
            if answers is None:
                return
            # Computed once and stored on one lease across retries: when a create landed but its
            # answer was lost, the retry writes the very same value on the same lease, which
            # Etcd.create recognises as its own earlier attempt; and no retry leaks a lease.
            # Sealed once, before any retry: a seal is a new signature each time it is made.
            result = self.book.seal(await retry(lambda: self._score(audit_id, record, answers)))
            stored = await retry(lambda: store(result))
        except _GaveUp as exc:
            log.error("audit %s could not be decided: %s", audit_id, exc)
            return
        if not stored:  # decided before (by this instance before a restart): clean up all the same
            log.info("audit %s was decided already; removing its record and answers", audit_id)
            if result_lease is not None:
                with contextlib.suppress(EtcdUnavailable):
                    await self.book.end(result_lease)  # holds nothing: the result there is another's
        with contextlib.suppress(EtcdUnavailable):
            await self.book.end(lease)
        if not stored:
            return
        winners = ", ".join(f"{w['instance']}/{w['branch']}" for w in result["winners"]) or "-"
        log.info(
            "audit %s of %s:%s decided: %s (winners %s; %d candidate(s), %d without a copy)",
            audit_id,
            record["dataset"],
            record["file"],
            result["outcome"],
            winners,
            len(result["candidates"]),
            len(result["absent"]),
        )

    async def _score(
        self, audit_id: str, record: dict[str, Any], answers: list[dict[str, Any]]
    ) -> dict[str, Any]:
        fetched = await self._fetch(record, [a for a in answers if isinstance(a.get("fetch"), dict)])
        # Hashing and scoring copies of up to MAX_FETCH_BYTES each: not on the event loop.
        return await asyncio.to_thread(_evaluate, audit_id, record, answers, fetched)

    async def _fetch(self, record: dict[str, Any], answers: list[dict[str, Any]]) -> dict[str, bytes | str]:
        """Copies too large for etcd, read from the dataset's master: {commit: content or why not}."""
        wanted = {}
        for answer in answers:
            commit = str(answer["fetch"].get("commit"))
            size = answer.get("size")
            if isinstance(size, int) and size > MAX_FETCH_BYTES:  # as reported; git checks the real one
                wanted[commit] = _too_large(size)
            else:
                wanted[commit] = ""
        if not wanted:
            return {}
        dataset = await self.registry.dataset(record["dataset"])
        if dataset is None:
            return dict.fromkeys(wanted, "could not be fetched: the dataset is no longer registered")
        # Only from a master this instance accepted (merging.pins), never one swapped in since.
        master = await self.pins.master(dataset.name) if self.pins is not None else dataset.master
        if master is None:
            return dict.fromkeys(
                wanted, "could not be fetched: this instance has not accepted a master for the dataset"
            )
        path = record["file"]

        def read(repo: Any) -> dict[str, bytes | str]:
            repo.sync()
            found: dict[str, bytes | str] = {}
            for commit, refused in wanted.items():
                content = None
                if not refused:
                    try:
                        content = read_blob(repo, commit, path, MAX_FETCH_BYTES)
                    except PayloadTooLarge as exc:
                        refused = _too_large(exc.extra["size"])
                    except MaoError as exc:  # a malformed commit in the answer, or git failed
                        refused = f"could not be read: {exc.message}"
                found[commit] = content if content is not None else (refused or "not found on the master")
            return found

        try:
            return await self.datasets.run(dataset.name, master, read)
        except MaoError as exc:
            return dict.fromkeys(wanted, f"could not be fetched from the master: {exc.message}")


class _GaveUp(Exception):
    pass


class _Retry:
    """Calls retried while etcd is unreachable (1 s doubling to 10 s), until the audit's lease ends."""

    FIRST_DELAY = 1.0

    def __init__(self, audit_id: str, gives_up: datetime) -> None:
        self.audit_id = audit_id
        self.gives_up = gives_up
        self.delay = self.FIRST_DELAY

    async def __call__(self, call: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                return await call()
            except EtcdUnavailable as exc:
                if datetime.now(UTC) >= self.gives_up:
                    raise _GaveUp(f"etcd stayed unreachable ({exc.message})") from exc
                log.debug("audit %s waits for etcd: %s", self.audit_id, exc.message)
                await asyncio.sleep(self.delay)
                self.delay = min(self.delay * 2, 10.0)


def _evaluate(
    audit_id: str, record: dict[str, Any], answers: list[dict[str, Any]], fetched: dict[str, bytes | str]
) -> dict[str, Any]:
    """The result: every copy checked against its SHA-256 and scored (blocking: run in a thread)."""
    candidates: list[Candidate] = []
    sizes: dict[tuple[str, str], int] = {}
    absent = []
    for answer in sorted(answers, key=lambda a: (str(a.get("instance")), str(a.get("branch")))):
        who = {"instance": answer.get("instance"), "branch": answer.get("branch")}
        content, reason = _content(answer, fetched)
        if content is not None and hashlib.sha256(content).hexdigest() != answer.get("sha256"):
            content, reason = None, "its content does not match its sha256"
        if content is None:
            absent.append({**who, "commit": answer.get("commit"), "reason": reason})
            continue
        candidate = Candidate(
            str(who["instance"]),
            str(who["branch"]),
            str(answer.get("commit")),
            str(answer["sha256"]),
            content,
        )
        candidates.append(candidate)
        sizes[(candidate.instance, candidate.branch)] = len(content)
    decision = decide(candidates)

    def shown(s: Scored) -> dict[str, Any]:
        c = s.candidate
        return {"instance": c.instance, "branch": c.branch, "commit": c.commit, "sha256": c.sha256}

    return {
        "id": audit_id,
        **{k: record.get(k) for k in ("dataset", "file", "auditor", "created_at", "deadline")},
        "outcome": decision.outcome,
        "winners": [shown(s) for s in decision.winners],
        "drawn": [shown(s) for s in decision.drawn],
        "candidates": [
            {
                **shown(s),
                "size": sizes[(s.candidate.instance, s.candidate.branch)],
                "entries": s.entries,
                "strangeness": s.strangeness,
            }
            for s in decision.scored
        ],
        "absent": absent,
        "decided_at": datetime.now(UTC).isoformat(),
    }


def _too_large(size: int) -> str:
    return f"too large to audit ({size} bytes, at most {MAX_FETCH_BYTES})"


def _content(answer: dict[str, Any], fetched: dict[str, bytes | str]) -> tuple[bytes | None, str]:
    """(content, "") for a usable answer, else (None, why not)."""
    if answer.get("missing"):
        return None, "its branch has no such file"
    if answer.get("error"):
        return None, f"it could not read its copy: {answer['error']}"
    if isinstance(answer.get("content"), str):
        return answer["content"].encode("utf-8"), ""
    if isinstance(answer.get("content_base64"), str):
        try:
            return base64.b64decode(answer["content_base64"], validate=True), ""
        except ValueError:
            return None, "its inline content is not valid base64"
    if isinstance(answer.get("fetch"), dict):
        got = fetched.get(str(answer["fetch"].get("commit")))
        if isinstance(got, bytes):
            return got, ""
        return None, f"its copy {got or 'could not be fetched'}"
    return None, "its answer holds no copy"
