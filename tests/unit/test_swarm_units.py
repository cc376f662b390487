"""The swarm backend's pure pieces: the service body, placement, image references, reading task
states, Docker's log frames, resuming a log at a byte, the settings, and the test fixture's holder
count (against a stand-in engine: the real one is tests/integration/backends)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.config.backends.kinds import backend_values
from orchestrator.config.backends.swarm import SwarmSettings, host_problem
from orchestrator.executors.engine_api import FrameReader
from orchestrator.executors.seam import (
    INPUT_MOUNT,
    OUTPUT_MOUNT,
    ContainerSpec,
    EndKind,
    Identity,
    Limits,
    OutputData,
)
from orchestrator.executors.staging import StagedPaths
from orchestrator.executors.swarm import OomEvidence, memory_kill
from orchestrator.executors.swarm_logs import _Cursor
from orchestrator.executors.swarm_service import (
    ServiceOptions,
    image_reference,
    placement_constraints,
    placement_problem,
    service_body,
)
from orchestrator.executors.swarm_watch import ServiceView, parse_time, task_end
from tests.servers import swarm as swarm_fixture


def spec(**fields: Any) -> ContainerSpec:
    values: dict[str, Any] = {
        "identity": Identity(instance="i", pipeline="p", run="r", step="s", position=1, attempt=2, shard=3),
        "image": "tool:1",
        "cmd": ["run", "--fast"],
        "env": {"A": "1"},
        "output": OutputData(folder=Path("/w")),
        "user": (1000, 1000),
        "timeout": 5,
    }
    values.update(fields)
    return ContainerSpec(**values)


STAGED = StagedPaths(Path("/shared/x"), Path("/shared/x/input"), Path("/shared/x/output"))


def test_the_service_body_holds_every_rule() -> None:
    limits = Limits(memory=64 * 1024**2, cpus=4.0, pids=50)
    body = service_body(
        spec(limits=limits, placement={"gpu": "yes"}), "sha256:abc", STAGED, ServiceOptions(max_node_cpus=2.0)
    )
    template = body["TaskTemplate"]
    container = template["ContainerSpec"]
    assert body["Name"] == "mao-" + body["Name"].split("-", 2)[1] + "-r-1-2-s3"
    assert body["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    assert template["RestartPolicy"]["Condition"] == "none"
    assert container["User"] == "1000:1000" and container["CapabilityDrop"] == ["ALL"]
    assert (
        container["Image"] == "sha256:abc"
        and container["Args"] == ["run", "--fast"]
        and container["Env"] == ["A=1"]
    )
    assert container["Labels"] == body["Labels"] and body["Labels"]["mao.shard"] == "3"
    assert container["Mounts"] == [
        {"Type": "bind", "Source": "/shared/x/input", "Target": INPUT_MOUNT, "ReadOnly": True},
        {"Type": "bind", "Source": "/shared/x/output", "Target": OUTPUT_MOUNT, "ReadOnly": False},
    ]
    # CPUs capped to the largest node, as the local executor caps to its host; reserved as limited.
    assert template["Resources"]["Limits"] == {
        "Pids": 50,
        "MemoryBytes": 64 * 1024**2,
        "NanoCPUs": 2_000_000_000,
    }
    assert template["Resources"]["Reservations"] == {"MemoryBytes": 64 * 1024**2, "NanoCPUs": 2_000_000_000}
    assert template["Placement"]["Constraints"] == ["node.labels.gpu==yes"]
    plain = service_body(
        spec(cmd=None), "img", STAGED, ServiceOptions(reserve_resources=False, networks=("n1",))
    )
    assert "Args" not in plain["TaskTemplate"]["ContainerSpec"]
    assert plain["TaskTemplate"]["Resources"] == {"Limits": {"Pids": 512}, "Reservations": {}}
    assert plain["TaskTemplate"]["Networks"] == [{"Target": "n1"}]


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=4))
def test_placement_is_accepted_only_as_plain_constraints(placement: dict[str, str]) -> None:
    """Whatever a step sends, a constraint either is refused or is exactly one equality test."""
    if placement_problem(placement) is not None:
        return
    for constraint in placement_constraints(placement):
        key, _, value = constraint.removeprefix("node.labels.").partition("==")
        assert key in placement and placement[key] == value
        assert (
            not any(c.isspace() for c in constraint) and constraint.count("=") == 2 and "!" not in constraint
        )


def test_image_references() -> None:
    digest = "sha256:" + "a" * 64
    inspect = {"Id": "sha256:local", "RepoDigests": [f"other/x@{digest}", f"registry.lab/tool@{digest}"]}
    assert image_reference("registry.lab/tool:1", inspect, single_node=True) == "sha256:local"
    assert image_reference("registry.lab/tool:1", inspect, single_node=False) == f"registry.lab/tool@{digest}"
    assert (
        image_reference("busybox", {"Id": "x", "RepoDigests": [f"busybox@{digest}"]}, False)
        == f"busybox@{digest}"
    )
    assert (
        image_reference("built-here:1", {"Id": "sha256:local", "RepoDigests": []}, single_node=False) is None
    )
    assert image_reference("missing", None, single_node=True) is None
    assert image_reference(f"r/t@{digest}", None, single_node=False) == f"r/t@{digest}"


def view(state: str, err: str = "", code: int | None = None, container: str = "c1") -> ServiceView:
    status: dict[str, Any] = {"State": state, "Err": err, "Timestamp": "2026-01-02T03:04:05.123456789Z"}
    if code is not None:
        status["ContainerStatus"] = {"ContainerID": container, "ExitCode": code}
    return ServiceView("sid", "name", {}, None, {"Status": status})


@pytest.mark.parametrize(
    ("task", "kind", "code"),
    [
        (view("complete", code=0), EndKind.COMPLETED, 0),
        (view("failed", "task: non-zero exit (3)", 3), EndKind.FAILED, 3),
        (view("failed", "task: non-zero exit (137)", 137), EndKind.FAILED, 137),
        (view("failed", "starting container failed: no such file", 0, container=""), EndKind.FAILED, None),
        (view("rejected", "No such image: sha256:000"), EndKind.IMAGE_UNAVAILABLE, None),
        (view("rejected", "pull access denied for x"), EndKind.IMAGE_UNAVAILABLE, None),
        (
            view("rejected", 'invalid mount config for type "bind": bind source path does not exist'),
            EndKind.NODE_LOST,
            None,
        ),
        (view("rejected", "invalid user"), EndKind.FAILED, None),
        (view("orphaned"), EndKind.NODE_LOST, None),
        (view("shutdown"), EndKind.NODE_LOST, None),
        (view("remove"), EndKind.NODE_LOST, None),
    ],
)
def test_task_ends(task: ServiceView, kind: EndKind, code: int | None) -> None:
    got_kind, got_code, message = task_end(task)
    assert (got_kind, got_code) == (kind, code) and message


@given(evidence=st.sampled_from(OomEvidence), memory_limited=st.booleans())
def test_an_exit_137_is_out_of_memory_only_on_the_engine_s_word_or_as_a_named_guess(
    evidence: OomEvidence, memory_limited: bool
) -> None:
    kind, message = memory_kill(EndKind.FAILED, "the tool exited 137", evidence, memory_limited)
    if evidence in (OomEvidence.FLAGGED, OomEvidence.EVENT):
        assert kind is EndKind.OOM_KILLED and "out of memory" in message
    elif evidence is OomEvidence.NO_CONTAINER and memory_limited:
        assert kind is EndKind.OOM_KILLED and "most likely" in message  # a guess says it is one
    else:
        assert kind is EndKind.FAILED and message.startswith("the tool exited 137")
        assert (evidence is OomEvidence.NONE) == ("no out-of-memory kill" in message)


def test_parse_time() -> None:
    parsed = parse_time("2026-01-02T03:04:05.123456789Z")
    assert parsed is not None and parsed.microsecond == 123456 and parsed.utcoffset() is not None
    assert parse_time("2026-01-02T03:04:05Z") is not None
    assert parse_time("2026-01-02T03:04:05.5+02:00") is not None
    assert (
        parse_time("0001-01-01T00:00:00Z") is None and parse_time("junk") is None and parse_time(None) is None
    )


frames = st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=40)), max_size=8)


@given(frames, st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_frames_split_anywhere_give_back_the_payload(parts: list[tuple[int, bytes]], cuts: list[int]) -> None:
    wire = b"".join(struct.pack(">BxxxL", stream, len(data)) + data for stream, data in parts)
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    reader = FrameReader()
    out = b"".join(reader.feed(wire[a:b]) for a, b in zip(points, points[1:], strict=False))
    assert out == b"".join(data for _, data in parts)


@settings(max_examples=200)
@given(
    log=st.binary(min_size=0, max_size=60),
    since=st.integers(min_value=0, max_value=70),
    streams=st.lists(st.tuples(st.integers(0, 60), st.lists(st.integers(1, 20), max_size=8)), max_size=4),
)
def test_a_log_read_in_dropped_streams_then_to_its_end_is_whole_from_since(
    log: bytes, since: int, streams: list[tuple[int, list[int]]]
) -> None:
    """Each stream reads the log from its start in chunks and drops anywhere; the last reads all."""
    cursor = _Cursor(since)
    out = b""
    for length, chunks in [*streams, (len(log), [7])]:
        cursor.restart()
        data, at = log[: min(length, len(log))], 0
        sizes = iter(chunks or [len(data) or 1])
        while at < len(data):
            size = next(sizes, len(data))
            out += cursor.take(data[at : at + size])
            at += size
    assert out == log[since:]


def test_settings(tmp_path: Path) -> None:
    env = {
        "MAO_BACKEND_GPU_SHARED_ROOT": str(tmp_path),
        "MAO_BACKEND_GPU_ACCEPT_WITHOUT_NO_NEW_PRIVILEGES": "1",
        "MAO_BACKEND_GPU_NETWORKS": "a, b",
        "MAO_BACKEND_GPU_START_TIMEOUT": "30",
        "MAO_BACKEND_OTHER_SHARED_ROOT": "/elsewhere",
    }
    parsed = SwarmSettings.model_validate(backend_values("gpu", env))
    assert (
        parsed.accept_without_no_new_privileges
        and parsed.networks == ("a", "b")
        and parsed.start_timeout == 30
    )
    assert parsed.tls() is None
    bad_cases = [
        ({"MAO_BACKEND_GPU_SHARED_ROOT": str(tmp_path), "MAO_BACKEND_GPU_SHAREDROOT": "x"}, "extra"),
        ({"MAO_BACKEND_GPU_SHARED_ROOT": "relative"}, "absolute"),
        ({"MAO_BACKEND_GPU_SHARED_ROOT": str(tmp_path / "missing")}, "not a folder"),
        (
            {
                "MAO_BACKEND_GPU_SHARED_ROOT": str(tmp_path),
                "MAO_BACKEND_GPU_DOCKER_HOST": "tcp://10.0.0.1:2375",
            },
            "TLS",
        ),
        ({"MAO_BACKEND_GPU_SHARED_ROOT": str(tmp_path), "MAO_BACKEND_GPU_TLS_CA": "/ca"}, "go together"),
        ({"MAO_BACKEND_GPU_SHARED_ROOT": str(tmp_path), "MAO_BACKEND_GPU_API_VERSION": "1.40"}, "1.41"),
        ({"MAO_BACKEND_GPU_SHARED_ROOT": str(tmp_path), "MAO_BACKEND_GPU_POLL_INTERVAL": "0"}, "greater"),
        ({}, "shared_root"),
    ]
    for values, why in bad_cases:
        with pytest.raises(ValidationError, match=why):
            SwarmSettings.model_validate(backend_values("gpu", values))


@pytest.mark.parametrize(
    ("host", "tls", "ok"),
    [
        ("unix:///var/run/docker.sock", False, True),
        ("unix://relative.sock", False, False),
        ("tcp://127.0.0.1:2375", False, True),
        ("tcp://manager.lab:2376", False, False),
        ("tcp://manager.lab:2376", True, True),
        ("tcp://manager.lab", True, False),
        ("http://manager.lab:2376", True, False),
    ],
)
def test_docker_hosts(host: str, tls: bool, ok: bool) -> None:
    assert (host_problem(host, tls) is None) is ok


class _StandInEngine:
    """The few calls of the Docker SDK the fixture makes, on a swarm state kept in memory."""

    def __init__(self, state: str = "inactive", manager: bool = False) -> None:
        self.state, self.manager, self.bridge, self.calls = state, manager, False, []
        engine = self

        class Swarm:
            def init(self, **kwargs: Any) -> None:
                engine.calls.append("init")
                engine.state, engine.manager, engine.bridge = "active", True, True

            def leave(self, force: bool) -> None:
                engine.calls.append("leave")
                engine.state, engine.manager = "inactive", False

        class Net:
            name = swarm_fixture.GWBRIDGE

            def remove(self) -> None:
                engine.calls.append("bridge-rm")
                engine.bridge = False

        class Networks:
            def list(self, names: list[str]) -> list[Net]:
                return [Net()] if engine.bridge else []

        self.swarm, self.networks = Swarm(), Networks()

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"LocalNodeState": self.state, "ControlAvailable": self.manager}}

    def close(self) -> None:
        pass


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def use(engine: _StandInEngine) -> _StandInEngine:
        monkeypatch.setattr(swarm_fixture, "LOCK_PATH", tmp_path / "lock")
        monkeypatch.setattr(swarm_fixture, "STATE_PATH", tmp_path / "state.json")
        monkeypatch.setattr(swarm_fixture, "_client", lambda: engine)
        return engine

    return use


def test_the_last_holder_leaves_the_swarm_the_harness_made(stand_in) -> None:
    engine = stand_in(_StandInEngine())
    first, second = swarm_fixture.acquire_swarm(), swarm_fixture.acquire_swarm()
    assert first.created and second.created and engine.calls == ["init"]
    swarm_fixture.release_swarm(first)
    assert engine.state == "active"
    swarm_fixture.release_swarm(second)
    assert engine.calls == ["init", "leave", "bridge-rm"] and engine.state == "inactive"
    assert not swarm_fixture.STATE_PATH.exists()


def test_a_swarm_found_is_never_left_and_a_dead_holder_does_not_count(stand_in) -> None:
    engine = stand_in(_StandInEngine("active", manager=True))
    swarm_fixture.STATE_PATH.write_text(json.dumps({"created": False, "holders": {"gone": 2**22 + 12345}}))
    hold = swarm_fixture.acquire_swarm()
    assert not hold.created
    assert list(json.loads(swarm_fixture.STATE_PATH.read_text())["holders"]) == [hold.holder]
    swarm_fixture.release_swarm(hold)
    assert engine.calls == [] and engine.state == "active"


def test_a_crashed_creator_s_swarm_is_still_left_by_the_next_last_holder(stand_in) -> None:
    engine = stand_in(_StandInEngine("active", manager=True))
    state = {"created": True, "gwbridge": True, "holders": {"crashed": 2**22 + 12345}}
    swarm_fixture.STATE_PATH.write_text(json.dumps(state))
    hold = swarm_fixture.acquire_swarm()
    assert hold.created
    engine.bridge = True
    swarm_fixture.release_swarm(hold)
    assert engine.calls == ["leave", "bridge-rm"]


def test_a_worker_engine_is_refused(stand_in) -> None:
    stand_in(_StandInEngine("active", manager=False))
    with pytest.raises(swarm_fixture.ServerStartError, match="worker"):
        swarm_fixture.acquire_swarm()
    assert os.path.exists(swarm_fixture.LOCK_PATH)


def test_every_swarm_setting_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "backends.md").read_text()
    missing = [key.upper() for key in SwarmSettings.model_fields if f"`{key.upper()}`" not in docs]
    assert not missing, f"add these keys to docs/backends.md: {missing}"


def test_a_swarm_is_renewed_only_by_its_only_holder_when_the_harness_made_it(stand_in) -> None:
    engine = stand_in(_StandInEngine())
    first = swarm_fixture.acquire_swarm()
    assert swarm_fixture.renew_swarm(first) and engine.calls == ["init", "leave", "init"]
    second = swarm_fixture.acquire_swarm()
    assert not swarm_fixture.renew_swarm(first)  # someone else uses it now
    swarm_fixture.release_swarm(second)
    swarm_fixture.release_swarm(first)
    found = stand_in(_StandInEngine("active", manager=True))
    hold = swarm_fixture.acquire_swarm()
    assert not swarm_fixture.renew_swarm(hold) and found.calls == []
    swarm_fixture.release_swarm(hold)
