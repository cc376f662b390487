"""The one builder of an attempt's ``ContainerSpec`` (the engine's, fan-out's, adoption's and init's
check in ``pipelines/stepcheck.py``): what the tool runs, as whom, within which limits, seeing which
folders, and who it is (``Identity``: the object's name and labels on every backend).

Tool containers get ``MAO_INSTANCE``, ``MAO_RUN_ID``, ``MAO_PIPELINE``, ``MAO_STEP``, ``MAO_ATTEMPT``
(1-based) and ``MAO_TOOL`` (the registered name of the tool this attempt runs) in their environment,
set last, so a step's own env cannot override them; a fan-out shard also ``MAO_SHARD`` and
``MAO_SHARD_COUNT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..config import Settings
from ..domain.pipeline import Step, Tool
from ..executors.seam import ContainerSpec, Identity, InputData, Limits, OutputData
from .limits import step_limits


def container_spec(
    settings: Settings,
    *,
    run_id: str,
    pipeline: str,
    position: int,
    step: Step,
    attempt: int,
    tool: Tool,
    workdir: Path,
    input_dir: Path | None,
    input_commit: str | None = None,
    shard: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> ContainerSpec:
    """The tool runs as ``settings.tool_user()``, within the step's limits, on the step's backend."""
    identity_env = {
        "MAO_INSTANCE": settings.instance_name,
        "MAO_RUN_ID": run_id,
        "MAO_PIPELINE": pipeline,
        "MAO_STEP": step.name,
        "MAO_ATTEMPT": str(attempt),
        "MAO_TOOL": tool.name,
        **(extra_env or {}),
    }
    private = step.private_env or {}
    limits = step_limits(step, settings)
    return ContainerSpec(
        identity=Identity(
            instance=settings.instance_name,
            pipeline=pipeline,
            run=run_id,
            step=step.name,
            position=position,
            attempt=attempt,
            shard=shard,
        ),
        image=tool.image,
        cmd=step.cmd,
        env={**(step.env or {}), **private, **identity_env},
        secrets=frozenset(private),
        input=InputData(commit=input_commit or "", folder=input_dir) if input_dir is not None else None,
        output=OutputData(folder=workdir),
        user=settings.tool_user(),
        limits=Limits(
            memory=limits.memory,
            cpus=limits.cpus,
            pids=limits.pids,
            gpus=step.gpus,
            log_bytes=settings.step_log_max_bytes,
            tmp_bytes=settings.step_tmp_size,
        ),
        timeout=float(step.timeout or settings.step_timeout),
        start_timeout=float(step.start_timeout) if step.start_timeout else None,
        stall_timeout=float(step.stall_timeout) if step.stall_timeout else None,
        placement=dict(step.placement.labels) if step.placement is not None else {},
        docker_socket=step.docker_socket,
        writable_root=step.writable_root,
    )


def backend_of(step: Step, settings: Settings) -> str:
    """The name of the backend the step runs on."""
    return step.backend or settings.default_backend
