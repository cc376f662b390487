"""A step's ``gpus`` (docs/backends.md#gpus), from the step field through the seam's ``Limits`` to what
each backend sends its engine, as pure functions over generated counts: the Docker create body
(DeviceRequests), the Swarm service spec (a generic resource), the sbatch arguments (``--gres``), the
Kubernetes pod (``nvidia.com/gpu`` limits); what each backend says it offers; and the
``MAO_BACKEND_<NAME>_GPUS`` setting, checked at start. The refusal through the API is
tests/integration/test_gpus.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import docker.errors
import pytest
import requests
from docker.models.containers import _create_container_args
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from executor.hardening import container_limits
from executor.wire.containers import SubmitRequest
from orchestrator.config import load_settings
from orchestrator.config.backends.kinds import parse_backends
from orchestrator.config.backends.kubernetes import KubernetesSettings
from orchestrator.config.backends.slurm import SlurmSettings
from orchestrator.config.backends.swarm import SwarmSettings
from orchestrator.domain.pipeline import MAX_GPUS, Step, Tool
from orchestrator.errors import ConfigError
from orchestrator.executors.docker import DockerBackend
from orchestrator.executors.kube_pod import job_body
from orchestrator.executors.seam import BackendRejected, ContainerSpec, Identity, Limits, OutputData
from orchestrator.executors.slurm_checks import capabilities_of
from orchestrator.executors.slurm_cli import parse_sinfo
from orchestrator.executors.slurm_command import run_arguments, sbatch_arguments
from orchestrator.executors.slurm_ends import SCRIPT
from orchestrator.executors.slurm_files import job_files
from orchestrator.executors.staging import StagedPaths
from orchestrator.executors.swarm_policy import Facts, SwarmPolicy
from orchestrator.executors.swarm_service import ServiceOptions, node_gpus, service_body
from orchestrator.pipelines.stepcheck import asked_for
from orchestrator.runs.spec import container_spec

counts = st.integers(0, MAX_GPUS)
some = st.integers(1, MAX_GPUS)


def spec(gpus: int, **fields: Any) -> ContainerSpec:
    values: dict[str, Any] = {
        "identity": Identity(instance="lab", pipeline="p", run="r1", step="s", position=0, attempt=1),
        "image": "tool:1",
        "output": OutputData(folder=Path("/data/w")),
        "user": (1000, 1000),
        "timeout": 60,
        "limits": Limits(memory=64 * 1024**2, cpus=1.0, pids=64, gpus=gpus),
    }
    values.update(fields)
    return ContainerSpec(**values)


def step(**fields: Any) -> Step:
    return Step.model_validate({"name": "s", "tool": "t", "output_dataset": "out", **fields})


# -- the step field ----------------------------------------------------------------------------------


@given(counts)
def test_the_step_field_reaches_the_seam(gpus: int) -> None:
    given_step = step(gpus=gpus)
    settings = load_settings({"MAO_DATA_DIR": "/tmp/mao-gpus", "MAO_ETCD_INSECURE": "1", "MAO_EXECUTOR_TOKEN": "t"})
    built = container_spec(
        settings, run_id="r", pipeline="p", position=0, step=given_step, attempt=1,
        tool=Tool(name="t", image="busybox"), workdir=Path("/tmp/mao-gpus/w"), input_dir=None,
    )  # fmt: skip
    assert built.limits.gpus == gpus
    assert ("gpus" in asked_for(given_step)) == (gpus > 0)
    # None asked: the step reads (and is stored, and compared between instances) as before GPUs.
    assert ("gpus" in given_step.public()) == (gpus > 0)


@given(
    st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=MAX_GPUS + 1),
        st.booleans(),
        st.floats(allow_nan=False),
        st.text(max_size=4),
        st.none(),
        st.lists(st.integers(), max_size=2),
    )
)
def test_anything_but_0_to_64_is_refused_naming_gpus(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        step(gpus=value)
    assert {error["loc"][0] for error in caught.value.errors()} == {"gpus"}


# -- docker: the executor's create body ----------------------------------------------------------------


@given(counts)
def test_docker_asks_the_engine_for_n_nvidia_gpus(gpus: int) -> None:
    backend = DockerBackend("local", "unix:///run/mao/x.sock", "t", lambda p: p, gpus=MAX_GPUS)
    request = backend.request(spec(gpus))
    # Sent only when asked: an executor older than GPUs takes the request unchanged.
    assert ("gpus" in request.model_dump(exclude_none=True)) == (gpus > 0)
    wire = SubmitRequest.model_validate_json(request.model_dump_json(exclude_none=True))
    body = _create_container_args({"image": "tool:1", "version": "1.41", **container_limits(wire)})
    host = body["host_config"]
    if gpus:
        assert host["DeviceRequests"] == [
            {"Driver": "nvidia", "Count": gpus, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
        ]
    else:
        assert "DeviceRequests" not in host
    # The trust rules hold with GPUs as without.
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"]


@settings(deadline=None)
@given(declared=counts, asked=some)
async def test_docker_offers_what_its_setting_declares(declared: int, asked: int) -> None:
    backend = DockerBackend("gpu-box", "unix:///run/mao/x.sock", "t", lambda p: p, gpus=declared)
    capabilities = backend.capabilities()
    assert capabilities.gpus == declared and ("gpus" in capabilities.enforces) == (declared > 0)
    if asked > declared:
        with pytest.raises(BackendRejected) as caught:
            await backend.validate(spec(asked))
        assert caught.value.field == "gpus" and caught.value.backend == "gpu-box"
        assert "MAO_BACKEND_GPU_BOX_GPUS" in caught.value.message


# -- swarm: the service spec ----------------------------------------------------------------------------

STAGED = StagedPaths(Path("/shared/x"), Path("/shared/x/input"), Path("/shared/x/output"))


@given(counts, st.booleans(), st.sampled_from(["NVIDIA-GPU", "gpu", "AMD.GPU"]))
def test_swarm_reserves_n_generic_resources(gpus: int, reserve: bool, kind: str) -> None:
    body = service_body(spec(gpus), "sha256:abc", STAGED, ServiceOptions(reserve_resources=reserve, gpu_resource=kind))
    resources = body["TaskTemplate"]["Resources"]
    generic = resources["Reservations"].get("GenericResources")
    # Swarm gives a task a generic resource only by reserving it: with or without RESERVE_RESOURCES.
    assert generic == ([{"DiscreteResourceSpec": {"Kind": kind, "Value": gpus}}] if gpus else None)
    assert ("MemoryBytes" in resources["Reservations"]) == reserve
    assert "GenericResources" not in resources["Limits"]


discrete = st.builds(lambda k, v: {"DiscreteResourceSpec": {"Kind": k, "Value": v}}, st.sampled_from(["NVIDIA-GPU", "FPGA"]), st.integers(0, 16))
named = st.builds(lambda k, u: {"NamedResourceSpec": {"Kind": k, "Value": f"GPU-{u.hex}"}}, st.sampled_from(["NVIDIA-GPU", "FPGA"]), st.uuids())


@given(st.lists(st.one_of(discrete, named), max_size=8))
def test_a_swarm_node_counts_its_generic_resources_of_the_gpu_kind(resources: list[dict[str, Any]]) -> None:
    node = {"Description": {"Resources": {"NanoCPUs": 2_000_000_000, "GenericResources": resources}}}
    expected = sum(
        r["DiscreteResourceSpec"]["Value"] if "DiscreteResourceSpec" in r else 1
        for r in resources
        if (r.get("DiscreteResourceSpec") or r.get("NamedResourceSpec") or {}).get("Kind") == "NVIDIA-GPU"
    )
    assert node_gpus(node, "NVIDIA-GPU") == expected
    assert node_gpus({"Description": {"Resources": {}}}, "NVIDIA-GPU") == 0


@given(declared=st.none() | counts, announced=counts)
def test_swarm_offers_the_setting_else_what_the_nodes_announce(
    tmp_path_factory: pytest.TempPathFactory, declared: int | None, announced: int
) -> None:
    values: dict[str, Any] = {"shared_root": str(tmp_path_factory.getbasetemp())}
    if declared is not None:
        values["gpus"] = declared
    policy = SwarmPolicy("gpu", SwarmSettings.model_validate(values), cast(Any, None), cast(Any, None))
    before = policy.capabilities()  # the engine not asked yet: only the setting; validate asks it
    assert before.gpus == declared and ("gpus" in before.enforces) == (declared != 0)
    policy._facts = Facts(0.0, True, 1, True, 2.0, "24.0.0", max_node_gpus=announced)
    capabilities = policy.capabilities()
    offered = declared if declared is not None else announced
    assert capabilities.gpus == offered and ("gpus" in capabilities.enforces) == (offered > 0)


# -- slurm: the sbatch arguments --------------------------------------------------------------------------


def sbatch(given_spec: ContainerSpec, configured: SlurmSettings) -> list[str]:
    files = job_files(configured.shared_root, given_spec.name)
    image = "sha256:" + "a" * 64
    run = run_arguments(
        given_spec, configured, image=image, input_folder=configured.shared_root / "i",
        output_folder=configured.shared_root / "o", env=files.env, cpus=1,
    )  # fmt: skip
    return sbatch_arguments(given_spec, configured, script=SCRIPT, files=files, run=run, image=image, cpus=1)


@given(counts, st.sampled_from(["docker", "podman"]))
def test_slurm_asks_for_n_gpus_as_generic_resources(gpus: int, runtime: str) -> None:
    configured = SlurmSettings.model_validate({"shared_root": "/tmp", "runtime": runtime})
    args = sbatch(spec(gpus), configured)
    script = args.index(str(SCRIPT))
    options, job = args[:script], args[script + 1 :]
    assert [o for o in options if o.startswith("--gres")] == ([f"--gres=gpu:{gpus}"] if gpus else [])
    # How the job hands the GPUs Slurm chose to the container (slurm_job.sh): by the runtime's way.
    assert job[3] == ({"docker": "docker", "podman": "cdi"}[runtime] if gpus else "none")


@given(st.lists(st.integers(0, 8), min_size=1, max_size=4))
def test_slurm_offers_the_partitions_largest_gpu_node(per_node: list[int]) -> None:
    lines = [
        f"p|p|up|infinite|n{i}|idle|8|16000|{f'gpu:{n}' if n else '(null)'}|(null)" for i, n in enumerate(per_node)
    ]
    facts = parse_sinfo("\n".join(lines), 0.0)
    capabilities = capabilities_of(SlurmSettings.model_validate({"shared_root": "/tmp", "partition": "p"}), facts)
    assert capabilities.gpus == max(per_node) and ("gpus" in capabilities.enforces) == (max(per_node) > 0)


# -- kubernetes: the pod -------------------------------------------------------------------------------------

KUBE = KubernetesSettings(staging_image="registry.lab/mao-staging:1", staging_url="http://mao.lab:8080")


@given(counts, st.sampled_from(["nvidia.com/gpu", "amd.com/gpu"]))
def test_kubernetes_limits_the_tool_container_to_n_gpus(gpus: int, resource: str) -> None:
    configured = KUBE.model_copy(update={"gpu_resource": resource})
    pod = job_body(spec(gpus), "lab", "tool:1", configured)["spec"]["template"]["spec"]
    every = [*pod.get("initContainers", []), *pod["containers"]]  # the tool runs between stage-in and -out
    tool = next(c for c in every if c["name"] == "tool")
    expected = str(gpus) if gpus else None
    assert tool["resources"]["limits"].get(resource) == expected
    assert tool["resources"]["requests"].get(resource) == expected
    # The staging containers never hold a GPU.
    for container in every:
        if container is not tool:
            assert resource not in container["resources"]["limits"]


# -- the setting ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["docker", "swarm", "kubernetes"])
@pytest.mark.parametrize("value", ["-1", "65", "two", "1.5"])
def test_a_gpus_setting_outside_0_to_64_is_a_problem_at_start(tmp_path: Path, kind: str, value: str) -> None:
    environ = {
        "MAO_BACKENDS": f"local=docker,box={kind}",
        "MAO_EXECUTOR_TOKEN": "t",
        "MAO_BACKEND_BOX_GPUS": value,
        "MAO_BACKEND_BOX_SHARED_ROOT": str(tmp_path),
        "MAO_BACKEND_BOX_STAGING_IMAGE": "registry.lab/mao-staging:1",
        "MAO_BACKEND_BOX_STAGING_URL": "http://mao.lab:8080",
    }
    for key in [k for k in environ if k.endswith(("SHARED_ROOT", "STAGING_IMAGE", "STAGING_URL"))]:
        if (kind == "swarm") != key.endswith("SHARED_ROOT") or (kind == "docker"):
            del environ[key]
    problems: list[str] = []
    parse_backends(environ.get, environ, problems)
    assert [p for p in problems if p.startswith("MAO_BACKEND_BOX_GPUS:")], problems


def test_the_local_executors_gpus_are_declared_and_built(tmp_path: Path) -> None:
    env = {"MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1", "MAO_EXECUTOR_TOKEN": "t", "MAO_BACKEND_LOCAL_GPUS": "2"}
    from orchestrator.executors.backends import Backends

    backend = Backends.build(load_settings(env)).get("local")
    assert isinstance(backend, DockerBackend) and backend.capabilities().gpus == 2
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, "MAO_BACKEND_LOCAL_GPUS": "99"})
    assert any("MAO_BACKEND_LOCAL_GPUS" in p for p in caught.value.problems)


def test_slurm_takes_gpu_steps_while_it_cannot_tell() -> None:
    """The controller not asked yet (or away): no refusal for want of GPUs; sbatch decides at submit."""
    capabilities = capabilities_of(SlurmSettings.model_validate({"shared_root": "/tmp"}), None)
    assert capabilities.gpus is None and "gpus" in capabilities.enforces


class _Refusing:
    """A container whose start the engine answers with ``status`` and ``text``."""

    name = "c1"

    def __init__(self, status: int, text: str) -> None:
        response = requests.models.Response()
        response.status_code, response.reason, response.url = status, "refused", "http://engine/start"
        self.error = docker.errors.APIError(text, response=response, explanation=text)

    def start(self) -> None:
        raise self.error


@given(
    st.sampled_from([400, 409, 500]),
    st.sampled_from(["", "OCI runtime create failed: ", 'could not select device driver "nvidia" with capabilities: [[gpu]] ']),
    st.text(max_size=20),
)
def test_an_engine_refusing_a_device_request_is_the_requests_fault(status: int, known: str, rest: str) -> None:
    """A start refused for want of a device driver (gpus on a host without the NVIDIA runtime) is a
    400 of the request, never retried as an engine failure; other 500s stay the engine's."""
    from executor.docker_runner import DockerRunner
    from executor.errors import DockerUnavailable
    from executor.wire.errors import BadRequest

    runner = DockerRunner(cast(Any, None))
    container = _Refusing(status, known + rest)
    expected: type[Exception] = BadRequest if status < 500 or known else DockerUnavailable
    with pytest.raises(expected) as caught:
        runner.start(cast(Any, container))
    if known.startswith("could not"):
        assert "NVIDIA runtime" in str(caught.value)
