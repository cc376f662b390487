"""The seam's contract as a node keeps it (orchestrator/executors/seam.py), through the orchestrator's
API, for every backend in ``BACKENDS``: real orchestrator, real engine, real git. The backend-level
suite (the seam's methods called directly) is tests/integration/backends/; this one checks what a
user of MAO sees when a step runs on a backend: exit codes, an out-of-memory kill, timeout, stall,
cancel leaving nothing on the engine, SIGKILL of the orchestrator mid-attempt then restart
(adopted, not submitted again, its result and log recorded, the run going on to success), the
orphan sweep, following a live log, masked secrets, an unprivileged tool, a read-only input and an
output committed with its provenance.

Adding a backend is one entry in ``BACKENDS`` (node_backends.py): how to configure a node for it
(``MAO_BACKENDS`` and its settings) and how to see its objects from outside MAO.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from orchestrator.config import load_settings
from orchestrator.executors.registry import build
from orchestrator.executors.seam import ContainerSpec, Identity, OutputData
from tests import gitutil, servers
from tests.api import Api, assert_error, unique
from tests.integration.conftest import Node, orchestrator_env
from tests.integration.node_backends import BACKENDS, BackendUnderTest

APP = "/usr/src/app"
ENDED = ("succeeded", "failed", "cancelled")


@dataclass
class Contract:
    backend: BackendUnderTest
    node: Node
    request: pytest.FixtureRequest
    output: str = ""  # the dataset of the last ``one_step``

    @property
    def api(self) -> Api:
        return self.node.api

    def step(self, name: str, tool: str, output: str, script: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name, "tool": tool, "output_dataset": output, "cmd": ["sh", "-c", script],
            "backend": self.backend.name, **extra,
        }  # fmt: skip

    def pipeline(self, steps: list[dict[str, Any]]) -> str:
        name = unique("contract")
        self.api.ok(self.api.post("/pipeline/init", {"name": name, "steps": steps}))
        return name

    def one_step(self, script: str, **extra: Any) -> tuple[str, str]:
        """A pipeline of one step ``only`` writing a new dataset; (pipeline, its repository)."""
        tool, out = unique("tool"), unique("out")
        self.api.tool(tool)
        repo = self.api.local_dataset(out)
        self.output = out
        return self.pipeline([self.step("only", tool, out, script, **extra)]), repo

    def the_object(self, run_id: str) -> str:
        """The name of the run's attempt object, once the engine has it (the attempt is ``running``
        before its submission: wait for the object itself)."""
        return servers.wait_until(lambda: self.backend.the_objects(run_id), timeout=60, what="the object")[0]

    def tool_folder(self, dataset: str, step: str, run_id: str) -> Path:
        """The folder the running tool of ``step`` writes, where a test may drop a file it waits for."""
        return self.backend.tool_folder(self.node, dataset, step, self.the_object(run_id))

    def wait(self, run_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api.ok(self.api.get(f"/runs/{run_id}"))
            if run["status"] in ENDED:
                return run
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} did not end within {timeout} s")

    def running_attempt(self, run_id: str, step: str = "only") -> dict[str, Any]:
        def look() -> dict[str, Any] | None:
            run = self.api.ok(self.api.get(f"/runs/{run_id}"))
            found = next(s for s in run["steps"] if s["name"] == step)
            return next((a for a in found["attempts"] if a["status"] == "running"), None)

        return servers.wait_until(look, timeout=120, what=f"a running attempt of {step}")

    def log(self, run_id: str, step: str = "only") -> str:
        response = self.api.get(f"/runs/{run_id}/log", step=step)
        assert response.status_code == 200, response.text
        return response.text


@pytest.fixture(scope="module", params=BACKENDS, ids=[b.name for b in BACKENDS])
def contract(request: pytest.FixtureRequest, servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Contract]:
    backend: BackendUnderTest = request.param
    name = unique(f"contract-{backend.name}")
    data_dir = servers_tmp / name
    settings = backend.settings(request, servers_tmp / f"{name}-engine")
    env = orchestrator_env(name, data_dir, etcd.endpoint, executor, **settings)
    node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), data_dir)
    yield Contract(backend, node, request)
    node.service.stop()


def test_the_node_lists_the_backend_and_its_health(contract: Contract) -> None:
    listed = {b["name"]: b for b in contract.api.ok(contract.api.get("/backends"))}
    mine = listed[contract.backend.name]
    assert mine["health"]["ok"] is True and mine["running"] == 0
    assert "memory" in mine["capabilities"]["enforces"]
    health = contract.api.ok(contract.api.get("/health"))
    assert health["backends"][contract.backend.name]["ok"] is True


@pytest.mark.parametrize(("code", "status"), [(0, "succeeded"), (3, "failed")])
def test_exit_codes(contract: Contract, code: int, status: str) -> None:
    pipeline, _ = contract.one_step(f"echo out; echo err >&2; exit {code}")
    run = contract.api.run(pipeline)
    (attempt,) = run["steps"][0]["attempts"]
    assert (run["status"], attempt["status"], attempt["exit_code"]) == (status, status, code), run
    assert attempt["backend"] == contract.backend.name and attempt["node"]
    assert attempt["queued_seconds"] is not None and attempt["queued_seconds"] >= 0
    assert "out" in run["steps"][0]["log_tail"] and "err" in run["steps"][0]["log_tail"]
    if code:
        assert f"exited with code {code}" in run["error"]
    # Removed once its log is kept, off the step's path.
    servers.wait_until(lambda: contract.backend.objects(run["id"]) == [], timeout=30, what="no object left")


def test_an_out_of_memory_kill(contract: Contract) -> None:
    script = "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"
    pipeline, _ = contract.one_step(script, memory="16m")
    run = contract.api.run(pipeline)
    (attempt,) = run["steps"][0]["attempts"]
    assert attempt["status"] == "oom_killed" and "memory limit of 16 MiB" in attempt["error"], run


def test_a_timeout_ends_the_attempt_and_removes_its_object(contract: Contract) -> None:
    pipeline, _ = contract.one_step("echo on; sleep 300", timeout=2)
    run = contract.api.run(pipeline)
    (attempt,) = run["steps"][0]["attempts"]
    assert attempt["status"] == "timed_out" and "timed out after 2 s" in run["error"], run
    servers.wait_until(lambda: contract.backend.objects(run["id"]) == [], timeout=30, what="no object left")


def test_a_silent_attempt_stalls(contract: Contract) -> None:
    pipeline, _ = contract.one_step("echo hello; sleep 300", stall_timeout=2, retries=1, retry_delay=0.1)
    run = contract.api.run(pipeline)
    assert [a["status"] for a in run["steps"][0]["attempts"]] == ["stalled", "stalled"], run
    assert "no output for 2 s" in run["error"]
    log = contract.log(run["id"])
    assert log == "hello\n", log


def test_cancel_leaves_nothing_on_the_engine(contract: Contract) -> None:
    pipeline, repo = contract.one_step(f"echo started; echo x > {APP}/data/x; sleep 300")
    before = gitutil.tip(repo, "ground-truth")
    run_id = contract.api.run(pipeline, wait=False)["id"]
    contract.running_attempt(run_id)
    contract.the_object(run_id)
    assert contract.api.post(f"/runs/{run_id}/cancel").status_code == 202
    # The node removed them before it answered, waiting a bounded time for the engine to confirm
    # (a loaded swarm confirms a service's removal later: seen once in a full suite at load 9).
    servers.wait_until(lambda: contract.backend.objects(run_id) == [], timeout=60, what="nothing left")
    run = contract.wait(run_id)
    assert run["status"] == "cancelled" and run["steps"][0]["attempts"][0]["status"] == "cancelled"
    assert gitutil.tip(repo, "ground-truth") == before


def test_a_live_log_is_followed_as_it_comes(contract: Contract) -> None:
    script = f"echo first; while [ ! -e {APP}/data/go ]; do sleep 0.1; done; echo second"
    pipeline, _ = contract.one_step(script)
    run_id = contract.api.run(pipeline, wait=False)["id"]
    contract.running_attempt(run_id)
    got: list[str] = []
    done = threading.Event()

    def follow() -> None:
        with contract.api.session.get(
            f"{contract.api.url}/runs/{run_id}/log", params={"step": "only", "follow": "1"}, stream=True, timeout=120
        ) as response:
            for line in response.iter_lines(decode_unicode=True):
                got.append(line)
        done.set()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        servers.wait_until(lambda: got == ["first"], timeout=60, what="the first line while the step runs")
    except TimeoutError as exc:  # say what the follower had: nothing, more, or an ended stream
        raise AssertionError(f"{exc}: the follower got {got!r}, its stream ended: {done.is_set()}") from exc
    assert not done.is_set()
    (contract.tool_folder(contract.output, "only", run_id) / "go").touch()
    assert done.wait(120) and got == ["first", "second"], got
    assert contract.wait(run_id)["status"] == "succeeded"


def test_secrets_are_masked_in_the_log_and_its_tail(contract: Contract) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex[:12]
    tool, out = unique("tool"), unique("out")
    contract.api.tool(tool)
    contract.api.local_dataset(out)
    step = contract.step(
        "only", tool, out, 'echo "key=$API_KEY"; printf "%s" "$API_KEY" | head -c 5; echo; echo "again $API_KEY"',
        env={"API_KEY": "{{ MAO_PRIVATE_VARIABLE }}"}, private_env={"API_KEY": secret},
    )  # fmt: skip
    run = contract.api.run(contract.pipeline([step]))
    assert run["status"] == "succeeded", run
    log = contract.log(run["id"])
    assert secret not in log and secret not in run["steps"][0]["log_tail"]
    assert "key=***" in log and "again ***" in log


def test_the_tool_is_unprivileged(contract: Contract) -> None:
    pipeline, _ = contract.one_step("id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    run = contract.api.run(pipeline)
    assert run["status"] == "succeeded", run
    log = contract.log(run["id"])
    uid = int(log.splitlines()[0])
    assert uid != 0 and uid == (os.getuid() or 65534)
    assert "CapEff:\t0000000000000000" in log
    listed = {b["name"]: b for b in contract.api.ok(contract.api.get("/backends"))}
    if "no_new_privileges" in listed[contract.backend.name]["capabilities"]["enforces"]:
        assert "NoNewPrivs:\t1" in log


def test_the_input_is_read_only_and_the_output_is_committed_with_its_provenance(contract: Contract) -> None:
    tool, raw, out = unique("tool"), unique("raw"), unique("out")
    contract.api.tool(tool)
    contract.api.local_dataset(raw)
    repo = contract.api.local_dataset(out)
    steps = [
        contract.step("make", tool, raw, f"echo input > {APP}/data/in.txt"),
        contract.step(
            "use", tool, out,
            f"(echo changed > {APP}/input/in.txt) 2>/dev/null && echo input-written || echo input-read-only; "
            f"cp {APP}/input/in.txt {APP}/data/copy.txt",
            input_dataset=raw,
        ),
    ]  # fmt: skip
    run = contract.api.run(contract.pipeline(steps))
    assert run["status"] == "succeeded", run
    assert "input-read-only" in contract.log(run["id"], "use")
    assert gitutil.show(repo, "ground-truth", "copy.txt") == "input\n"
    use = run["steps"][1]
    trailers = gitutil.trailers(repo, use["output_commit"])
    assert trailers["MAO-Run"] == run["id"] and trailers["MAO-Step"] == "use"
    assert trailers["MAO-Tool-Image"].startswith("sha256:") and trailers["MAO-Tool-Image"] == use["image_id"]
    assert trailers["MAO-Input-Commit"] == use["input_commit"]


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_sigkill_mid_attempt_then_restart_adopts_it_and_the_run_goes_on(contract: Contract, how: str) -> None:
    """SIGKILL, and a graceful stop alike: the attempt's object outlives the orchestrator."""
    tool, out = unique("tool"), unique("out")
    contract.api.tool(tool)
    repo = contract.api.local_dataset(out)
    gate = f"echo started; while [ ! -e {APP}/data/go ]; do sleep 0.1; done; echo finished; echo 1 > {APP}/data/one"
    steps = [contract.step("one", tool, out, gate), contract.step("two", tool, out, f"echo 2 > {APP}/data/two")]
    run_id = contract.api.run(contract.pipeline(steps), wait=False)["id"]
    contract.running_attempt(run_id, "one")
    name = contract.the_object(run_id)
    before = contract.backend.engine_id(name)
    if how == "kill":
        contract.node.service.kill()
    else:
        contract.node.service.stop()
    contract.node.service.process.start()
    contract.node.service.wait_ready()
    # Adopted, never submitted again: the same object goes on.
    assert contract.backend.engine_id(name) == before
    (contract.tool_folder(out, "one", run_id) / "go").touch()
    run = contract.wait(run_id)
    assert run["status"] == "succeeded", run
    one, two = run["steps"]
    assert [(a["attempt"], a["status"]) for a in one["attempts"]] == [(1, "succeeded")]
    assert contract.log(run_id, "one") == "started\nfinished\n"
    assert two["status"] == "succeeded"
    assert gitutil.show(repo, "ground-truth", "one") == "1\n" and gitutil.show(repo, "ground-truth", "two") == "2\n"
    servers.wait_until(lambda: contract.backend.objects(run_id) == [], timeout=60, what="no object left")


def test_an_object_removed_from_outside_is_a_lost_node_and_retried(contract: Contract) -> None:
    script = 'echo "attempt $MAO_ATTEMPT"; [ "$MAO_ATTEMPT" -ge 2 ] || sleep 300'
    pipeline, _ = contract.one_step(script, retries=1, retry_delay=0.1)
    run_id = contract.api.run(pipeline, wait=False)["id"]
    contract.running_attempt(run_id)
    name = contract.the_object(run_id)
    contract.backend.remove_from_outside(name)
    run = contract.wait(run_id)
    assert run["status"] == "succeeded", run
    first, second = run["steps"][0]["attempts"]
    assert (first["status"], second["status"]) == ("node_lost", "succeeded"), run
    assert "lost its node" in first["error"]


def test_the_sweep_removes_orphans_at_start(contract: Contract) -> None:
    """An object of this instance that no run here watches (a run that ended, or never existed here)
    is removed when the node starts, and every ``SWEEP_INTERVAL`` after."""
    settings = load_settings(contract.node.service.env)
    backend = build(next(b for b in settings.backends if b.name == contract.backend.name), settings)
    orphan_run = uuid.uuid4().hex
    folder = contract.node.data_dir / "orphan"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o777)
    spec = ContainerSpec(
        identity=Identity(
            instance=contract.node.name, pipeline="gone", run=orphan_run, step="s", position=0, attempt=1
        ),
        image="busybox:latest",
        cmd=["sleep", "300"],
        output=OutputData(folder=folder),
        user=(os.getuid() or 65534, os.getgid() or 65534),
        timeout=600,
    )

    async def submit() -> None:
        await backend.start()
        try:
            await backend.submit(spec)
        finally:
            await backend.close()

    asyncio.run(submit())
    assert contract.backend.objects(orphan_run) != []
    contract.node.service.stop()
    contract.node.service.process.start()
    contract.node.service.wait_ready()
    servers.wait_until(lambda: contract.backend.objects(orphan_run) == [], timeout=60, what="the orphan to go")


def test_a_field_the_backend_cannot_enforce_and_an_unknown_backend_are_400(contract: Contract) -> None:
    tool, out = unique("tool"), unique("out")
    contract.api.tool(tool)
    contract.api.local_dataset(out)
    listed = {b["name"]: b for b in contract.api.ok(contract.api.get("/backends"))}
    enforced = set(listed[contract.backend.name]["capabilities"]["enforces"])
    if "placement" not in enforced:
        body = {"name": unique("p"), "steps": [contract.step("s", tool, out, "true", placement={"labels": {"gpu": "yes"}})]}
        error = assert_error(contract.api.post("/pipeline/init", body), 400, "backend_cannot_enforce")
        assert error["field"] == "placement" and error["backend"] == contract.backend.name
        assert "placement" in error["message"] and contract.backend.name in error["message"]
    body = {"name": unique("p"), "steps": [{**contract.step("s", tool, out, "true"), "backend": "nowhere"}]}
    error = assert_error(contract.api.post("/pipeline/init", body), 400, "unknown_backend")
    assert "nowhere" in error["message"]
    assert_error(contract.api.get(f"/registry/pipelines/{body['name']}"), 404)  # nothing half-written


def test_a_gpu_step_is_refused_where_there_are_none_and_waits_where_they_are_down(contract: Contract) -> None:
    """docs/backends.md#gpus: a backend that offers no GPUs refuses a step with ``gpus`` at init; one
    that has some (the Slurm fixture's DOWN ``gpunode``, two GPUs as generic resources) refuses more
    than its largest node has, and queues the rest until ``start_timeout``: ``unschedulable``."""
    tool, out = unique("tool"), unique("out")
    contract.api.tool(tool)
    contract.api.local_dataset(out)
    listed = {b["name"]: b for b in contract.api.ok(contract.api.get("/backends"))}
    capabilities = listed[contract.backend.name]["capabilities"]
    if "gpus" not in capabilities["enforces"]:
        body = {"name": unique("p"), "steps": [contract.step("s", tool, out, "true", gpus=1)]}
        error = assert_error(contract.api.post("/pipeline/init", body), 400, "backend_cannot_enforce")
        assert (error["field"], error["backend"]) == ("gpus", contract.backend.name)
        return
    most = capabilities["gpus"]
    assert most is not None and most > 0
    body = {"name": unique("p"), "steps": [contract.step("s", tool, out, "true", gpus=most + 1)]}
    error = assert_error(contract.api.post("/pipeline/init", body), 400, "step_rejected")
    assert (error["field"], error["backend"]) == ("gpus", contract.backend.name)
    pipeline = contract.pipeline([contract.step("s", tool, out, "echo never", gpus=1, start_timeout=3)])
    run = contract.api.run(pipeline)
    (attempt,) = run["steps"][0]["attempts"]
    assert run["status"] == "failed" and attempt["status"] == "unschedulable", run
    servers.wait_until(lambda: contract.backend.objects(run["id"]) == [], timeout=60, what="no object left")


def test_requests_without_a_token_are_refused(contract: Contract) -> None:
    assert requests.get(f"{contract.api.url}/backends", timeout=10).status_code == 401


def test_steps_of_one_pipeline_run_on_two_backends_and_a_fan_out_on_its_own(contract: Contract) -> None:
    if contract.backend.name == "local":
        pytest.skip("the node of this backend has no second backend")
    tool, raw, out = unique("tool"), unique("raw"), unique("out")
    contract.api.tool(tool)
    contract.api.local_dataset(raw)
    repo = contract.api.local_dataset(out)
    make = {**contract.step("make", tool, raw, f"for i in 1 2 3 4 5 6; do echo $i > {APP}/data/in$i.txt; done"), "backend": "local"}
    fan = contract.step(
        "fan", tool, out, f"cp {APP}/input/*.txt {APP}/data/", input_dataset=raw,
        fan_out={"glob": "*.txt", "split_size": 2, "max_parallel": 3},
    )  # fmt: skip
    run = contract.api.run(contract.pipeline([make, fan]))
    assert run["status"] == "succeeded", run
    made, fanned = run["steps"]
    assert [a["backend"] for a in made["attempts"]] == ["local"]
    assert len(fanned["attempts"]) == 3 and {a["backend"] for a in fanned["attempts"]} == {contract.backend.name}
    assert sorted(gitutil.git(repo, "ls-tree", "--name-only", "ground-truth").split()) == [f"in{i}.txt" for i in range(1, 7)]
