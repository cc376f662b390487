"""What only the Kubernetes backend does, against the fake API (tests/servers/kube_fake.py) whose pods
run for real in the machine's Docker engine: the fetch data mode end to end (a failed tool uploads
nothing, a refused upload commits nothing, the tool never holds a ticket, private values travel in a
Secret), every failure the fake can inject (kubelet eviction, a failed stage-in, the Job's deadline
while the orchestrator was away, dropped log streams and watches, expired resource versions),
adoption by a new backend object, and GPUs refused where the cluster has none."""

from __future__ import annotations

import asyncio
import base64

import pytest

from orchestrator.executors.kube_pod import STAGE_OUT
from orchestrator.executors.seam import BackendRejected, EndKind, Limits

from .conftest import Case
from .drivers import KubeFakeDriver
from .test_contract import LIMIT, SLEEP, nothing_left, read_log, sh, started

# Only the fake's case: the other kinds' fixtures are not even started.
pytestmark = pytest.mark.parametrize("case", ["kubernetes"], indirect=True)


@pytest.fixture
def kube(case: Case) -> Case:
    assert isinstance(case.driver, KubeFakeDriver)
    return case


def fake_call(case: Case, method: str, path: str, body: dict | None = None, *, token: bool = True) -> dict:
    driver = case.driver
    assert isinstance(driver, KubeFakeDriver)
    return driver.fake.call(method, path, body, token=token)


def pods_of(case: Case, job: str) -> list[dict]:
    driver = case.driver
    assert isinstance(driver, KubeFakeDriver)
    return fake_call(case, "GET", f"/api/v1/namespaces/{driver.namespace}/pods?labelSelector=job-name={job}")["items"]


async def test_a_failed_tool_uploads_nothing(kube: Case) -> None:
    spec = kube.spec(sh("echo new > /usr/src/app/data/new.txt; exit 3"))
    handle = await kube.backend.submit(spec)
    end = await asyncio.wait_for(kube.backend.wait(handle, spec), LIMIT)
    assert (end.kind, end.exit_code) == (EndKind.FAILED, 3)
    [pod] = pods_of(kube, spec.name)
    stage_out = next(s for s in pod["status"]["containerStatuses"] if s["name"] == STAGE_OUT)
    assert "terminated" not in stage_out["state"] and "running" not in stage_out["state"]  # never started
    assert sorted(p.name for p in spec.output.folder.iterdir()) == ["old.txt"]
    await kube.backend.cancel(handle)
    await nothing_left(kube)


async def test_a_refused_upload_commits_nothing(kube: Case) -> None:
    spec = kube.spec(sh("ln -s /etc/passwd /usr/src/app/data/escape; echo new > /usr/src/app/data/new.txt"))
    handle = await kube.backend.submit(spec)
    end = await asyncio.wait_for(kube.backend.wait(handle, spec), LIMIT)
    assert end.kind is EndKind.FAILED and end.exit_code == 0, end
    assert "refused" in end.message and "escape" in end.message, end.message
    assert sorted(p.name for p in spec.output.folder.iterdir()) == ["old.txt"]
    await kube.backend.cancel(handle)
    await nothing_left(kube)


async def test_the_tool_never_holds_a_ticket_and_gets_its_private_values(kube: Case) -> None:
    driver = kube.driver
    assert isinstance(driver, KubeFakeDriver)
    script = "ls /mao 2>&1; env | grep -i -e token -e ticket; echo private=$PRIVATE; sleep 2"
    spec = kube.spec(sh(script), env={"PRIVATE": "hunter2-value", "PUBLIC": "p"}, secrets=frozenset({"PRIVATE"}))
    handle = await kube.backend.submit(spec)
    secret = fake_call(kube, "GET", f"/api/v1/namespaces/{driver.namespace}/secrets")["items"]
    mine = next(s for s in secret if s["metadata"]["name"] == spec.name)
    tokens = [base64.b64decode(mine["data"][key]).decode() for key in ("input", "output")]
    job = fake_call(kube, "GET", f"/apis/batch/v1/namespaces/{driver.namespace}/jobs/{spec.name}")
    assert "hunter2-value" not in str(job) and not any(token in str(job) for token in tokens)
    end = await asyncio.wait_for(kube.backend.wait(handle, spec), LIMIT)
    assert end.kind is EndKind.COMPLETED, end
    log = (await read_log(kube, handle)).decode()
    assert "private=hunter2-value" in log  # the tool has it (its own output is masked by the engine)
    assert "private=***" in end.log_tail and "hunter2" not in end.log_tail
    assert "No such file or directory" in log and not any(token in log for token in tokens)
    await kube.backend.cancel(handle)


async def test_a_kubelet_eviction_is_node_lost(kube: Case) -> None:
    driver = kube.driver
    assert isinstance(driver, KubeFakeDriver)
    spec = kube.spec(sh("echo started; exec sleep 120"))
    handle = await kube.backend.submit(spec)
    await started(kube, handle)
    [pod] = pods_of(kube, spec.name)
    fake_call(kube, "POST", f"/fake/evict/{driver.namespace}/{pod['metadata']['name']}", {}, token=False)
    end = await asyncio.wait_for(kube.backend.wait(handle, spec), LIMIT)
    assert end.kind is EndKind.NODE_LOST and end.retryable and "Evicted" in end.message, end
    await nothing_left(kube)


async def test_the_eviction_api_is_node_lost(kube: Case) -> None:
    driver = kube.driver
    assert isinstance(driver, KubeFakeDriver)
    spec = kube.spec(sh("echo started; exec sleep 120"))
    handle = await kube.backend.submit(spec)
    await started(kube, handle)
    [pod] = pods_of(kube, spec.name)
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod["metadata"]["name"]}}
    fake_call(kube, "POST", f"/api/v1/namespaces/{driver.namespace}/pods/{pod['metadata']['name']}/eviction", body)
    end = await asyncio.wait_for(kube.backend.wait(handle, spec), LIMIT)
    assert end.kind is EndKind.NODE_LOST and end.retryable, end
    await nothing_left(kube)


async def test_a_failed_stage_in_is_lost_with_its_message(kube: Case) -> None:
    driver = kube.driver
    assert isinstance(driver, KubeFakeDriver)
    # Nothing listens there, and the stage-in waits no time for it to answer.
    unreachable = driver.make("nostaging", staging_url="http://127.0.0.1:9", staging_wait=0)
    await unreachable.start()
    try:
        spec = kube.spec(["true"])
        handle = await unreachable.submit(spec)
        end = await asyncio.wait_for(unreachable.wait(handle, spec), LIMIT)
        assert end.kind is EndKind.LOST and end.retryable, end
        assert "stage-in failed" in end.message and "wget" in end.message, end.message
        assert await driver.leftovers(kube.instance) == []
    finally:
        await unreachable.close()


async def test_the_jobs_deadline_while_the_orchestrator_was_away_is_timed_out(kube: Case) -> None:
    driver = kube.driver
    assert isinstance(driver, KubeFakeDriver)
    short = driver.make("short", stage_seconds=1)
    await short.start()
    spec = kube.spec(["sleep", "120"], timeout=1, start_timeout=1)
    handle = await short.submit(spec)
    await short.close()  # the orchestrator is gone; the Job's deadline (1 + 1 + 1 s) still holds
    await asyncio.sleep(5)
    again = driver.make("short", stage_seconds=1)
    await again.start()
    try:
        end = await asyncio.wait_for(again.wait(handle, spec), LIMIT)
        assert end.kind is EndKind.TIMED_OUT and "DeadlineExceeded" in end.message, end
        await nothing_left(kube)
    finally:
        await again.close()


async def test_dropped_log_streams_and_watches_lose_nothing(kube: Case) -> None:
    expected = b"".join(b"line %d\n" % i for i in range(1, 61))
    spec = kube.spec(sh("for i in $(seq 1 60); do echo line $i; sleep 0.03; done"))
    fake_call(kube, "POST", "/fake/config", {"drop_logs_after": 4, "drop_logs_times": 5}, token=False)
    try:
        handle = await kube.backend.submit(spec)
        await started(kube, handle, b"line 1\n")
        fake_call(kube, "POST", "/fake/drop-watches", {}, token=False)
        await asyncio.sleep(0.3)
        fake_call(kube, "POST", "/fake/compact", {}, token=False)  # the next watch gets 410 Gone: list again
        end = await asyncio.wait_for(kube.backend.wait(handle, spec), LIMIT)
    finally:
        fake_call(kube, "POST", "/fake/config", {"drop_logs_after": None}, token=False)
    assert end.kind is EndKind.COMPLETED, end
    assert await read_log(kube, handle) == expected
    assert await read_log(kube, handle, since=100) == expected[100:]
    await kube.backend.cancel(handle)


async def test_a_new_backend_object_adopts_a_running_attempt(kube: Case) -> None:
    """As after an orchestrator restart (SIGKILL included): the new object finds the Job by listing,
    waits on its handle, gets its end, its output and its whole log; the Job was submitted once."""
    driver = kube.driver
    assert isinstance(driver, KubeFakeDriver)
    expected = b"".join(b"tick %d\n" % i for i in range(1, 21))
    spec = kube.spec(sh("for i in $(seq 1 20); do echo tick $i; sleep 0.1; done; echo done > /usr/src/app/data/r"))
    first = await kube.backend.submit(spec)
    await started(kube, first, b"tick 2\n")
    await kube.backend.close()
    kube.backend = driver.make("contract")
    await kube.backend.start()
    [found] = await kube.backend.list_managed(kube.instance)
    assert found.handle.name == spec.name and found.running and found.handle.engine_id == first.engine_id
    end = await asyncio.wait_for(kube.backend.wait(found.handle, spec), LIMIT)
    assert end.kind is EndKind.COMPLETED, end
    assert await read_log(kube, found.handle) == expected
    assert (spec.output.folder / "r").read_text() == "done\n"
    assert len(pods_of(kube, spec.name)) == 1
    await kube.backend.cancel(found.handle)
    await nothing_left(kube)


async def test_gpus_are_refused_where_the_cluster_has_none(kube: Case) -> None:
    spec = kube.spec(["true"], limits=Limits(gpus=1))
    with pytest.raises(BackendRejected) as caught:
        await kube.backend.validate(spec)
    assert caught.value.field == "gpus" and "nvidia.com/gpu" in caught.value.message
    assert kube.backend.capabilities().gpus == 0
    health = await kube.backend.health()
    assert health.ok and health.details["gpus"] == "0" and health.details["server"].endswith("mao-fake")


async def test_a_gpu_pod_asks_the_scheduler_for_its_gpus(kube: Case) -> None:
    """The operator states two GPUs (``GPUS``: as where the account may not list nodes); the fake's
    node has none, so the pod, whose tool container asks ``nvidia.com/gpu: 1``, is never scheduled
    and the attempt ends ``unschedulable`` after its start_timeout; three GPUs are refused at init."""
    driver = kube.driver
    assert isinstance(driver, KubeFakeDriver)
    backend = driver.make("gpus", gpus=2)
    await backend.start()
    try:
        assert backend.capabilities().gpus == 2 and "gpus" in backend.capabilities().enforces
        with pytest.raises(BackendRejected) as caught:
            await backend.validate(kube.spec(["true"], limits=Limits(gpus=3)))
        assert caught.value.field == "gpus" and "more than 2" in caught.value.message
        spec = kube.spec(["true"], limits=Limits(memory=64 * 1024**2, gpus=1), start_timeout=3)
        handle = await backend.submit(spec)
        (pod,) = pods_of(kube, spec.name)
        every = [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]
        tool = next(c for c in every if c["name"] == "tool")
        assert tool["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert tool["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert all("nvidia.com/gpu" not in c["resources"]["limits"] for c in every if c is not tool)
        end = await asyncio.wait_for(backend.wait(handle, spec), LIMIT)
        assert end.kind is EndKind.UNSCHEDULABLE and "Insufficient nvidia.com/gpu" in end.message, end
        await backend.cancel(handle)
    finally:
        await backend.close()
    await nothing_left(kube)


async def test_a_job_of_the_same_name_but_another_attempt_is_not_taken(kube: Case) -> None:
    """Object names hold a prefix of the run id: two runs alike in their first 12 characters meet."""
    first = kube.spec(SLEEP, run="runprefix0000aaaa")
    other = kube.spec(SLEEP, run="runprefix0000bbbb")
    assert first.name == other.name
    handle = await kube.backend.submit(first)
    with pytest.raises(BackendRejected, match="another's"):
        await kube.backend.submit(other)
    await kube.backend.cancel(handle)
    await nothing_left(kube)
