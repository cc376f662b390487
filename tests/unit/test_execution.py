"""The engine's side of the seam without any engine (runs/execution.py, runs/log_keeper.py), against
an in-memory backend: the kept log survives dropped streams (generated cut points) without losing
or doubling a byte, secrets are masked across chunks and cuts, stall and the watchdog end an attempt
and remove its object, a cancel removes it before it returns, and the sweep removes what nobody
watches."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.executors.backends import Backends
from orchestrator.executors.seam import ContainerSpec, EndKind, Identity, OutputData
from orchestrator.runs import execution as execution_module
from orchestrator.runs.execution import Execution
from orchestrator.runs.step_logs import StepLogs
from tests.unit.memory_backend import MemoryBackend

INSTANCE = "unit"


def spec(run: str = "r1", attempt: int = 1, **fields: object) -> ContainerSpec:
    values: dict[str, object] = {
        "identity": Identity(instance=INSTANCE, pipeline="p", run=run, step="s", position=0, attempt=attempt),
        "image": "busybox",
        "output": OutputData(folder=Path("/tmp")),
        "user": (1000, 1000),
        "timeout": 60,
        **fields,
    }
    return ContainerSpec(**values)  # type: ignore[arg-type]


def make(tmp_path: Path) -> tuple[Execution, MemoryBackend]:
    backend = MemoryBackend()
    backends = Backends({backend.name: backend}, backend.name, {backend.name: "memory"})  # type: ignore[dict-item]
    return Execution(backends, StepLogs(tmp_path), INSTANCE), backend


async def until(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def kept(tmp_path: Path, run: str, name: str) -> bytes:
    return gzip.decompress((tmp_path / "logs" / run / f"{name}.log.gz").read_bytes())


async def drive(tmp_path: Path, chunks: list[bytes], cuts: list[int], secrets: dict[str, str]) -> tuple[bytes, MemoryBackend]:
    execution, backend = make(tmp_path)
    backend.cuts = list(cuts)
    the_spec = spec(env=secrets, secrets=frozenset(secrets))
    running = asyncio.create_task(execution.run(the_spec, backend.name))
    await until(lambda: the_spec.name in backend.things, "the submit")
    backend.start_it(the_spec.name)
    for chunk in chunks:
        backend.write(the_spec.name, chunk)
        await asyncio.sleep(0)
    backend.finish(the_spec.name)
    outcome = await asyncio.wait_for(running, 10)
    assert outcome.end.kind is EndKind.COMPLETED
    await asyncio.wait_for(execution.close(), 10)
    return kept(tmp_path, the_spec.identity.run, the_spec.name), backend


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=12),
    cut_points=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=4),
)
def test_a_cut_stream_is_kept_whole_without_a_byte_twice(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes], cut_points: list[float]
) -> None:
    total = sum(len(c) for c in chunks)
    cuts = sorted({max(1, int(p * total)) for p in cut_points})
    log, backend = asyncio.run(drive(tmp_path_factory.mktemp("cut"), chunks, cuts, {}))
    assert log == b"".join(chunks)
    assert backend.cuts == []  # every cut happened
    assert len(backend.cancels) >= 1  # the ended object was removed once its log was kept


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(split=st.integers(min_value=1, max_value=30), cut=st.integers(min_value=1, max_value=60))
def test_a_secret_is_masked_across_chunks_and_cuts(
    tmp_path_factory: pytest.TempPathFactory, split: int, cut: int
) -> None:
    text = b"token=" + b"s3cr3t-value-0123" + b" printed, again s3cr3t-value-0123\n"
    chunks = [text[:split], text[split:]]
    log, _ = asyncio.run(
        drive(tmp_path_factory.mktemp("mask"), chunks, [min(cut, len(text))], {"API_KEY": "s3cr3t-value-0123"})
    )
    assert log == b"token=*** printed, again ***\n"


async def test_a_silent_attempt_stalls_and_its_object_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execution_module, "STALL_CHECK", 0.05)
    execution, backend = make(tmp_path)
    the_spec = spec(stall_timeout=0.3)
    running = asyncio.create_task(execution.run(the_spec, backend.name))
    await until(lambda: the_spec.name in backend.things, "the submit")
    # Waiting to be scheduled is not silence.
    await asyncio.sleep(0.6)
    assert not running.done()
    backend.start_it(the_spec.name)
    backend.write(the_spec.name, b"one line\n")
    outcome = await asyncio.wait_for(running, 10)
    assert outcome.end.kind is EndKind.STALLED and "0.3" in outcome.end.message
    assert the_spec.name in backend.cancels and the_spec.name not in backend.things


async def test_a_backend_away_is_not_silence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execution_module, "STALL_CHECK", 0.05)
    execution, backend = make(tmp_path)
    the_spec = spec(stall_timeout=0.3)
    running = asyncio.create_task(execution.run(the_spec, backend.name))
    await until(lambda: the_spec.name in backend.things, "the submit")
    backend.start_it(the_spec.name)
    backend.write(the_spec.name, b"x\n")
    await asyncio.sleep(0.1)
    backend.down = True
    backend.write(the_spec.name, b"y\n")  # its stream breaks: the keeper is disconnected
    await asyncio.sleep(0.8)
    assert not running.done()
    backend.down = False
    backend.finish(the_spec.name)
    outcome = await asyncio.wait_for(running, 10)
    assert outcome.end.kind is EndKind.COMPLETED


async def test_the_watchdog_ends_an_attempt_its_backend_forgot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execution_module, "WATCHDOG_CHECK", 0.05)
    monkeypatch.setattr(execution_module, "WATCHDOG_SLACK", 0.2)
    execution, backend = make(tmp_path)
    the_spec = spec(timeout=0.2)
    running = asyncio.create_task(execution.run(the_spec, backend.name))
    await until(lambda: the_spec.name in backend.things, "the submit")
    backend.start_it(the_spec.name)
    outcome = await asyncio.wait_for(running, 10)
    assert outcome.end.kind is EndKind.TIMED_OUT and "watchdog" in outcome.end.message
    assert the_spec.name in backend.cancels


async def test_a_cancelled_attempt_removes_its_object_before_it_returns(tmp_path: Path) -> None:
    execution, backend = make(tmp_path)
    the_spec = spec()
    running = asyncio.create_task(execution.run(the_spec, backend.name))
    await until(lambda: the_spec.name in backend.things, "the submit")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert backend.cancels == [the_spec.name] and backend.things == {}


async def test_detaching_leaves_the_object_for_the_next_process(tmp_path: Path) -> None:
    execution, backend = make(tmp_path)
    the_spec = spec()
    running = asyncio.create_task(execution.run(the_spec, backend.name))
    await until(lambda: the_spec.name in backend.things, "the submit")
    execution.detaching = True
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert backend.cancels == [] and the_spec.name in backend.things
    assert not (tmp_path / "logs" / "r1" / f"{the_spec.name}.log.gz").exists()


async def test_an_adopted_object_is_waited_for_and_its_whole_log_kept(tmp_path: Path) -> None:
    execution, backend = make(tmp_path)
    the_spec = spec()
    handle = await backend.submit(the_spec)  # by a previous process
    backend.start_it(the_spec.name)
    backend.write(the_spec.name, b"before the restart\n")
    execution.claim("r1", handle)
    running = asyncio.create_task(execution.run(the_spec, backend.name, adopted=handle))
    await asyncio.sleep(0.05)
    backend.write(the_spec.name, b"after it\n")
    backend.finish(the_spec.name)
    outcome = await asyncio.wait_for(running, 10)
    await execution.close()
    assert outcome.end.kind is EndKind.COMPLETED and backend.submits == [the_spec.name]
    assert kept(tmp_path, "r1", the_spec.name) == b"before the restart\nafter it\n"


async def test_the_sweep_removes_what_no_attempt_watches(tmp_path: Path) -> None:
    execution, backend = make(tmp_path)
    watched = spec(run="live")
    running = asyncio.create_task(execution.run(watched, backend.name))
    await until(lambda: watched.name in backend.things, "the submit")
    orphan = spec(run="gone")
    await backend.submit(orphan)
    other = spec(run="theirs").model_copy(
        update={"identity": Identity(instance="another", pipeline="p", run="x", step="s", position=0, attempt=1)}
    )
    await backend.submit(other)
    assert await execution.sweep() == [orphan.name]
    assert set(backend.things) == {watched.name, other.name}  # another instance's is not ours
    assert (await execution.remove_run("live")) == [watched.name]
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
