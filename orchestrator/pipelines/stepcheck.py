"""Init-time check of every step, as the executor will check it when the step runs.

A step that can never run (NUL in cmd or env, a /run body over the executor's size limit, the Docker
socket for an image not on the executor's allow-list, a root user) is refused at ``POST /pipeline/init``
with a 400 naming the step, instead of failing every run later. The request checked is built by the
run engine's own builder (``runs.attempt.container_request``), with the largest values a run can give
it (run id, last attempt, last shard, the longest folder paths), once for the step's tool and once for
its fallback tool; the executor itself says whether it would accept it (``POST /validate``), so its
rules live in one place.
"""

from __future__ import annotations

import json
from pathlib import Path

from executor.wire.models import MAX_BODY_BYTES

from ..config import Settings
from ..domain.fanout import MAX_SHARDS
from ..domain.pipeline import Pipeline, Step, Tool, node_branch
from ..errors import BadRequest
from ..executors import ContainerRequest, ExecutorClient, StepRejected
from ..runs.attempt import container_request

# What the executor's own framing may add (HTTP headers are not counted by client_max_size).
_BODY_SLACK = 1024
_RUN_ID = "0" * 32


def representative_request(
    pipeline: str, position: int, step: Step, tool: Tool, settings: Settings
) -> ContainerRequest:
    """A /run request as large as any the engine will send for this step with ``tool``."""
    attempt = step.retries + 1
    scratch = settings.data_dir / "tmp" / _RUN_ID
    extra_env: dict[str, str] = {}
    suffix = ""
    workdir: Path = (
        settings.data_dir / "work" / step.output_dataset / node_branch(step.name, settings.instance_name)
    )
    input_dir: Path | None = scratch / f"{position}-{attempt}" if step.input_dataset else None
    if step.fan_out is not None:
        last = MAX_SHARDS - 1
        shard = scratch / f"{position}-fan-{attempt}" / "shards" / str(last)
        extra_env = {"MAO_SHARD": str(last), "MAO_SHARD_COUNT": str(MAX_SHARDS)}
        suffix = f"-s{last}"
        workdir, input_dir = shard / f"output-{attempt}", shard / "input"
    return container_request(
        settings,
        run_id=_RUN_ID,
        pipeline=pipeline,
        position=position,
        step=step,
        attempt=attempt,
        tool=tool,
        workdir=workdir,
        input_dir=input_dir,
        extra_env=extra_env,
        name_suffix=suffix,
    )


async def check_steps(
    pipeline: Pipeline, tools: dict[str, Tool], settings: Settings, executor: ExecutorClient
) -> None:
    """Raise BadRequest naming the first step the executor would refuse; ExecutorUnavailable (503)
    when the executor cannot be asked."""
    for position, step in enumerate(pipeline.steps):
        for name in step.tools():
            request = representative_request(pipeline.name, position, step, tools[name], settings)
            size = len(json.dumps(request.model_dump(mode="json", exclude_none=True)).encode())
            if size > MAX_BODY_BYTES - _BODY_SLACK:
                raise BadRequest(
                    f"step {step.name!r}: its cmd and env make a request of {size} bytes, over the "
                    f"executor's limit of {MAX_BODY_BYTES - _BODY_SLACK}; pass large data through the "
                    "input dataset instead",
                    code="step_too_large",
                )
            try:
                await executor.validate(request)
            except StepRejected as exc:
                what = f"step {step.name!r}" + (f" (fallback tool {name!r})" if name != step.tool else "")
                raise BadRequest(
                    f"{what} would be refused by the executor: {exc.message}", code="step_rejected"
                ) from exc
