"""maoctl and the run engine: ``pipeline cancel`` and the step graph of ``pipeline run-show``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.api import unique
from tests.ctl_helpers import maoctl

from .test_maoctl import add_tool_and_local_dataset, as_json, ok, url  # noqa: F401 - url is a fixture


def test_cancel_and_the_step_graph(url: str, tmp_path: Path) -> None:  # noqa: F811
    tool, data, name = unique("tool"), unique("data"), unique("graph")
    add_tool_and_local_dataset(url, tool, data)
    steps = [
        {"name": "top", "tool": tool, "output_dataset": data, "cmd": ["true"], "needs": []},
        {"name": "slow", "tool": tool, "output_dataset": data, "cmd": ["sleep", "300"], "needs": ["top"]},
        {"name": "side", "tool": tool, "output_dataset": data, "cmd": ["true"], "needs": ["top"]},
        {"name": "end", "tool": tool, "output_dataset": data, "cmd": ["true"], "needs": ["slow", "side"]},
    ]
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"name": name, "steps": steps}))
    ok(url, "pipeline", "add", "--file", str(path))
    run_id = as_json(url, "pipeline", "run", "--name", name, "--no-wait")["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = as_json(url, "pipeline", "run-show", "--id", run_id)
        if run["steps"][1]["attempts"] and run["steps"][2]["status"] == "succeeded":
            break
        time.sleep(0.2)
    assert "Cancelling run" in ok(url, "pipeline", "cancel", "--id", run_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = as_json(url, "pipeline", "run-show", "--id", run_id)
        if run["status"] == "cancelled":
            break
        time.sleep(0.2)
    assert [s["status"] for s in run["steps"]] == ["succeeded", "cancelled", "succeeded", "cancelled"]
    shown = ok(url, "pipeline", "run-show", "--id", run_id)
    for text in ("top", "slow", "side", "also needs side", "attempt 1", "cancelled"):
        assert text in shown
    again = maoctl(url, "pipeline", "cancel", "--id", run_id)
    assert again.exit_code == 1 and "has ended" in again.stderr
