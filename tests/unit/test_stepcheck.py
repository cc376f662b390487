"""Init's step check uses the run engine's own spec builder (runs.spec.container_spec), and refuses a
field the chosen backend cannot enforce (Capabilities.enforces), naming the field and the backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.domain.pipeline import Pipeline, Tool
from orchestrator.errors import BadRequest
from orchestrator.executors.backends import Backends
from orchestrator.executors.seam import BackendRejected, Capabilities, ContainerSpec, DataMode
from orchestrator.pipelines.stepcheck import check_steps, representative_spec


class FakeBackend:
    name = "local"

    def __init__(self, refuse_image: str | None = None, enforces: frozenset[str] | None = None) -> None:
        self.seen: list[ContainerSpec] = []
        self.refuse_image = refuse_image
        self.enforces = enforces if enforces is not None else frozenset({"memory", "cpus", "pids"})

    def capabilities(self) -> Capabilities:
        return Capabilities(kind="fake", data_modes=frozenset({DataMode.LOCAL}), enforces=self.enforces)

    async def validate(self, spec: ContainerSpec) -> None:
        self.seen.append(spec)
        if spec.image == self.refuse_image:
            raise BackendRejected(self.name, "step", "image not allowed")


def _backends(backend: FakeBackend) -> Backends:
    return Backends({"local": backend}, "local", {"local": "fake"})  # type: ignore[dict-item]


def _settings(tmp_path: Path):
    return load_settings(
        {
            "MAO_EXECUTOR_TOKEN": "t",
            "MAO_DATA_DIR": str(tmp_path),
            "MAO_ETCD_INSECURE": "1",
            "MAO_TOOL_UID": "2000",
            "MAO_TOOL_GID": "3000",
            "MAO_STEP_MEMORY": "256m",
        }
    )


TOOLS = {"t": Tool(name="t", image="busybox:1"), "rescue": Tool(name="rescue", image="busybox:2")}
PIPELINE = Pipeline.model_validate(
    {
        "name": "p",
        "steps": [
            {"name": "a", "tool": "t", "output_dataset": "d", "fallback_tool": "rescue", "retries": 2},
            {
                "name": "b",
                "tool": "t",
                "input_dataset": "d",
                "output_dataset": "e",
                "cpus": 2,
                "fan_out": {"glob": "*.txt"},
            },
        ],
    }
)


def test_the_representative_spec_is_the_engines(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    spec = representative_spec("p", 0, PIPELINE.steps[0], TOOLS["t"], settings)
    assert spec.user == settings.tool_user()
    if os.getuid() == 0:
        assert spec.user == (2000, 3000)
    assert (spec.limits.memory, spec.limits.cpus, spec.limits.pids) == (256 * 2**20, 1.0, settings.step_pids)
    assert spec.env["MAO_ATTEMPT"] == "3" and spec.env["MAO_TOOL"] == "t"
    assert spec.all_labels()["mao.step"] == "a" and spec.all_labels()["mao.instance"] == settings.instance_name
    shard = representative_spec("p", 1, PIPELINE.steps[1], TOOLS["t"], settings)
    assert shard.limits.cpus == 2.0 and "MAO_SHARD_COUNT" in shard.env
    assert shard.input is not None and shard.name.endswith(f"-s{shard.env['MAO_SHARD']}")


async def test_every_tool_of_every_step_is_checked_fallback_included(tmp_path: Path) -> None:
    backend = FakeBackend()
    await check_steps(PIPELINE, TOOLS, _settings(tmp_path), _backends(backend))
    assert [s.identity.step for s in backend.seen] == ["a", "a", "b"]
    assert [s.image for s in backend.seen] == ["busybox:1", "busybox:2", "busybox:1"]
    with pytest.raises(BadRequest, match="fallback tool 'rescue'"):
        await check_steps(PIPELINE, TOOLS, _settings(tmp_path), _backends(FakeBackend("busybox:2")))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory", "512m"),
        ("cpus", 2.0),
        ("docker_socket", True),
        ("placement", {"labels": {"gpu": "yes"}}),
        ("start_timeout", 30.0),
    ],
)
async def test_a_field_the_backend_cannot_enforce_is_a_400_naming_it(tmp_path: Path, field: str, value: object) -> None:
    pipeline = Pipeline.model_validate(
        {"name": "p", "steps": [{"name": "a", "tool": "t", "output_dataset": "d", field: value}]}
    )
    with pytest.raises(BadRequest) as caught:
        await check_steps(pipeline, TOOLS, _settings(tmp_path), _backends(FakeBackend(enforces=frozenset())))
    assert caught.value.code == "backend_cannot_enforce" and caught.value.extra["field"] == field
    assert field in caught.value.message and "local" in caught.value.message
    # A backend that enforces it takes it.
    await check_steps(pipeline, TOOLS, _settings(tmp_path), _backends(FakeBackend(enforces=frozenset({field}))))


async def test_an_unknown_backend_is_a_400(tmp_path: Path) -> None:
    pipeline = Pipeline.model_validate(
        {"name": "p", "steps": [{"name": "a", "tool": "t", "output_dataset": "d", "backend": "nowhere"}]}
    )
    with pytest.raises(BadRequest) as caught:
        await check_steps(pipeline, TOOLS, _settings(tmp_path), _backends(FakeBackend()))
    assert caught.value.code == "unknown_backend" and "nowhere" in caught.value.message
