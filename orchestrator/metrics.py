"""Prometheus metrics of one orchestrator: what ``GET /metrics`` serves.

Each ``Metrics`` owns its own ``CollectorRegistry`` (never prometheus_client's global one), so several
apps in one process (tests, benchmarks) do not collide. Label values stay bounded: pipeline and step
names (configuration), statuses, outcomes, scopes and error codes; never run ids or keys.

The run engine calls exactly one method, ``observe_run``, with the run's record as ``GET /runs/{id}``
answers it, once the run has ended: counts, durations and step outcomes all come from that record
(``mao_step_attempts_total`` from each step's ``attempts``, fan-out shards included), so the engine
can change shape without touching this module. Gauges that describe the present (``mao_etcd_up``,
``mao_members``, ``mao_queue_depth``, ``mao_etcd_db_bytes`` and its kin) are set by the ``/metrics``
handler right before it renders.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .domain.states import MergeState, StepStatus

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: steps and runs last from a second to hours.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, float("inf"))
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, float("inf"))
# Step statuses of a record without attempts that mean no container ran.
NOT_ATTEMPTED = frozenset(
    {StepStatus.PENDING, StepStatus.SKIPPED, StepStatus.CACHED, StepStatus.REUSED, StepStatus.CANCELLED}
)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, float("inf"))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "mao_runs", "Runs that ended, by pipeline, trigger and final status",
            ["pipeline", "trigger", "status"], registry=r,
        )  # fmt: skip
        self.run_duration = Histogram(
            "mao_run_duration_seconds", "Duration of ended runs (start to end)",
            ["pipeline"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.step_duration = Histogram(
            "mao_step_duration_seconds", "Duration of ended steps",
            ["pipeline", "step"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.step_attempts = Counter(
            "mao_step_attempts", "Step attempts that ended, by status and the backend they ran on",
            ["status", "backend"], registry=r,
        )  # fmt: skip
        self.backend_up = Gauge(
            "mao_backend_up", "1 when the backend answered the last scrape's health check", ["backend"], registry=r
        )
        self.backend_running = Gauge(
            "mao_backend_attempts_running", "Attempts of this instance whose objects run on the backend now",
            ["backend"], registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge("mao_queue_depth", "Runs recorded but not started yet", registry=r)
        self.schedule_lag = Histogram(
            "mao_schedule_lag_seconds", "How late a tick fired a run, against its due time",
            ["scope"], buckets=LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self.ticks = Counter(
            "mao_ticks", "Schedule ticks handled here: fired, skipped, missed or lost to another instance",
            ["scope", "outcome"], registry=r,
        )  # fmt: skip
        self.lock_wait = Histogram(
            "mao_ground_truth_lock_wait_seconds", "Time spent waiting for a dataset's ground-truth lock",
            buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.steps_reused = Counter(
            "mao_steps_reused", "Steps a retry took over from the run it retries (status reused)",
            ["pipeline"], registry=r,
        )  # fmt: skip
        self.merge_conflicts = Counter(
            "mao_merge_conflicts", "Ground-truth merges that conflicted", registry=r
        )
        self.etcd_up = Gauge("mao_etcd_up", "1 when etcd answered the last scrape's check", registry=r)
        self.members = Gauge("mao_members", "Live instances in the federation's member list", registry=r)
        self.etcd_db = Gauge(
            "mao_etcd_db_bytes", "Size of the etcd database file this instance talks to (its quota counts this)",
            registry=r,
        )  # fmt: skip
        self.etcd_db_in_use = Gauge(
            "mao_etcd_db_in_use_bytes", "Bytes of the etcd database holding data (the rest: pages to reuse)",
            registry=r,
        )  # fmt: skip
        self.etcd_quota = Gauge("mao_etcd_quota_bytes", "etcd's quota as configured (MAO_ETCD_QUOTA_BYTES)", registry=r)
        self.etcd_alarm = Gauge(
            "mao_etcd_alarm", "1 while etcd has this alarm raised (NOSPACE: it refuses writes)", ["alarm"], registry=r
        )
        self.gateway_writes = Counter(
            "mao_gateway_writes", "Gateway writes (POST /write) by outcome: ok or the error code",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.up = Gauge("mao_up", "1 while this orchestrator serves", registry=r)
        self.up.set(1)
        self.strategy_active = Gauge(
            "mao_strategy_active",
            "1 for the tool a step's runs start with (its strategy's watcher), 0 for its other tools",
            ["pipeline", "step", "tool"], registry=r,
        )  # fmt: skip

    def strategies(self, states: Iterable[tuple[str, str, Sequence[str], str]]) -> None:
        """Set ``mao_strategy_active`` from (pipeline, step, its tools, the active one): label sets of
        steps that no longer have a strategy go."""
        self.strategy_active.clear()
        for pipeline, step, tools, active in states:
            for tool in tools:
                self.strategy_active.labels(pipeline, step, tool).set(1 if tool == active else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- events ---------------------------------------------------------------------------------
    def observe_run(self, run: dict[str, Any]) -> None:
        """Count an ended run from its record (``GET /runs/{id}``'s shape); never raises."""
        try:
            self._observe_run(run)
        except Exception:  # noqa: BLE001 - metrics must never break a run
            log.exception("could not record metrics of run %s", run.get("id"))

    def _observe_run(self, run: dict[str, Any]) -> None:
        pipeline = str(run.get("pipeline"))
        self.runs.labels(pipeline, str(run.get("trigger")), str(run.get("status"))).inc()
        if (duration := _duration(run)) is not None:
            self.run_duration.labels(pipeline).observe(duration)
        for step in run.get("steps") or []:
            attempts = step.get("attempts")
            if isinstance(attempts, list):
                # The run engine's attempt records (shards of a fan-out step included); a cached,
                # skipped or never-started step has none.
                for attempt in attempts:
                    backend = str(attempt.get("backend") or "")
                    self.step_attempts.labels(str(attempt.get("status")), backend).inc()
            elif step.get("status") not in NOT_ATTEMPTED:
                self.step_attempts.labels(str(step.get("status")), "").inc()  # a record without attempts
            if step.get("status") == StepStatus.REUSED:  # no work here: counted, not timed
                self.steps_reused.labels(pipeline).inc()
            elif (duration := _duration(step)) is not None:
                self.step_duration.labels(pipeline, str(step.get("name"))).observe(duration)
            if step.get("merge") == MergeState.CONFLICT or step.get("status") == StepStatus.CONFLICT:
                self.merge_conflicts.inc()

    def tick(self, scope: str, outcome: str, lag: float | None = None) -> None:
        """A schedule tick's outcome (``scope`` instance or federation); ``lag`` in seconds when fired."""
        self.ticks.labels(scope, outcome).inc()
        if lag is not None:
            self.schedule_lag.labels(scope).observe(max(lag, 0.0))

    def gateway_write(self, outcome: str) -> None:
        self.gateway_writes.labels(outcome).inc()


def _duration(record: dict[str, Any]) -> float | None:
    value = record.get("duration")
    if isinstance(value, int | float):
        return float(value)
    try:
        start, end = record.get("started_at"), record.get("ended_at")
        if start and end:
            return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        pass
    return None


# What objects built without a node's Metrics record into: counted, never served.
UNSERVED = Metrics()
