"""The executor's engine client reads a container's log in one round trip: it never asks the
engine whether the container has a tty, because no container the executor creates has one."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from executor.config import Settings
from executor.docker_runner import ContainerSpec, DockerRunner, EngineClient
from executor.hardening import container_limits
from executor.wire.containers import SubmitRequest


class _RecordingApi:
    """What ``containers.create`` sends the engine, without an engine."""

    _version = "1.41"

    def __init__(self) -> None:
        self.created: dict[str, Any] = {}

    def create_container(self, **kwargs: Any) -> dict[str, str]:
        self.created = kwargs
        return {"Id": "0" * 64}


class _RecordingClient:
    def __init__(self) -> None:
        self.api = _RecordingApi()


def test_reading_a_log_asks_nothing_more_of_the_engine() -> None:
    client = EngineClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    # Any request would fail: there is no engine at that address.
    assert client.api._check_is_tty("any-container") is False


@given(
    writable=st.booleans(),
    memory=st.none() | st.integers(6 * 1024**2, 2**34),
    cpus=st.none() | st.floats(0.01, 1.0),
    gpus=st.none() | st.integers(1, 4),
)
def test_no_container_the_executor_creates_has_a_tty(
    writable: bool, memory: int | None, cpus: float | None, gpus: int | None
) -> None:
    """Whatever a request asks, the create never asks for a tty: the log read above relies on it."""
    request = SubmitRequest(
        name="c1", image="busybox:latest", output_dir="/tmp/out", writable_root=writable,
        memory=memory, cpus=cpus, gpus=gpus,
    )  # fmt: skip
    client = _RecordingClient()
    settings = Settings(token="unit", instance="unit")
    runner = DockerRunner(settings, client_factory=lambda **_: client)  # type: ignore[arg-type,return-value]
    spec = ContainerSpec(
        image=request.image, name=request.name, cmd=["true"], env={}, user="1000:1000",
        labels={}, limits=container_limits(request),
    )  # fmt: skip
    runner.create(spec)
    assert client.api.created, "the create reached the engine's API"
    assert not client.api.created.get("tty")
    assert not client.api.created.get("stdin_open")
