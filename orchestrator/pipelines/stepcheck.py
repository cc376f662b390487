"""Init-time check of every step, as its backend will check it when the step runs.

A step that can never run is refused at ``POST /pipeline/init`` with a 400 naming the step, instead
of failing every run later:
- a ``backend`` that is not one of ``MAO_BACKENDS``: ``unknown_backend``;
- a field whose promise the chosen backend cannot keep (``Capabilities.enforces``: ``memory``,
  ``cpus``, ``docker_socket``, ``placement``, ``start_timeout``, ``gpus``): ``backend_cannot_enforce``,
  naming the field and the backend, never a weaker run;
- what the backend itself refuses (``Backend.validate``: NUL in cmd or env, a request over the
  executor's size limit, the Docker socket for an image not on the executor's allow-list, a root
  user): ``step_rejected`` (``step_too_large`` for the size).
The spec checked is built by the run engine's own builder (``runs.spec.container_spec``), with the
largest values a run can give it (run id, last attempt, last shard, the longest folder paths),
once for the step's tool and once for its fallback tool, so the backend's rules live in one place.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from ..domain.fanout import MAX_SHARDS
from ..domain.pipeline import Pipeline, Step, Tool, node_branch
from ..errors import BadRequest
from ..executors.backends import Backends, UnknownBackend
from ..executors.seam import Backend, BackendRejected, ContainerSpec
from ..runs.spec import backend_of, container_spec

_RUN_ID = "0" * 32
_COMMIT = "0" * 40


def representative_spec(pipeline: str, position: int, step: Step, tool: Tool, settings: Settings) -> ContainerSpec:
    """A spec as large as any the engine will submit for this step with ``tool``."""
    attempt = step.retries + 1
    scratch = settings.data_dir / "tmp" / _RUN_ID
    extra_env: dict[str, str] = {}
    shard = None
    workdir: Path = (
        settings.data_dir / "work" / step.output_dataset / node_branch(step.name, settings.instance_name)
    )
    input_dir: Path | None = scratch / f"{position}-{attempt}" if step.input_dataset else None
    if step.fan_out is not None:
        shard = MAX_SHARDS - 1
        folder = scratch / f"{position}-fan-{attempt}" / "shards" / str(shard)
        extra_env = {"MAO_SHARD": str(shard), "MAO_SHARD_COUNT": str(MAX_SHARDS)}
        workdir, input_dir = folder / f"output-{attempt}", folder / "input"
    return container_spec(
        settings,
        run_id=_RUN_ID,
        pipeline=pipeline,
        position=position,
        step=step,
        attempt=attempt,
        tool=tool,
        workdir=workdir,
        input_dir=input_dir,
        input_commit=_COMMIT if input_dir is not None else None,
        shard=shard,
        extra_env=extra_env,
    )


def asked_for(step: Step) -> list[str]:
    """The step's fields that ask a backend to enforce something (``Capabilities.enforces``)."""
    fields = {
        "memory": step.memory is not None,
        "cpus": step.cpus is not None,
        "docker_socket": step.docker_socket,
        "placement": step.placement is not None,
        "start_timeout": step.start_timeout is not None,
        "gpus": step.gpus > 0,
    }
    return [name for name, given in fields.items() if given]


def backend_for(step: Step, settings: Settings, backends: Backends) -> Backend:
    """The step's backend; UnknownBackend (400) naming the step when the instance has none such."""
    name = backend_of(step, settings)
    try:
        return backends.get(name)
    except UnknownBackend as exc:
        raise UnknownBackend(f"step {step.name!r}: {exc.message}", backend=name, step=step.name) from None


def check_enforced(pipeline: Pipeline, settings: Settings, backends: Backends) -> None:
    """Raise BadRequest ``backend_cannot_enforce`` naming the first step that sets a field its backend
    cannot enforce now (its ``Capabilities``). At init, and again before a run: a backend's
    capabilities can change between the two (its ``GPUS`` setting, a cluster's GPU nodes)."""
    for step in pipeline.steps:
        backend = backend_for(step, settings, backends)
        name = backend.name
        enforced = backend.capabilities().enforces
        for field in asked_for(step):
            if field not in enforced:
                # A backend that cannot give GPUs offers none: say so, and where they are declared.
                why = " (it offers no GPUs: docs/backends.md#gpus)" if field == "gpus" else ""
                raise BadRequest(
                    f"step {step.name!r} sets {field}, which backend {name} ({backends.kinds[name]}) "
                    f"cannot enforce{why}; choose another backend or leave {field} out",
                    code="backend_cannot_enforce",
                    step=step.name,
                    field=field,
                    backend=name,
                )


async def check_steps(pipeline: Pipeline, tools: dict[str, Tool], settings: Settings, backends: Backends) -> None:
    """Raise BadRequest naming the first step its backend would refuse; a 503 when the backend
    cannot be asked."""
    check_enforced(pipeline, settings, backends)
    for position, step in enumerate(pipeline.steps):
        backend = backend_for(step, settings, backends)
        for tool_name in step.tools():
            spec = representative_spec(pipeline.name, position, step, tools[tool_name], settings)
            try:
                await backend.validate(spec)
            except BackendRejected as exc:
                what = f"step {step.name!r}" + (f" (fallback tool {tool_name!r})" if tool_name != step.tool else "")
                raise BadRequest(
                    f"{what} would be refused by backend {exc.backend} ({exc.field}): {exc.message}",
                    code=exc.code,
                    step=step.name,
                    field=exc.field,
                    backend=exc.backend,
                ) from exc
