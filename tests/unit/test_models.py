import pytest
from pydantic import ValidationError

from orchestrator.domain.pipeline import PRIVATE_PLACEHOLDER, Pipeline, Tool
from orchestrator.request_models import DatasetRequest


def step(**over: object) -> dict[str, object]:
    return {
        "name": "acquisition",
        "tool": "busybox",
        "input_dataset": None,
        "output_dataset": "ds",
        "env": None,
        "cmd": None,
        "docker_socket": False,
        **over,
    }


def test_prototype_pipeline_body_parses() -> None:
    body = {
        "name": "pipeline1",
        "steps": [step(env={"DEMO_TOOL_ENV": "foo.bar.env"}, cmd=["sh", "-c", "sleep 10"])],
    }
    pipeline = Pipeline.model_validate(body)
    assert pipeline.steps[0].env == {"DEMO_TOOL_ENV": "foo.bar.env"}
    assert pipeline.tools() == ["busybox"] and pipeline.datasets() == ["ds"]


def test_dataset_body_wrapper_and_flat_form() -> None:
    wrapped = DatasetRequest.model_validate({"name": "d", "body": {"master": "git-link", "nodes": []}}).dataset()
    flat = DatasetRequest.model_validate({"name": "d", "master": "/srv/repos/d.git"}).dataset()
    assert wrapped.master == "git-link" and flat.nodes == []


@pytest.mark.parametrize("master", ["-uevil", "ext::sh -c touch% /tmp/pwned", "a b", ""])
def test_dangerous_masters_are_refused(master: str) -> None:
    with pytest.raises(ValidationError):
        DatasetRequest.model_validate({"name": "d", "body": {"master": master}})


@pytest.mark.parametrize(
    "bad",
    [
        step(name="../x"),
        step(tool="-x"),
        step(env={"BAD KEY": "v"}),
        step(cmd="sh -c 'echo'"),
        step(timeout=-1),
        step(output_dataset=None),
    ],
)
def test_bad_steps_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Pipeline.model_validate({"name": "p", "steps": [bad]})


def test_duplicate_step_names_and_empty_pipelines() -> None:
    with pytest.raises(ValidationError, match="unique"):
        Pipeline.model_validate({"name": "p", "steps": [step(), step()]})
    with pytest.raises(ValidationError):
        Pipeline.model_validate({"name": "p", "steps": []})


def test_env_scalars_become_strings() -> None:
    pipeline = Pipeline.model_validate({"name": "p", "steps": [step(env={"N": 3, "F": True})]})
    assert pipeline.steps[0].env == {"N": "3", "F": "true"}


def test_private_values_never_in_public_form() -> None:
    pipeline = Pipeline.model_validate(
        {"name": "p", "steps": [step(env={"TOKEN": PRIVATE_PLACEHOLDER}, private_env={"TOKEN": "s3cret"})]}
    )
    assert pipeline.missing_private_values() == []
    assert "s3cret" not in str(pipeline.public_steps())
    missing = Pipeline.model_validate({"name": "p", "steps": [step(env={"TOKEN": PRIVATE_PLACEHOLDER})]})
    assert missing.missing_private_values() == ["acquisition.TOKEN"]


def test_tool_image_validated() -> None:
    Tool.model_validate({"name": "t", "image": "registry.example.org:5000/org/tool:1.2@sha256:abc"})
    with pytest.raises(ValidationError):
        Tool.model_validate({"name": "t", "image": "--privileged"})
