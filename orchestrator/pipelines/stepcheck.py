"""Init-time check of every step, as the executor will check it when the step runs.

A step that can never run (NUL in cmd or env, a /run body over the executor's size limit, the Docker
socket for an image not on the executor's allow-list, a root user) is refused at ``POST /pipeline/init``
with a 400 naming the step, instead of failing every run later. The request checked has the shape and
the largest sizes of a real one (run id, container name, identity variables); the executor itself says
whether it would accept it (``POST /validate``), so its rules live in one place.
"""

from __future__ import annotations

import json
from typing import Any

from executor.models import MAX_BODY_BYTES

from ..config import Settings
from ..errors import BadRequest
from ..executor_client import ExecutorClient, StepRejected
from ..models import Pipeline, Step, node_branch
from .limits import step_limits

# What the executor's own framing may add (HTTP headers are not counted by client_max_size).
_BODY_SLACK = 1024
_RUN_ID = "0" * 32


def representative_request(
    pipeline: str, position: int, step: Step, image: str, settings: Settings
) -> dict[str, Any]:
    """A /run body as large as any the runner will send for this step (the run id's length is fixed)."""
    identity = {
        "MAO_INSTANCE": settings.instance_name,
        "MAO_RUN_ID": _RUN_ID,
        "MAO_PIPELINE": pipeline,
        "MAO_STEP": step.name,
    }
    env = {**(step.env or {}), **(step.private_env or {}), **identity}
    work = settings.data_dir / "work" / step.output_dataset / node_branch(step.name, settings.instance_name)
    scratch = settings.data_dir / "tmp" / _RUN_ID / f"{position}-input"
    return {
        "name": f"mao-{settings.instance_name}-{_RUN_ID[:12]}-{position}",
        "image": image,
        "cmd": step.cmd,
        "env": env,
        "output_dir": str(settings.host_path(work)),
        "input_dir": str(settings.host_path(scratch)) if step.input_dataset else None,
        "user": "{}:{}".format(*settings.tool_user()),
        "docker_socket": step.docker_socket,
        "timeout": step.timeout or settings.step_timeout,
        "labels": {"mao.run": _RUN_ID, "mao.step": step.name},
        **step_limits(step, settings),
    }


async def check_steps(
    pipeline: Pipeline, images: dict[str, str], settings: Settings, executor: ExecutorClient
) -> None:
    """Raise BadRequest naming the first step the executor would refuse; ExecutorUnavailable (503)
    when the executor cannot be asked."""
    for position, step in enumerate(pipeline.steps):
        request = representative_request(pipeline.name, position, step, images[step.tool], settings)
        size = len(json.dumps(request).encode())
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
            raise BadRequest(
                f"step {step.name!r} would be refused by the executor: {exc.message}", code="step_rejected"
            ) from exc
