"""What only the swarm backend does: the no-new-privileges rule, adoption by a new backend object (an
orchestrator restart), the staged output's hygiene, a finished job's containers after `service rm`
(moby#42789), and the session fixture's sharing of the engine."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from orchestrator.executors.seam import BackendRejected, EndKind, Limits
from orchestrator.executors.swarm import SwarmBackend
from orchestrator.executors.swarm_watch import ENDED
from tests import servers

from .conftest import Case
from .drivers import SwarmDriver
from .test_contract import LIMIT, OUT_OF_MEMORY, nothing_left, read_log, sh
from .test_contract import run as run_attempt


@pytest.fixture
def swarm_case(case: Case) -> Case:
    if case.kind != "swarm":
        pytest.skip("swarm only")
    return case


async def test_steps_are_refused_unless_the_daemon_enforces_no_new_privileges(swarm_case: Case) -> None:
    driver = swarm_case.driver
    assert isinstance(driver, SwarmDriver)
    strict = driver.make("strict", accept_without_no_new_privileges=False)
    await strict.start()
    try:
        if "no_new_privileges" in strict.capabilities().enforces:
            pytest.skip("this engine runs with --no-new-privileges")
        with pytest.raises(BackendRejected) as caught:
            await strict.validate(swarm_case.spec(["true"]))
        assert caught.value.field == "backend"
        assert "--no-new-privileges" in caught.value.message
        assert "MAO_BACKEND_STRICT_ACCEPT_WITHOUT_NO_NEW_PRIVILEGES=1" in caught.value.message
        health = await strict.health()
        assert not health.ok and "no-new-privileges" in health.message
        assert health.details["no_new_privileges"] == "NOT enforced: steps are refused"
    finally:
        await strict.close()
    accepted = await swarm_case.backend.health()
    assert accepted.ok, accepted
    assert accepted.details["no_new_privileges"].startswith("NOT enforced; accepted by MAO_BACKEND_CONTRACT_")
    assert any("NOT enforced" in note for note in swarm_case.backend.capabilities().notes)


async def test_a_new_backend_object_adopts_a_running_attempt(swarm_case: Case) -> None:
    """As after an orchestrator restart: the second object finds the attempt by listing, waits on its
    handle and gets its end, output and whole log; the attempt was submitted once."""
    expected = b"".join(b"tick %d\n" % i for i in range(1, 11))
    spec = swarm_case.spec(
        sh("for i in $(seq 1 10); do echo tick $i; sleep 0.1; done; echo done > /usr/src/app/data/r")
    )
    await swarm_case.backend.submit(spec)
    await swarm_case.backend.close()  # the old process is gone
    assert isinstance(swarm_case.driver, SwarmDriver)
    again = swarm_case.driver.make("contract")
    swarm_case.backend = again  # closed by the fixture
    await again.start()
    [found] = await again.list_managed(swarm_case.instance)
    assert found.handle.name == spec.name and found.running
    assert await again.submit(spec) == found.handle  # submitting again finds it
    end = await asyncio.wait_for(again.wait(found.handle, spec), LIMIT)
    assert end.kind is EndKind.COMPLETED, end
    assert end.queued_seconds is not None and end.run_seconds is not None
    assert (spec.output.folder / "r").read_text() == "done\n"
    assert await read_log(swarm_case, found.handle) == expected
    assert len(await again.list_managed(swarm_case.instance)) == 1


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("ln -s /etc/passwd /usr/src/app/data/passwd", "symlinks pointing outside"),
        ("ln -s ../../.. /usr/src/app/data/up", "symlinks pointing outside"),
        ("head -c 5000 /dev/zero > /usr/src/app/data/big", "more than MAO_STEP_MAX_OUTPUT=4096"),
    ],
)
async def test_a_refused_output_fails_the_attempt_and_leaves_the_work_folder(
    swarm_case: Case, script: str, why: str
) -> None:
    assert isinstance(swarm_case.driver, SwarmDriver)
    backend = SwarmBackend(
        "limited",
        swarm_case.backend.settings,
        max_output_bytes=4096,  # type: ignore[attr-defined]
    )
    await backend.start()
    try:
        spec = swarm_case.spec(sh(script))
        handle = await backend.submit(spec)
        end = await asyncio.wait_for(backend.wait(handle, spec), LIMIT)
        assert end.kind is EndKind.FAILED and end.exit_code == 0, end
        assert why in end.message
        assert sorted(p.name for p in spec.output.folder.iterdir()) == ["old.txt"]
        assert not backend.staging.paths(spec.name).folder.exists()
        await backend.cancel(handle)
    finally:
        await backend.close()


async def test_secrets_are_masked_in_the_log_tail(swarm_case: Case) -> None:
    spec = swarm_case.spec(
        sh('echo "key=$API_KEY"'), env={"API_KEY": "hunter2-secret"}, secrets=frozenset({"API_KEY"})
    )
    handle = await swarm_case.backend.submit(spec)
    end = await asyncio.wait_for(swarm_case.backend.wait(handle, spec), LIMIT)
    assert "hunter2-secret" not in end.log_tail and "key=***" in end.log_tail


async def test_containers_a_removed_job_left_are_listed_and_removed(swarm_case: Case) -> None:
    spec = swarm_case.spec(["true"])
    handle = await swarm_case.backend.submit(spec)
    await asyncio.wait_for(swarm_case.backend.wait(handle, spec), LIMIT)
    await swarm_case.driver.remove_from_outside(handle)  # docker service rm keeps the exited container

    async def leftover() -> list[str]:
        while not (left := await swarm_case.driver.leftovers(swarm_case.instance)):
            await asyncio.sleep(0.1)
        return left

    left = await asyncio.wait_for(leftover(), 10)
    assert left and left[0].startswith(spec.name + ".")
    [managed] = await swarm_case.backend.list_managed(swarm_case.instance)
    assert managed.handle.name == spec.name and not managed.running
    await swarm_case.backend.cancel(managed.handle)
    await nothing_left(swarm_case)


async def test_an_oom_the_engine_did_not_flag_is_found_in_its_events(
    swarm_case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker 20.10 sets State.OOMKilled only when containerd reports the OOM before the exit; under
    load the exit sometimes comes first and the flag stays false. That race, made certain: the
    container's inspection loses its flag, and the end is still ``oom_killed`` (from the engine's
    ``oom`` event)."""
    objects = swarm_case.backend._objects  # type: ignore[attr-defined]
    inspect = objects.container

    async def unflagged(container_id: str | None):
        found = await inspect(container_id)
        if found is not None:
            assert found["State"].pop("OOMKilled", None) is not None  # the field this test takes away
        return found

    monkeypatch.setattr(objects, "container", unflagged)
    _, end = await run_attempt(swarm_case, sh(OUT_OF_MEMORY), limits=Limits(memory=16 * 1024**2))
    assert end.kind is EndKind.OOM_KILLED, end
    assert end.exit_code == 137


async def test_an_exit_137_without_an_oom_is_a_failure(swarm_case: Case) -> None:
    _, end = await run_attempt(swarm_case, sh("exit 137"), limits=Limits(memory=64 * 1024**2))
    assert end.kind is EndKind.FAILED, end
    assert end.exit_code == 137 and "no out-of-memory kill" in end.message


def test_another_holder_leaves_the_swarm_in_place(swarm: servers.SwarmHold, docker_engine) -> None:
    hold = servers.acquire_swarm()
    assert hold.created == swarm.created
    servers.release_swarm(hold)
    assert docker_engine.info()["Swarm"]["LocalNodeState"] == "active"


def test_unique_names_per_instance(swarm_case: Case) -> None:
    first = swarm_case.spec(["true"])
    other = first.identity.model_copy(update={"instance": "x" + secrets.token_hex(3)})
    assert first.name != other.object_name()
    assert (
        Path(swarm_case.backend.staging.paths(first.name).folder).parent
        == swarm_case.backend.settings.shared_root
    )  # type: ignore[attr-defined]


async def test_an_unschedulable_attempt_never_runs_later(swarm_case: Case, docker_engine) -> None:
    """Removing a job's service does not stop a pending task on Docker 20.10 (moby#44312): it would run
    the day a node matches. The backend tells the job to run nothing first; a node given the label
    afterwards runs nothing of it."""
    value = secrets.token_hex(4)
    _, end = await run_attempt(swarm_case, ["true"], placement={"mao.test.later": value}, start_timeout=1)
    assert end.kind is EndKind.UNSCHEDULABLE
    node_id = await asyncio.to_thread(lambda: docker_engine.info()["Swarm"]["NodeID"])

    def label(add: bool) -> None:
        node = docker_engine.nodes.get(node_id)
        labels = dict(node.attrs["Spec"].get("Labels") or {})
        if add:
            labels["mao.test.later"] = value
        else:
            labels.pop("mao.test.later", None)
        node.update({**node.attrs["Spec"], "Labels": labels})

    await asyncio.to_thread(label, True)
    try:
        await asyncio.sleep(3)
        assert await swarm_case.driver.leftovers(swarm_case.instance) == []
        tasks = await asyncio.to_thread(
            docker_engine.api.tasks, filters={"label": f"mao.instance={swarm_case.instance}"}
        )
        assert [t["Status"]["State"] for t in tasks if t["Status"]["State"] not in ENDED] == []
    finally:
        await asyncio.to_thread(label, False)


async def test_a_service_of_the_same_name_that_is_another_attempt_s_is_not_taken_for_it(
    swarm_case: Case, docker_engine
) -> None:
    spec = swarm_case.spec(["true"])
    labels = {**spec.identity.labels(), "mao.run": "someone-else"}

    def create() -> None:
        from docker.types import ServiceMode

        docker_engine.services.create(
            swarm_case.image_id, ["true"], name=spec.name, labels=labels, mode=ServiceMode("replicated-job")
        )

    await asyncio.to_thread(create)
    with pytest.raises(BackendRejected, match="is another's"):
        await swarm_case.backend.submit(spec)


async def test_gpus_are_a_reserved_generic_resource(swarm_case: Case, docker_engine) -> None:
    """This engine's node announces no generic resources; the operator states one GPU (``GPUS``). A
    step asking for two is refused; one asking for one becomes a service reserving one
    ``NVIDIA-GPU``, which Swarm cannot place: ``unschedulable`` after its start_timeout."""
    driver = swarm_case.driver
    assert isinstance(driver, SwarmDriver)
    assert swarm_case.backend.capabilities().gpus == 0  # the nodes' word: none announced
    backend = driver.make("gpus", gpus=1)
    await backend.start()
    try:
        assert backend.capabilities().gpus == 1 and "gpus" in backend.capabilities().enforces
        with pytest.raises(BackendRejected) as caught:
            await backend.validate(swarm_case.spec(["true"], limits=Limits(gpus=2)))
        assert caught.value.field == "gpus" and "MAO_BACKEND_GPUS_GPUS" in caught.value.message
        spec = swarm_case.spec(["true"], limits=Limits(memory=64 * 1024**2, gpus=1), start_timeout=3)
        handle = await backend.submit(spec)
        service = await asyncio.to_thread(docker_engine.services.get, spec.name)
        reserved = service.attrs["Spec"]["TaskTemplate"]["Resources"]["Reservations"]
        assert reserved["GenericResources"] == [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 1}}]
        end = await asyncio.wait_for(backend.wait(handle, spec), LIMIT)
        assert end.kind is EndKind.UNSCHEDULABLE and "insufficient resources" in end.message, end
        await backend.cancel(handle)
    finally:
        await backend.close()
    await nothing_left(swarm_case)
