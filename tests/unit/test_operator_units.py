"""Units of the operator's view: metrics from a run record, JSON log lines, the new settings, and
maoctl's shell completion."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.logs import RUN_ID, STEP, JsonFormatter
from orchestrator.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def test_a_run_record_moves_counters_and_histograms() -> None:
    metrics = Metrics()
    run = {
        "id": "r1",
        "pipeline": "p",
        "trigger": "cron",
        "status": "failed",
        "duration": 12.5,
        "steps": [
            {"name": "a", "status": "succeeded", "duration": 2.0, "merge": "merged"},
            # The engine's shape: attempts per step, each counted.
            {
                "name": "b",
                "status": "conflict",
                "duration": 3.0,
                "merge": "conflict",
                "attempts": [{"status": "stalled", "backend": "local"}, {"status": "failed", "backend": "hpc"}],
            },  # fmt: skip
            {"name": "c", "status": "skipped", "attempts": []},
            {"name": "d", "status": "cached", "attempts": []},  # no container: no attempt
            # A retry's step taken from the run it retries: counted, no attempt, no duration.
            {"name": "e", "status": "reused", "duration": 0.0, "attempts": []},
            {"name": "f", "status": "reused", "duration": 0.0},  # a record without attempts
        ],
    }
    metrics.observe_run(run)
    got = samples(metrics)
    assert got[("mao_runs_total", (("pipeline", "p"), ("status", "failed"), ("trigger", "cron")))] == 1
    assert got[("mao_run_duration_seconds_sum", (("pipeline", "p"),))] == 12.5
    assert got[("mao_step_duration_seconds_count", (("pipeline", "p"), ("step", "b")))] == 1
    assert got[("mao_step_attempts_total", (("backend", ""), ("status", "succeeded")))] == 1
    assert got[("mao_step_attempts_total", (("backend", "hpc"), ("status", "failed")))] == 1
    assert got[("mao_step_attempts_total", (("backend", "local"), ("status", "stalled")))] == 1
    assert not any(k[0] == "mao_step_attempts_total" and ("status", "skipped") in k[1] for k in got)
    assert not any(k[0] == "mao_step_attempts_total" and ("status", "cached") in k[1] for k in got)
    assert not any(k[0] == "mao_step_attempts_total" and ("status", "reused") in k[1] for k in got)
    assert got[("mao_steps_reused_total", (("pipeline", "p"),))] == 2
    assert ("mao_step_duration_seconds_count", (("pipeline", "p"), ("step", "e"))) not in got
    assert got[("mao_merge_conflicts_total", ())] == 1
    assert not any("r1" in str(key) for key in got)  # no run id in any label


def test_a_broken_record_never_raises_and_registries_are_separate() -> None:
    first, second = Metrics(), Metrics()  # a second one in the same process: no duplicate error
    first.observe_run({"steps": "not a list"})
    first.tick("federation", "fired", lag=0.4)
    assert samples(first)[("mao_ticks_total", (("outcome", "fired"), ("scope", "federation")))] == 1
    assert ("mao_ticks_total", (("outcome", "fired"), ("scope", "federation"))) not in samples(second)


def test_json_lines_carry_run_and_step() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.jsonlog")
    logger.addHandler(handler)
    logger.propagate = False
    try:

        async def in_a_run() -> None:
            RUN_ID.set("abc")
            STEP.set("collect")
            logger.warning("step %s started", "collect")

        asyncio.run(in_a_run())
        logger.warning("outside")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["run"] == "abc" and first["step"] == "collect" and first["message"] == "step collect started"
    assert "run" not in second and second["level"] == "WARNING" and second["ts"].endswith("+00:00")
    assert "ValueError: boom" in third["exc"]


def test_settings_of_the_operators_view(tmp_path: Path) -> None:
    base = {"MAO_EXECUTOR_TOKEN": "x" * 16, "MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1"}
    settings = load_settings(base)
    assert (settings.log_format, settings.run_retention_days, settings.metrics_token) == ("text", 90.0, None)
    settings = load_settings(
        {**base, "MAO_LOG_FORMAT": "JSON", "MAO_METRICS_TOKEN": "scrape", "MAO_RUN_RETENTION_DAYS": "7"}
    )
    assert (settings.log_format, settings.run_retention_days) == ("json", 7.0)
    assert settings.describe()["MAO_METRICS_TOKEN"] == "***"
    with pytest.raises(ConfigError) as caught:
        load_settings({**base, "MAO_LOG_FORMAT": "xml", "MAO_RUN_RETENTION_DAYS": "-1"})
    assert len(caught.value.problems) == 2


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_maoctl_shell_completion(shell: str) -> None:
    env = {**os.environ, "_MAOCTL_COMPLETE": f"{shell}_source"}
    script = subprocess.run(
        [sys.executable, str(ROOT / "maoctl.py")], env=env, capture_output=True, text=True, timeout=60
    )
    assert script.returncode == 0 and "_MAOCTL_COMPLETE" in script.stdout


def test_maoctl_completes_commands_and_options() -> None:
    def complete(words: str, index: int) -> str:
        env = {
            **os.environ,
            "_MAOCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(index),
        }
        done = subprocess.run(
            [sys.executable, str(ROOT / "maoctl.py")], env=env, capture_output=True, text=True, timeout=60
        )
        return done.stdout

    assert "plain,pipeline" in complete("maoctl pip", 1)
    assert "plain,--name" in complete("maoctl pipeline run --n", 3)
