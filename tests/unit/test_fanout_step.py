"""A fan-out step end to end on the file system, with fake containers instead of Docker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestrator.domain.fanout import FanOut
from orchestrator.runs.fanout.coordinator import ShardOutcome, ShardRun, SpeculationPolicy
from orchestrator.runs.fanout.step import run_fan_out

OFF = SpeculationPolicy(enabled=False)


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    root = tmp_path / "snapshot"
    (root / "raw").mkdir(parents=True)
    for n in range(20):
        (root / "raw" / f"{n:02}.txt").write_text(f"sample {n}\n")
    (root / "README").write_text("not an input\n")
    return root


def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "previous.txt").write_text("kept\n")
    return folder


async def test_each_container_sees_only_its_shard_and_outputs_combine(snapshot: Path, tmp_path: Path) -> None:
    seen: dict[int, list[str]] = {}

    async def container(run: ShardRun, input_dir: Path, output_dir: Path) -> ShardOutcome:
        assert list(output_dir.iterdir()) == []  # an empty /usr/src/app/data
        files = sorted(str(p.relative_to(input_dir)) for p in input_dir.rglob("*") if p.is_file())
        seen[run.shard.index] = files
        for name in files:
            (output_dir / f"{Path(name).stem}.out").write_text((input_dir / name).read_text().upper())
        return ShardOutcome(ok=True)

    work = workdir(tmp_path)
    result = await run_fan_out(
        FanOut(glob="raw/*.txt", split_size=5, max_parallel=2),
        snapshot=snapshot,
        scratch=tmp_path / "scratch",
        workdir=work,
        run_container=container,
        speculation=OFF,
    )
    assert result.ok, result.error
    assert result.summary.as_dict() == {"count": 4, "succeeded": 4, "failed": 0, "speculative": 0}
    assert seen[1] == [f"raw/{n:02}.txt" for n in range(5)]
    assert seen[4] == [f"raw/{n:02}.txt" for n in range(15, 20)]
    assert sorted(p.name for p in work.iterdir()) == sorted(
        ["previous.txt", *(f"{n:02}.out" for n in range(20))]
    )
    assert (work / "07.out").read_text() == "SAMPLE 7\n"
    assert result.combined is not None and result.combined.files == 20
    assert not (tmp_path / "scratch").exists()


async def test_a_retried_shard_starts_from_an_empty_output_folder(snapshot: Path, tmp_path: Path) -> None:
    async def container(run: ShardRun, input_dir: Path, output_dir: Path) -> ShardOutcome:
        (output_dir / f"shard-{run.shard.index}.txt").write_text(f"attempt {run.attempt}")
        if run.shard.index == 2 and run.attempt == 1:
            (output_dir / "junk-of-a-failed-attempt").write_text("x")
            return ShardOutcome(ok=False, error="exit code 1")
        return ShardOutcome(ok=True)

    work = workdir(tmp_path)
    result = await run_fan_out(
        FanOut(glob="raw/*", split_size=10, max_parallel=2),
        snapshot=snapshot,
        scratch=tmp_path / "scratch",
        workdir=work,
        run_container=container,
        retries=1,
        speculation=OFF,
    )
    assert result.ok, result.error
    assert (work / "shard-2.txt").read_text() == "attempt 2"
    assert not (work / "junk-of-a-failed-attempt").exists()


async def test_two_shards_writing_one_path_fail_with_the_paths_named(snapshot: Path, tmp_path: Path) -> None:
    async def container(run: ShardRun, input_dir: Path, output_dir: Path) -> ShardOutcome:
        (output_dir / "summary.txt").write_text(f"shard {run.shard.index}")
        (output_dir / f"own-{run.shard.index}").write_text("")
        return ShardOutcome(ok=True)

    work = workdir(tmp_path)
    result = await run_fan_out(
        FanOut(glob="raw/*", split_size=10, max_parallel=2),
        snapshot=snapshot,
        scratch=tmp_path / "scratch",
        workdir=work,
        run_container=container,
        speculation=OFF,
    )
    assert not result.ok and not result.retryable
    assert result.collisions == {"summary.txt": (1, 2)}
    assert "summary.txt (shards 1, 2)" in (result.error or "")
    assert sorted(p.name for p in work.iterdir()) == ["previous.txt"]  # nothing half-combined


async def test_no_matching_file_runs_no_container(snapshot: Path, tmp_path: Path) -> None:
    async def container(run: ShardRun, input_dir: Path, output_dir: Path) -> ShardOutcome:
        raise AssertionError("no container may run")

    result = await run_fan_out(
        FanOut(glob="*.csv"),
        snapshot=snapshot,
        scratch=tmp_path / "scratch",
        workdir=workdir(tmp_path),
        run_container=container,
    )
    assert result.ok and result.summary.count == 0


async def test_a_cancelled_step_cancels_its_containers_and_removes_its_folders(
    snapshot: Path, tmp_path: Path
) -> None:
    running: set[int] = set()
    all_running = asyncio.Event()
    cancelled: list[int] = []

    async def container(run: ShardRun, input_dir: Path, output_dir: Path) -> ShardOutcome:
        running.add(run.shard.index)
        if len(running) == 3:
            all_running.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(run.shard.index)
            raise
        return ShardOutcome(ok=True)

    task = asyncio.create_task(
        run_fan_out(
            FanOut(glob="raw/*", split_size=2, max_parallel=3),
            snapshot=snapshot,
            scratch=tmp_path / "scratch",
            workdir=workdir(tmp_path),
            run_container=container,
        )
    )
    # Cancelled once all three (max_parallel) containers run: a shard whose folders exist may not
    # have reached its container yet (its input is made in a thread), and so has none to cancel.
    await asyncio.wait_for(all_running.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(cancelled) == [1, 2, 3]
    assert not (tmp_path / "scratch").exists()
