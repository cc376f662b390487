"""Catch-up of a federation-wide schedule across a real stopped federation: all three instances are
stopped across a minute boundary (about a minute) and started again together; exactly one of the
eligible ones runs the missed tick, with the tick time it stands for."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests import servers

from .conftest import Federation
from .test_schedules import federation_schedule, init, runs_of, schedule


@pytest.mark.slow
def test_the_whole_federation_down_across_a_tick_catches_up_once(federation: Federation) -> None:
    pipeline = init(federation, ["fed-a", "fed-b"])  # fed-c is not eligible: not initialised there
    while not 2 <= time.time() % 60 <= 40:  # room before the next boundary for the stop
        time.sleep(0.5)
    job = schedule(federation.c.api, pipeline, catchup="latest")["job_id"]
    boundary = (int(time.time()) // 60 + 1) * 60
    try:
        for node in federation.nodes.values():
            node.service.stop()
        while time.time() < boundary + 2:
            time.sleep(0.5)
        for node in federation.nodes.values():  # all back at about the same moment
            node.service.process.start()
        for node in federation.nodes.values():
            node.service.wait_ready()
        due = datetime.fromtimestamp(boundary, UTC)

        def caught_up() -> dict | None:
            found = federation_schedule(federation.c.api, job)
            ticks = [t for t in (found or {}).get("ticks", []) if datetime.fromisoformat(t["due_at"]) == due]
            return ticks[0] if ticks and ticks[0].get("run_status") else None

        tick = servers.wait_until(caught_up, timeout=120, interval=0.5, what="the catch-up of the missed tick")
        assert tick["outcome"] == "fired" and tick["instance"] in ("fed-a", "fed-b"), tick
        assert tick["reason"].startswith("catch-up for ticks missed since"), tick
        assert tick["run_status"] == "succeeded", tick
        runs = runs_of(federation, job)
        stands_for = [
            (name, r["id"])
            for name, found in runs.items()
            for r in found
            if r["tick_at"] and datetime.fromisoformat(r["tick_at"]) == due
        ]
        assert stands_for == [(tick["instance"], tick["run_id"])]  # once, federation-wide
    finally:
        for node in federation.nodes.values():
            if not node.service.alive:
                node.service.process.start()
                node.service.wait_ready()
        federation.a.api.delete(f"/jobs/{job}")
