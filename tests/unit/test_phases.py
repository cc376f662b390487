"""The phase timer (orchestrator/phases.py): spans reach the log of the context that opened it, across
tasks and threads; without an open log nothing is recorded; the setting is validated."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from orchestrator import phases
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError


def test_off_is_a_shared_no_op() -> None:
    assert phases.begin(False) is None
    assert phases.phase("a") is phases.phase("b")  # no log open: nothing allocated


def test_spans_from_tasks_and_threads_reach_the_log(tmp_path: Path) -> None:
    async def scenario() -> phases.PhaseLog:
        log = phases.begin(True)
        assert log is not None

        def in_thread() -> None:
            with phases.phase("thread"):
                pass

        async def child() -> None:
            with phases.phase("child"):
                await asyncio.to_thread(in_thread)

        with phases.phase("outer"):
            await asyncio.create_task(child())
        phases.write(log, "run-1", tmp_path, 1e9)
        return log

    asyncio.run(scenario())
    path = tmp_path / phases.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = json.loads(path.read_text())
    assert entry["run"] == "run-1"
    names = [name for name, _, _ in entry["spans"]]
    assert names == ["thread", "child", "outer"]  # in the order they ended
    spans = {name: (start, end) for name, start, end in entry["spans"]}
    assert spans["outer"][0] <= spans["child"][0] <= spans["thread"][0] <= spans["thread"][1]
    assert spans["thread"][1] <= spans["child"][1] <= spans["outer"][1]


def test_a_log_stays_in_its_own_context() -> None:
    async def scenario() -> None:
        async def other() -> None:
            with phases.phase("elsewhere"):
                pass

        log = phases.begin(True)
        assert log is not None
        await asyncio.create_task(other())  # inherits the log: counted
        await asyncio.get_running_loop().run_in_executor(None, lambda: phases.phase("x").__enter__())
        assert [s[0] for s in log.spans] == ["elsewhere"]

    asyncio.run(scenario())
    assert phases.phase("after") is phases.phase("again")  # asyncio.run's context is gone


def _base(tmp_path: Path) -> dict[str, str]:
    return {"MAO_EXECUTOR_TOKEN": "x" * 16, "MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1"}


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False), ("", False)])
def test_setting(value: str, expected: bool, tmp_path: Path) -> None:
    env = {**_base(tmp_path), "MAO_PHASE_TIMINGS": value}
    assert load_settings(env).phase_timings is expected


def test_a_bad_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MAO_PHASE_TIMINGS"):
        load_settings({**_base(tmp_path), "MAO_PHASE_TIMINGS": "yes please"})


def test_the_setting_is_documented() -> None:
    root = Path(__file__).resolve().parents[2]
    assert "MAO_PHASE_TIMINGS" in (root / "docs" / "configuration.md").read_text()
    assert "--phases" in (root / "bench" / "README.md").read_text()
