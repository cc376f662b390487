"""The instance's own SQL schema: its pipelines (with their secrets), runs, schedules and ticks.

What other instances must see lives in etcd; this database holds what belongs to this instance only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class PipelineRow(Base):
    __tablename__ = "pipelines"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # public form: no secret values
    run_timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PipelineVersionRow(Base):
    """One version of a pipeline's definition (domain/versions.py): recorded by each init that
    changed it. No foreign key: versions outlive a deleted pipeline, as its runs do, so that a run's
    version can still be looked up (and a pipeline initialised again continues the numbering)."""

    __tablename__ = "pipeline_versions"
    pipeline: Mapped[str] = mapped_column(String(128), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1, 2, ... per pipeline
    hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of the canonical definition
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)  # public form: no secret values
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Who initialised it: the API token's name when it has one, else the instance's name.
    created_by: Mapped[str | None] = mapped_column(String(256), nullable=True)


class SecretRow(Base):
    """A private variable's value for one step; never leaves this instance."""

    __tablename__ = "pipeline_secrets"
    pipeline: Mapped[str] = mapped_column(ForeignKey("pipelines.name", ondelete="CASCADE"), primary_key=True)
    step: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # No foreign key: a run's history outlives its pipeline.
    pipeline: Mapped[str] = mapped_column(String(128), index=True)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    schedule_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The schedule tick (or backfill tick) this run stands for; None for manual and data-triggered runs.
    tick_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A data-triggered run: the dataset and the ground-truth commit whose advance caused it.
    trigger_dataset: Mapped[str | None] = mapped_column(String(128), nullable=True)
    trigger_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Admission order (runs/admission.py): higher first, then older (created_at); None reads as 0.
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Started with overlap ``allow``: admitted although its pipeline is busy (None reads as false).
    side_by_side: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # The pipeline version it runs (or ran) with (pipeline_versions.number). A queued run asked for
    # no version until it starts (it runs the pipeline as it is then): None until then. A queued run
    # with a version was asked for that one. None too for runs recorded before versions existed.
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The backfill the run is a tick of (backfills.id); None for every other run.
    backfill_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    # The run this one retries (runs/retry.py): its done steps were taken over (``reused``).
    retry_of: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RunStepRow(Base):
    """A step of a run. Its identity is (run_id, name); ``position`` (its place in the pipeline's list)
    stays the primary key only because changing a primary key in place is not worth a table rebuild
    on SQLite; the engine addresses steps by name (unique index ``uq_run_steps_name``)."""

    __tablename__ = "run_steps"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    tool: Mapped[str] = mapped_column(String(128))
    image: Mapped[str | None] = mapped_column(String(256), nullable=True)
    input_dataset: Mapped[str | None] = mapped_column(String(128), nullable=True)
    output_dataset: Mapped[str] = mapped_column(String(128))
    branch: Mapped[str] = mapped_column(String(260))
    status: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    input_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    output_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    merge_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The ground-truth vote: "merged", "queued" (etcd was unreachable; retried later) or "conflict".
    merge_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    changed: Mapped[bool | None] = mapped_column(nullable=True)
    conflicts: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    log_tail: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What became of the step's insights.json: "published" or "ignored: <why>" (None: there was none).
    insights: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The step's needs as resolved at the run's start (absent in the pipeline = the previous step).
    needs: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # Fan-out summary {count, succeeded, failed, speculative}; None for a step without fan-out.
    shards: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The memo key of a step that succeeded (runs.cache): a later run with the same key is "cached".
    cache_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A retry's step: why it was reused or ran again ("failed in run X", "ground-truth of D moved").
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class AttemptRow(Base):
    """One try of a step: one object on its backend (or one per shard of a fan-out step, ``shard``
    1-based). ``backend``, ``container`` (the object's name) and ``engine_id`` are its handle: a
    restart finds the object again by them (runs/reconcile.py)."""

    __tablename__ = "run_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    shard: Mapped[int | None] = mapped_column(Integer, nullable=True)
    speculative: Mapped[bool] = mapped_column(default=False)
    tool: Mapped[str] = mapped_column(String(128))
    container: Mapped[str | None] = mapped_column(String(260), nullable=True)
    image_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    # Where it ran (MAO_BACKENDS; None: before backends existed, the local executor), the engine's
    # own id of its object, the node and how long it waited to be scheduled.
    backend: Mapped[str | None] = mapped_column(String(64), nullable=True)
    engine_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    node: Mapped[str | None] = mapped_column(String(256), nullable=True)
    queued_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ScheduleRow(Base):
    __tablename__ = "schedules"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(ForeignKey("pipelines.name", ondelete="CASCADE"), index=True)
    cron: Mapped[str] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The last tick handled (fired or skipped): missed ticks are counted from here after a restart.
    last_tick_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Policies (None: the default): "skip"; "none" | "latest" | "all"; seconds.
    overlap: Mapped[str | None] = mapped_column(String(16), nullable=True)
    catchup: Mapped[str | None] = mapped_column(String(16), nullable=True)
    catchup_window: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A data trigger instead of a cron: the dataset whose ground-truth advances fire it (cron is "").
    dataset: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The priority of the runs this schedule or trigger starts (None: 0).
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)


class TickRow(Base):
    """What happened at one tick of a schedule: ``fired`` (with its run; a catch-up says so in its
    reason), ``skipped`` (it could not start, and why) or ``missed`` (the instance was down and the
    catch-up policy did not run it, and why)."""

    __tablename__ = "schedule_ticks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(String(64), index=True)
    pipeline: Mapped[str] = mapped_column(String(128))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class BackfillRow(Base):
    """A backfill (scheduling/backfill.py): one run per tick, its runs linked by ``runs.backfill_id``.
    Its progress is counted from those runs; the row keeps what was asked and whether it was
    cancelled."""

    __tablename__ = "backfills"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128), index=True)
    cron: Mapped[str] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64))
    start: Mapped[datetime] = mapped_column(UTCDateTime)  # the request's "from"
    end: Mapped[datetime] = mapped_column(UTCDateTime)  # the request's "to"
    ticks: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # The pipeline version asked for (None: each run the pipeline as it is when it starts).
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The cancel also stopped the running run ({"running": true}); None: not cancelled.
    cancelled_running: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class RegistryCacheRow(Base):
    """The last registration of a tool or dataset read from etcd, for running while etcd is away."""

    __tablename__ = "registry_cache"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "tool" or "dataset"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    cached_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PinRow(Base):
    """What this instance accepted of a registration one of its pipelines uses (``merging.pins``):
    a tool's image or a dataset's master, and who owned it then. ``scope``: the pipeline, or
    ``:raw`` for the gateway's raw listener (no pipeline name has a colon)."""

    __tablename__ = "registration_pins"
    scope: Mapped[str] = mapped_column(String(160), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "tool" or "dataset"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    pinned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PendingMergeRow(Base):
    """A node branch whose ground-truth merge waits for the federation (etcd) to answer again.

    One row per dataset and branch: merging the branch's tip covers every earlier commit on it, so a
    later run replaces the row and adds its step to ``steps`` (the [run id, step name] pairs whose
    records are settled when the merge is done; [run id, position] before migration 0002)."""

    __tablename__ = "pending_merges"
    dataset: Mapped[str] = mapped_column(String(128), primary_key=True)
    branch: Mapped[str] = mapped_column(String(260), primary_key=True)
    master: Mapped[str] = mapped_column(Text)
    commit: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    trailers: Mapped[dict[str, str]] = mapped_column(JSON)
    steps: Mapped[list[list[Any]]] = mapped_column(JSON)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class GatewayKeyRow(Base):
    """A gateway API key of this instance: only its SHA-256 is kept, the key itself is shown once."""

    __tablename__ = "gateway_keys"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class GatewayProgressRow(Base):
    """How far the raw-entry listener got: every entry this instance acknowledged up to ``revision``
    (an etcd store revision) is committed in ``dataset``; after a restart it resumes from there."""

    __tablename__ = "gateway_progress"
    dataset: Mapped[str] = mapped_column(String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    entries: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StrategyStateRow(Base):
    """The strategy watcher's state of one step (``domain/strategy.py``): which tool runs start with,
    since when and why, a tool an operator forced, and each tool's health as
    ``[{tool, failures, opened_at, probed_at}]`` in the step's order (``store/strategies.py``)."""

    __tablename__ = "strategy_states"
    pipeline: Mapped[str] = mapped_column(String(128), primary_key=True)
    step: Mapped[str] = mapped_column(String(128), primary_key=True)
    active: Mapped[str] = mapped_column(String(128))
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)
    forced: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


Index("ix_runs_pipeline_created", RunRow.pipeline, RunRow.created_at)
Index("uq_run_steps_name", RunStepRow.run_id, RunStepRow.name, unique=True)
Index("ix_run_attempts_step", AttemptRow.run_id, AttemptRow.step)
