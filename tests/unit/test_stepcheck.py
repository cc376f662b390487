"""Init's step check uses the run engine's own request builder (runs.attempt.container_request)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.domain.pipeline import Pipeline, Tool
from orchestrator.errors import BadRequest
from orchestrator.executors import ContainerRequest, StepRejected
from orchestrator.pipelines.stepcheck import check_steps, representative_request


class FakeExecutor:
    def __init__(self, refuse_image: str | None = None) -> None:
        self.seen: list[ContainerRequest] = []
        self.refuse_image = refuse_image

    async def validate(self, request: ContainerRequest) -> None:
        self.seen.append(request)
        if request.image == self.refuse_image:
            raise StepRejected("image not allowed")


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


def test_the_representative_request_is_the_engines(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    request = representative_request("p", 0, PIPELINE.steps[0], TOOLS["t"], settings)
    assert isinstance(request, ContainerRequest)
    assert request.user == "{}:{}".format(*settings.tool_user())
    if os.getuid() == 0:
        assert request.user == "2000:3000"
    assert (request.memory, request.cpus, request.pids) == (256 * 2**20, 1.0, settings.step_pids)
    assert request.env is not None and request.env["MAO_ATTEMPT"] == "3" and request.env["MAO_TOOL"] == "t"
    shard = representative_request("p", 1, PIPELINE.steps[1], TOOLS["t"], settings)
    assert shard.cpus == 2.0 and shard.env is not None and "MAO_SHARD_COUNT" in shard.env
    assert (
        shard.input_dir is not None and shard.name is not None and shard.name.endswith(shard.env["MAO_SHARD"])
    )


async def test_every_tool_of_every_step_is_checked_fallback_included(tmp_path: Path) -> None:
    executor = FakeExecutor()
    await check_steps(PIPELINE, TOOLS, _settings(tmp_path), executor)  # type: ignore[arg-type]
    assert [(r.labels or {}).get("mao.step") for r in executor.seen] == ["a", "a", "b"]
    assert [r.image for r in executor.seen] == ["busybox:1", "busybox:2", "busybox:1"]
    with pytest.raises(BadRequest, match="fallback tool 'rescue'"):
        await check_steps(PIPELINE, TOOLS, _settings(tmp_path), FakeExecutor("busybox:2"))  # type: ignore[arg-type]
