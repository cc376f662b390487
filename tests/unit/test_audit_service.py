"""Audits on a fake etcd and a real local git repository: fetching large copies, deciding, cleaning up."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.audit import answering as answering_module
from orchestrator.audit import service as service_module
from orchestrator.audit.answering import AuditAnswerer
from orchestrator.audit.records import audit_id_of, deadline_of
from orchestrator.audit.service import Audits
from orchestrator.datasets import DatasetRepo, RepoSettings, init_bare
from orchestrator.datasets.files import commit_files
from orchestrator.domain.pipeline import Dataset, Pipeline
from orchestrator.errors import EtcdUnavailable
from orchestrator.federation import keys
from orchestrator.federation.answers import KeyValue
from orchestrator.federation.failover import LeaseNotFound

AUDIT_ID = "a" * 32


class FakeEtcd:
    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}  # key -> (value as stored, lease)
        self.leases: dict[int, int] = {}  # live leases: id -> ttl
        self.granted = 0
        self.fail: Callable[[str], bool] = lambda operation: False

    def _check(self, operation: str) -> None:
        if self.fail(operation):
            raise EtcdUnavailable(f"etcd is unreachable ({operation})")

    async def grant_lease(self, ttl: int) -> int:
        self._check("grant_lease")
        self.granted += 1
        self.leases[self.granted] = ttl
        return self.granted

    async def revoke_lease(self, lease: int) -> None:
        self._check("revoke_lease")
        self.leases.pop(lease, None)
        self.data = {k: v for k, v in self.data.items() if v[1] != lease}

    async def create(self, key: str, value: Any, lease: int | None = None) -> bool:
        self._check("create")
        if lease and lease not in self.leases:
            raise LeaseNotFound("etcdserver: requested lease not found")
        encoded = json.dumps(value, sort_keys=True).encode()
        if key in self.data:
            return bool(lease) and self.data[key] == (encoded, lease)  # our own earlier attempt
        self.data[key] = (encoded, lease or 0)
        if self.fail("create answer"):  # written, but the answer is lost
            raise EtcdUnavailable("etcd is unreachable (the answer was lost)")
        return True

    async def get(self, key: str) -> KeyValue | None:
        self._check("get")
        if key not in self.data:
            return None
        encoded, lease = self.data[key]
        return KeyValue(key, json.loads(encoded), 1, 1, lease)

    async def list_prefix(self, prefix: str, limit: int = 0) -> list[KeyValue]:
        self._check("list_prefix")
        found = [kv for key in sorted(self.data) if key.startswith(prefix) and (kv := await self.get(key))]
        return found[:limit] if limit else found


class FakeRegistry:
    def __init__(self, dataset: Dataset) -> None:
        self.datasets = {dataset.name: dataset}

    async def dataset(self, name: str) -> Dataset | None:
        return self.datasets.get(name)


class FakeDatasets:
    def __init__(self, repo: DatasetRepo) -> None:
        self.repo = repo

    async def run(self, name: str, master: str, fn: Callable[[DatasetRepo], Any]) -> Any:
        return fn(self.repo)


@pytest.fixture
def repo(tmp_path: Path) -> DatasetRepo:
    master, _ = init_bare(tmp_path / "masters", "ds")
    repo = DatasetRepo(
        tmp_path / "node1",
        "ds",
        str(master),
        RepoSettings(git_name="Node 1", git_email="n1@example.org"),
    )
    repo.sync()
    repo.ensure_ground_truth()
    return repo


@pytest.fixture
def etcd() -> FakeEtcd:
    return FakeEtcd()


@pytest.fixture
def audits(repo: DatasetRepo, etcd: FakeEtcd) -> Audits:
    settings = SimpleNamespace(instance_name="node1", raw_dataset=None)
    dataset = Dataset(name="ds", master=repo.master)
    return Audits(settings, etcd, FakeRegistry(dataset), None, FakeDatasets(repo))  # type: ignore[arg-type]


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def record(**changes: Any) -> dict[str, Any]:
    return {
        "id": AUDIT_ID,
        "dataset": "ds",
        "file": "f.txt",
        "auditor": "node1",
        "wait": 5,
        "deadline": "2000-01-01T00:00:00+00:00",
        "created_at": "2000-01-01T00:00:00+00:00",
        **changes,
    }


async def test_fetched_copies_are_checked_against_their_real_size_and_bad_commits_are_absent(
    audits: Audits, repo: DatasetRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "MAX_FETCH_BYTES", 50)
    small, big = b"1\n2\n3\n", b"x\n" * 40  # 80 bytes: over the (patched) limit
    commit_small, _ = commit_files(repo, "crawl-b", {"f.txt": small}, "small", {})
    commit_big, _ = commit_files(repo, "crawl-c", {"f.txt": big}, "big", {})

    def fetch(instance: str, commit: Any, content: bytes, size: Any) -> dict[str, Any]:
        return {
            "instance": instance,
            "branch": f"crawl-{instance}",
            "commit": commit,
            "sha256": sha(content),
            "size": size,
            "fetch": {"commit": commit, "path": "f.txt"},
        }

    answers = [
        fetch("a", "not-a-commit", small, 6),  # read_file used to raise ValueError: the decision died
        fetch("b", commit_small, small, "six"),  # a size that is not a number is no reason to die
        fetch("c", commit_big, big, 10),  # it lies about its size: git's is the one that counts
        fetch("d", None, small, 6),
        {"instance": "e", "branch": "crawl-e", "commit": commit_small, "sha256": sha(small), "content": "1\n2\n3\n"},
    ]
    result = await audits._score(AUDIT_ID, record(), answers)
    assert [c["instance"] for c in result["candidates"]] == ["b", "e"]
    reasons = {a["instance"]: a["reason"] for a in result["absent"]}
    assert reasons["a"].startswith("its copy could not be read: commit must be a commit id")
    assert reasons["c"] == "its copy too large to audit (80 bytes, at most 50)"
    assert reasons["d"].startswith("its copy could not be read: commit must be a commit id")
    assert result["outcome"] == "joint_winners"


async def test_copies_are_hashed_and_scored_off_the_event_loop(
    audits: Audits, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = []
    real_decide = service_module.decide

    def decide(candidates: Any) -> Any:
        threads.append(threading.get_ident())
        return real_decide(candidates)

    monkeypatch.setattr(service_module, "decide", decide)
    content = b"1\n2\n"
    answer = {"instance": "b", "branch": "crawl-b", "commit": "c" * 40, "sha256": sha(content), "content": "1\n2\n"}
    result = await audits._score(AUDIT_ID, record(), [answer])
    assert result["outcome"] == "winner" and threads and threads[0] != threading.get_ident()


def test_answers_live_apart_from_the_records_every_instance_watches() -> None:
    answer = keys.audit_answer(AUDIT_ID, "node1", "crawl-node1")
    assert answer.startswith(keys.audit_answers(AUDIT_ID)) and not answer.startswith(keys.AUDITS)
    assert audit_id_of(keys.audit(AUDIT_ID)) == AUDIT_ID and audit_id_of(answer) is None


async def started(audits: Audits, etcd: FakeEtcd, **changes: Any) -> tuple[dict[str, Any], int]:
    """An audit whose deadline has just passed, answered inline by two instances."""
    now = datetime.now(UTC)
    audit = record(deadline=(now - timedelta(seconds=1)).isoformat(), **changes)
    lease = await audits.book.create(audit, ttl=65)
    for instance in ("b", "c"):
        answer = {"instance": instance, "branch": f"crawl-{instance}", "commit": "c" * 40}
        answer.update({"sha256": sha(b"1\n2\n"), "content": "1\n2\n"})
        assert await audits.book.answer(AUDIT_ID, answer, lease)
    return audit, lease


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module._Retry, "FIRST_DELAY", 0.01)


@pytest.mark.usefixtures("quick_retries")
async def test_a_store_whose_answer_was_lost_counts_and_the_audit_is_cleaned_up(
    audits: Audits, etcd: FakeEtcd
) -> None:
    audit, lease = await started(audits, etcd)
    lost = iter([True])
    etcd.fail = lambda operation: operation == "create answer" and next(lost, False)
    await audits._decide(AUDIT_ID, audit, lease)
    assert etcd.granted == 2  # the audit's lease and one for the result, whatever the retries
    assert list(etcd.data) == [keys.audit_result(AUDIT_ID)]  # the record and answers are gone
    assert list(etcd.leases) == [etcd.data[keys.audit_result(AUDIT_ID)][1]]
    assert (await audits.get(AUDIT_ID))["outcome"] == "joint_winners"


@pytest.mark.usefixtures("quick_retries")
async def test_retries_reuse_one_result_lease(audits: Audits, etcd: FakeEtcd) -> None:
    audit, lease = await started(audits, etcd)
    failures = iter([True, True, True])
    etcd.fail = lambda operation: operation in ("create", "grant_lease") and next(failures, False)
    await audits._decide(AUDIT_ID, audit, lease)
    assert etcd.granted == 2 and len(etcd.leases) == 1  # nothing leaked
    assert (await audits.get(AUDIT_ID))["status"] == "decided"


@pytest.mark.usefixtures("quick_retries")
async def test_an_audit_decided_before_a_restart_is_still_cleaned_up(audits: Audits, etcd: FakeEtcd) -> None:
    audit, lease = await started(audits, etcd)
    earlier = {"id": AUDIT_ID, "outcome": "draw"}
    result_lease = await etcd.grant_lease(30)
    assert await etcd.create(keys.audit_result(AUDIT_ID), earlier, lease=result_lease)
    await audits._decide(AUDIT_ID, audit, lease)
    assert list(etcd.data) == [keys.audit_result(AUDIT_ID)] and (await audits.book.result(AUDIT_ID)) == earlier
    assert list(etcd.leases) == [result_lease]  # the audit's lease and the unused result lease revoked


@pytest.mark.usefixtures("quick_retries")
async def test_a_result_lease_lost_before_the_store_is_replaced(audits: Audits, etcd: FakeEtcd) -> None:
    audit, lease = await started(audits, etcd)
    real_grant = etcd.grant_lease

    async def grant_and_lose(ttl: int) -> int:
        granted = await real_grant(ttl)
        if granted == 2:
            etcd.leases.pop(granted)  # e.g. etcd restored from a backup meanwhile
        return granted

    etcd.grant_lease = grant_and_lose  # type: ignore[method-assign]
    await audits._decide(AUDIT_ID, audit, lease)
    assert etcd.data[keys.audit_result(AUDIT_ID)][1] == 3 and list(etcd.leases) == [3]


PIPELINE = Pipeline.model_validate(
    {
        "name": "p",
        "steps": [
            {"name": "crawl", "tool": "t", "output_dataset": "ds"},
            {"name": "scan", "tool": "t", "output_dataset": "ds"},
        ],
    }
)


class FakeStore:
    async def list_pipelines(self) -> list[Pipeline]:
        return [PIPELINE]


class CountingDatasets(FakeDatasets):
    def __init__(self, repo: DatasetRepo) -> None:
        super().__init__(repo)
        self.runs = 0

    async def run(self, name: str, master: str, fn: Callable[[DatasetRepo], Any]) -> Any:
        self.runs += 1
        return await super().run(name, master, fn)


@pytest.fixture
def answerer(repo: DatasetRepo, etcd: FakeEtcd, monkeypatch: pytest.MonkeyPatch) -> AuditAnswerer:
    monkeypatch.setattr(answering_module, "RETRY_FIRST", 0.01)
    for branch in ("crawl-node1", "scan-node1"):
        commit_files(repo, branch, {"f.txt": f"{branch}\n".encode()}, branch, {})
        repo.push_branch(branch)
    dataset = Dataset(name="ds", master=repo.master, nodes=["crawl-node1", "scan-node1"])
    settings = SimpleNamespace(instance_name="node1", raw_dataset=None)
    return AuditAnswerer(
        settings,  # type: ignore[arg-type]
        etcd,  # type: ignore[arg-type]
        FakeRegistry(dataset),  # type: ignore[arg-type]
        FakeStore(),  # type: ignore[arg-type]
        CountingDatasets(repo),  # type: ignore[arg-type]
        lambda *_: None,
    )


async def test_a_failure_half_way_answers_the_other_branches_when_tried_again(
    answerer: AuditAnswerer, etcd: FakeEtcd
) -> None:
    audit = record(deadline=(datetime.now(UTC) + timedelta(seconds=30)).isoformat())
    lease = await answerer.book.etcd.grant_lease(90)
    creates = 0

    def second_create_fails(operation: str) -> bool:
        nonlocal creates
        creates += operation == "create"
        return operation == "create" and creates == 2

    etcd.fail = second_create_fails
    await answerer._answer(AUDIT_ID, audit, lease)
    answers = await answerer.book.answers(AUDIT_ID)
    assert sorted(a["branch"] for a in answers) == ["crawl-node1", "scan-node1"]
    assert all(a["content"] == f"{a['branch']}\n" for a in answers)

    # Seen again (a restart): everything is answered, nothing is read again.
    datasets = answerer.datasets
    assert isinstance(datasets, CountingDatasets)
    runs = datasets.runs
    await answerer._answer(AUDIT_ID, audit, lease)
    assert datasets.runs == runs and len(await answerer.book.answers(AUDIT_ID)) == 2


async def test_bad_records_are_skipped_without_raising_and_identity_comes_from_the_key(
    answerer: AuditAnswerer, etcd: FakeEtcd, caplog: pytest.LogCaptureFixture
) -> None:
    own: list[tuple[str, str, int]] = []
    answerer.on_own_audit = lambda audit_id, record, lease: own.append((audit_id, record["id"], lease))
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    bad = {
        "naive deadline": record(deadline=datetime.now().isoformat()),  # noqa: DTZ005 - the point
        "no deadline": {k: v for k, v in record(deadline=soon).items() if k != "deadline"},
        "invalid deadline": record(deadline="tomorrow"),
        "number deadline": record(deadline=17),
        "not an object": ["a", "list"],
        "bad file": record(deadline=soon, file="../etc/passwd"),
        "bad dataset": record(deadline=soon, dataset={"name": "ds"}),
        "bad auditor": record(deadline=soon, auditor=None),
    }
    listed = [KeyValue(keys.audit(f"{n:032x}"), value, 1, 1, 7) for n, value in enumerate(bad.values())]
    listed.append(KeyValue(keys.audit(f"{99:032x}"), record(deadline=soon), 1, 1, 0))  # on no lease
    # Then a good one whose fields claim another id: the key's is the one that counts.
    listed.append(KeyValue(keys.audit(AUDIT_ID), record(deadline=soon, id="b" * 32), 1, 1, 7))
    await answerer._on_list(listed, 10)
    assert own == [(AUDIT_ID, "b" * 32, 7)]
    assert list(answerer._handled) == [AUDIT_ID]
    ignored = [r.getMessage() for r in caplog.records if "ignoring its record" in r.getMessage()]
    assert len(ignored) == len(bad) + 1
    await answerer.close()


def test_a_deadline_without_a_zone_or_none_at_all_is_over() -> None:
    assert answering_module._over(None)
    assert answering_module._over(deadline_of(record(deadline="2000-01-01T00:00:00+00:00")))
    assert not answering_module._over(deadline_of(record(deadline="2999-01-01T00:00:00+00:00")))
    for deadline in ("2999-01-01T00:00:00", "", None, 5, "not a date"):
        assert deadline_of(record(deadline=deadline)) is None


async def test_the_result_is_named_by_the_key_not_by_the_record(audits: Audits) -> None:
    answer = {"instance": "b", "branch": "crawl-b", "commit": "c" * 40, "sha256": sha(b"x"), "content": "x"}
    result = await audits._score(AUDIT_ID, record(id="b" * 32), [answer])
    assert result["id"] == AUDIT_ID


@pytest.mark.usefixtures("quick_retries")
async def test_etcd_away_while_the_large_copies_are_looked_up_is_waited_for(
    audits: Audits, etcd: FakeEtcd
) -> None:
    audit, lease = await started(audits, etcd)
    fetch = {"instance": "d", "branch": "crawl-d", "commit": "d" * 40, "sha256": "0" * 64, "size": 70_000}
    assert await audits.book.answer(AUDIT_ID, {**fetch, "fetch": {"commit": "d" * 40, "path": "f.txt"}}, lease)
    registry = audits.registry
    assert isinstance(registry, FakeRegistry)
    real_dataset, outages = registry.dataset, iter([True, True])

    async def dataset(name: str) -> Dataset | None:
        if next(outages, False):
            raise EtcdUnavailable("etcd is unreachable")
        return await real_dataset(name)

    registry.dataset = dataset  # type: ignore[method-assign]
    await audits._decide(AUDIT_ID, audit, lease)
    result = await audits.get(AUDIT_ID)
    assert result["status"] == "decided" and [a["instance"] for a in result["absent"]] == ["d"]
