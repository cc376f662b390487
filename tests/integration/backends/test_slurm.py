"""What only the Slurm backend does, against the private single-node Slurm of the session: the job it
submits (options, comment, private files), adoption by a new backend object, GPUs as generic
resources, Slurm's own memory kill, a node that fails under a running job, refusals at init, the
staged output's hygiene and masked log tails."""

from __future__ import annotations

import asyncio
import stat
from typing import Any

import pytest

from orchestrator.executors.seam import BackendRejected, EndKind, Limits
from orchestrator.executors.slurm import SlurmBackend
from orchestrator.executors.slurm_answers import labels_of
from orchestrator.executors.slurm_files import job_files
from tests import servers

from .conftest import Case
from .drivers import SlurmDriver
from .test_contract import LIMIT, nothing_left, read_log, sh, started


@pytest.fixture
def slurm_case(case: Case) -> Case:
    if case.kind != "slurm":
        pytest.skip("slurm only")
    return case


def driver_of(case: Case) -> SlurmDriver:
    assert isinstance(case.driver, SlurmDriver)
    return case.driver


def backend_of(case: Case) -> SlurmBackend:
    assert isinstance(case.backend, SlurmBackend)
    return case.backend


def job_fields(cluster: servers.SlurmCluster, job_id: str) -> dict[str, Any]:
    """``scontrol show job -o`` as a dict (values up to the next space; Comment is read apart)."""
    line = cluster.command("scontrol", "show", "job", "-o", job_id).stdout.strip()
    fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
    fields["Comment"] = line.split(" Comment=", 1)[1].split(" StdErr=", 1)[0] if " Comment=" in line else ""
    return fields


async def test_the_job_carries_the_identity_the_limits_and_no_secret(slurm_case: Case) -> None:
    cluster = driver_of(slurm_case).cluster
    spec = slurm_case.spec(
        sh("echo started; exec sleep 120"),
        env={"API_KEY": "hunter2-secret", "PLAIN": "v"},
        secrets=frozenset({"API_KEY"}),
        limits=Limits(memory=64 * 1024**2, cpus=1.5, pids=64),
        timeout=90,
    )
    handle = await slurm_case.backend.submit(spec)
    await started(slurm_case, handle)
    job = await asyncio.to_thread(job_fields, cluster, str(handle.engine_id))
    assert job["JobName"] == spec.name
    assert labels_of(job["Comment"]) == spec.all_labels()
    assert job["Requeue"] == "0"
    assert job["TimeLimit"] == "00:02:00"  # 90 s: two whole minutes, never less than the step's
    assert job["NumCPUs"] == "2"  # 1.5 CPUs: two for the job, 1.5 for the container
    assert job["MinMemoryNode"] == "192M"  # 64 MiB and the default overhead of 128 MiB
    assert job["Partition"] == cluster.partition
    # The secret is in no part of the job the cluster's users can read, only in the private env file.
    assert (
        "hunter2-secret" not in cluster.command("scontrol", "show", "job", "-o", str(handle.engine_id)).stdout
    )
    files = job_files(backend_of(slurm_case).settings.shared_root, spec.name)
    for path in (files.env, files.labels, files.out, files.err):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "API_KEY=hunter2-secret\n" in files.env.read_text()
    await slurm_case.backend.cancel(handle)
    await nothing_left(slurm_case)
    assert not any(path.exists() for path in (files.env, files.out, files.err))


async def test_a_new_backend_object_adopts_a_running_attempt(slurm_case: Case) -> None:
    """As after an orchestrator restart: the second object finds the job by listing, waits on its
    handle and gets its end, output and whole log; the job was submitted once."""
    expected = b"".join(b"tick %d\n" % i for i in range(1, 11))
    spec = slurm_case.spec(
        sh("for i in $(seq 1 10); do echo tick $i; sleep 0.2; done; echo done > /usr/src/app/data/r")
    )
    first = await slurm_case.backend.submit(spec)
    await slurm_case.backend.close()  # the old process is gone
    again = driver_of(slurm_case).make("contract")
    slurm_case.backend = again  # closed by the fixture
    await again.start()
    [found] = await again.list_managed(slurm_case.instance)
    assert found.handle == first and found.running
    assert await again.submit(spec) == first  # submitting again finds it
    end = await asyncio.wait_for(again.wait(found.handle, spec), LIMIT)
    assert end.kind is EndKind.COMPLETED, end
    assert end.engine_id == first.engine_id and end.node == driver_of(slurm_case).cluster.node
    assert end.queued_seconds is not None and end.run_seconds is not None
    assert (spec.output.folder / "r").read_text() == "done\n"
    assert await read_log(slurm_case, found.handle) == expected
    await again.cancel(found.handle)
    await nothing_left(slurm_case)


async def test_gpus_are_generic_resources(slurm_case: Case) -> None:
    capabilities = slurm_case.backend.capabilities()
    assert capabilities.gpus == servers.slurm.GPU_NODE_GPUS and "gpus" in capabilities.enforces
    too_many = slurm_case.spec(["true"], limits=Limits(gpus=servers.slurm.GPU_NODE_GPUS + 1))
    with pytest.raises(BackendRejected) as caught:
        await slurm_case.backend.validate(too_many)
    assert caught.value.field == "gpus" and "at most" not in caught.value.message
    assert f"no node of partition mao has more than {servers.slurm.GPU_NODE_GPUS}" in caught.value.message
    # One GPU: accepted; the only GPU node is down, so the job waits, and ends unschedulable.
    spec = slurm_case.spec(["true"], limits=Limits(gpus=1), start_timeout=2)
    handle = await slurm_case.backend.submit(spec)
    job = await asyncio.to_thread(job_fields, driver_of(slurm_case).cluster, str(handle.engine_id))
    assert "gres:gpu:1" in job["TresPerNode"]
    end = await asyncio.wait_for(slurm_case.backend.wait(handle, spec), LIMIT)
    assert end.kind is EndKind.UNSCHEDULABLE, end
    assert "ReqNodeNotAvail" in end.message
    await nothing_left(slurm_case)


async def test_slurms_own_memory_kill_is_oom_killed(slurm_case: Case) -> None:
    """The job asks Slurm for less memory than its own script and runtime client use (no overhead):
    Slurm's accounting kills the job (FAILED 0:9, JobLaunchFailure), which is an out-of-memory end."""
    backend = driver_of(slurm_case).make("tight", job_memory_overhead=0)
    await backend.start()
    try:
        spec = slurm_case.spec(sh("echo started; exec sleep 60"), limits=Limits(memory=8 * 1024**2))
        handle = await backend.submit(spec)
        end = await asyncio.wait_for(backend.wait(handle, spec), LIMIT)
        assert end.kind is EndKind.OOM_KILLED, end
        assert "--mem" in end.message
        await backend.cancel(handle)
    finally:
        await backend.close()
    # SIGKILL gave the job's script no chance to remove the container: a job on the node does.
    await asyncio.wait_for(gone(slurm_case), LIMIT)
    await nothing_left(slurm_case)


async def gone(case: Case) -> None:
    while await case.driver.leftovers(case.instance):
        await asyncio.sleep(0.25)


async def test_a_failed_node_is_node_lost(slurm_case: Case) -> None:
    cluster = driver_of(slurm_case).cluster
    spec = slurm_case.spec(sh("echo started; exec sleep 120"))
    handle = await slurm_case.backend.submit(spec)
    await started(slurm_case, handle)
    try:
        await asyncio.to_thread(
            cluster.command, "scontrol", "update", f"NodeName={cluster.node}", "State=DOWN", "Reason=mao-test"
        )
        end = await asyncio.wait_for(slurm_case.backend.wait(handle, spec), LIMIT)
    finally:
        await asyncio.to_thread(cluster.wait_node_idle)  # resumed: the next test has its node
    assert end.kind is EndKind.NODE_LOST and end.retryable, end
    assert "NODE_FAIL" in end.message
    await slurm_case.backend.cancel(handle)
    # The node came back: the job's script or the removal job MAO sent there removed the container.
    await asyncio.wait_for(gone(slurm_case), LIMIT)
    await nothing_left(slurm_case)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"placement": {"rack": "a"}}, "placement", "node features go in 'constraint'"),
        ({"placement": {"partition": "nope"}}, "placement", "no partition nope"),
        ({"placement": {"constraint": "a b"}}, "placement", "not a valid constraint"),
        ({"env": {"X": "two\nlines"}}, "env", "line break"),
        ({"limits": Limits(memory=64 * 1024**3)}, "memory", "no node of partition mao has more than"),
        ({"docker_socket": True}, "docker_socket", "never offered"),
    ],
)
async def test_what_cannot_run_is_refused_at_init(
    slurm_case: Case, fields: dict[str, Any], field: str, words: str
) -> None:
    spec = slurm_case.spec(["true"], **fields)
    with pytest.raises(BackendRejected) as caught:
        await slurm_case.backend.validate(spec)
    assert caught.value.field == field and words in caught.value.message, caught.value.message
    assert "backend 'contract', kind slurm" in caught.value.message


async def test_a_refused_output_fails_the_attempt_and_leaves_the_work_folder(slurm_case: Case) -> None:
    backend = SlurmBackend("limited", backend_of(slurm_case).settings, max_output_bytes=4096)
    await backend.start()
    try:
        spec = slurm_case.spec(sh("ln -s /etc/passwd /usr/src/app/data/passwd"))
        handle = await backend.submit(spec)
        end = await asyncio.wait_for(backend.wait(handle, spec), LIMIT)
        assert end.kind is EndKind.FAILED and end.exit_code == 0, end
        assert "symlinks pointing outside" in end.message
        assert sorted(p.name for p in spec.output.folder.iterdir()) == ["old.txt"]
        await backend.cancel(handle)
    finally:
        await backend.close()
    await nothing_left(slurm_case)


async def test_secrets_are_masked_in_the_log_tail(slurm_case: Case) -> None:
    spec = slurm_case.spec(
        sh('echo "key=$API_KEY"'), env={"API_KEY": "hunter2-secret"}, secrets=frozenset({"API_KEY"})
    )
    handle = await slurm_case.backend.submit(spec)
    end = await asyncio.wait_for(slurm_case.backend.wait(handle, spec), LIMIT)
    assert "hunter2-secret" not in end.log_tail and "key=***" in end.log_tail
    await slurm_case.backend.cancel(handle)


async def test_health_says_what_the_cluster_is(slurm_case: Case) -> None:
    health = await slurm_case.backend.health()
    assert health.ok, health
    assert health.details["partition"] == "mao" and health.details["nodes"] == "1 of 3 up"
    broken = driver_of(slurm_case).make("broken", partition="elsewhere")
    await broken.start()
    try:
        health = await broken.health()
        assert not health.ok and "no partition elsewhere" in health.message
    finally:
        await broken.close()
