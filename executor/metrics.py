"""The executor's Prometheus metrics (``GET /metrics``, behind the executor's token like every route).

Its own ``CollectorRegistry`` per app. Counted at the HTTP edge (``app.run``), so the container code
stays as it is: a run's outcome is ``succeeded`` (exit 0), ``failed`` (another exit code),
``timed_out``, or the error code a refused or failed request answered with (bounded: the codes are
the executor's own).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))


class ExecutorMetrics:
    def __init__(self, max_parallel: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.containers = Gauge(
            "mao_executor_containers", "Runs being served now (a container running or being prepared)",
            registry=self.registry,
        )  # fmt: skip
        self.slots = Gauge(
            "mao_executor_slots", "Containers that may run at once (MAO_EXECUTOR_MAX_PARALLEL)",
            registry=self.registry,
        )  # fmt: skip
        self.slots.set(max_parallel)
        self.runs = Counter(
            "mao_executor_runs", "Runs that ended, by outcome", ["outcome"], registry=self.registry
        )
        self.duration = Histogram(
            "mao_executor_run_duration_seconds", "Time from request to the end of a run (/run, or a submitted container)",
            buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip

    def ended(self, outcome: str, seconds: float | None) -> None:
        """A run ended (``/run``'s answer, or a submitted container's end): counted by outcome, and
        its time from request to end observed when it is known."""
        self.runs.labels(str(outcome)).inc()
        if seconds is not None:
            self.duration.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
