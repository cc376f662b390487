"""The Kubernetes backend's pure pieces: the Job and Secret it sends (for generated specs: hardened,
no token or private value where the tool or a reader of the Job could see it, valid labels), how each
way a pod ends maps to the seam's ends, the settings, and the log copy's resume bookkeeping over
generated streams that drop anywhere."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.config.backends.kubernetes import KubernetesSettings
from orchestrator.executors.kube_logs import _Resume, split_record
from orchestrator.executors.kube_pod import (
    STAGE_IN,
    STAGE_OUT,
    TOOL,
    job_body,
    label_value,
    secret_body,
)
from orchestrator.executors.kube_status import Job, Pod, Progress, Verdict, end_of, verdict
from orchestrator.executors.seam import (
    INPUT_MOUNT,
    OUTPUT_MOUNT,
    ContainerSpec,
    EndKind,
    Identity,
    Limits,
    OutputData,
)

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SETTINGS = KubernetesSettings(staging_image="registry.lab/mao-staging:1", staging_url="http://mao.lab:8080", namespace="mao")

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", fullmatch=True)
env_keys = st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True)
values = st.uuids().map(lambda u: f"value-{u.hex}")  # distinct: none is a part of another


@st.composite
def specs(draw: st.DrawFn) -> ContainerSpec:
    env = draw(st.dictionaries(env_keys, values, max_size=5))
    private = draw(st.sets(st.sampled_from(sorted(env)), max_size=len(env))) if env else set()
    return ContainerSpec(
        identity=Identity(
            instance=draw(names), pipeline=draw(names), run=draw(names), step=draw(names),
            position=draw(st.integers(0, 50)), attempt=draw(st.integers(1, 20)),
            shard=draw(st.none() | st.integers(0, 500)),
        ),  # fmt: skip
        image="busybox",
        cmd=draw(st.none() | st.lists(st.text(max_size=10).filter(lambda s: "\0" not in s), max_size=3)),
        env=env,
        secrets=frozenset(private),
        output=OutputData(folder=Path("/w")),
        user=(draw(st.integers(1, 65535)), draw(st.integers(1, 65535))),
        limits=Limits(memory=draw(st.none() | st.integers(4 * 1024**2, 8 * 1024**3)), cpus=draw(st.none() | st.floats(0.01, 32)), gpus=draw(st.integers(0, 8))),
        timeout=draw(st.floats(1, 86400)),
        placement=draw(st.dictionaries(st.from_regex(r"[a-z][a-z0-9.]{0,10}", fullmatch=True), st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True), max_size=2)),
    )


@settings(max_examples=60, deadline=None)
@given(specs())
def test_every_job_is_hardened_and_holds_no_secret(spec: ContainerSpec) -> None:
    body = job_body(spec, "lab", spec.image, SETTINGS)
    text = json.dumps(body)
    public = {value for key, value in spec.env.items() if key not in spec.secrets}
    for key in spec.secrets:
        if spec.env[key] not in public:  # a value also given openly is open anyway
            assert json.dumps(spec.env[key])[1:-1] not in text, key  # a private value: only in the Secret
    job_spec = body["spec"]
    assert job_spec["backoffLimit"] == 0 and job_spec["activeDeadlineSeconds"] >= spec.timeout
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    containers = {c["name"]: c for c in pod["initContainers"] + pod["containers"]}
    assert [c["name"] for c in pod["initContainers"]] == [STAGE_IN, TOOL] and list(containers)[-1] == STAGE_OUT
    for container in containers.values():
        context = container["securityContext"]
        assert context["runAsUser"] == spec.user[0] != 0 and context["runAsNonRoot"] is True
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not any("docker.sock" in json.dumps(m) for m in container["volumeMounts"])
    tool = containers[TOOL]
    assert "ticket" not in {m["name"] for m in tool["volumeMounts"]}  # the tool never holds a token
    assert {m["mountPath"]: m.get("readOnly", False) for m in tool["volumeMounts"]} == {INPUT_MOUNT: True, OUTPUT_MOUNT: False, "/tmp": False}
    assert tool.get("args") == spec.cmd and "command" not in tool
    limits = tool["resources"]["limits"]
    assert limits.get("nvidia.com/gpu") == (str(spec.limits.gpus) if spec.limits.gpus else None)
    assert limits.get("memory") == (str(spec.limits.memory) if spec.limits.memory else None)
    for labels in (body["metadata"]["labels"], job_spec["template"]["metadata"]["labels"]):
        assert all(len(v) <= 63 and LABEL_VALUE.fullmatch(v) for v in labels.values())
    assert body["metadata"]["annotations"] == spec.all_labels()  # the identity in full
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"] == str(SETTINGS.tmp_size)
    secret = secret_body(spec, "lab", "mao", "in-token", "out-token")
    assert secret["stringData"]["input"] == "in-token" and set(secret["stringData"]) == {"input", "output"} | {f"env.{k}" for k in spec.secrets}


@given(st.text(max_size=200))
def test_label_values_are_valid_and_stable(value: str) -> None:
    label = label_value(value)
    assert len(label) <= 63 and LABEL_VALUE.fullmatch(label)
    assert label_value(value) == label
    if len(value) <= 63 and LABEL_VALUE.fullmatch(value):
        assert label == value


def test_settings_refuse_what_cannot_work(tmp_path: Path) -> None:
    base = {"staging_image": "x", "staging_url": "http://mao:8080"}
    for bad in (
        {"staging_url": "https://mao:8080"},  # the busybox stage-out has no TLS
        {"staging_url": "http://user:pw@mao:8080"},
        {"namespace": "Not_A_Name"},
        {"in_cluster": True, "kubeconfig": str(tmp_path)},
        {"kubeconfig": str(tmp_path / "missing")},
        {"gpu_resource": "gpu"},
        {"tmp_size": "lots"},
        {"surprise": 1},
    ):
        with pytest.raises(ValidationError):
            KubernetesSettings.model_validate({**base, **bad})
    ok = KubernetesSettings.model_validate({**base, "tmp_size": "128m", "staging_url": "http://mao:8080/"})
    assert ok.tmp_size == 128 * 1024**2 and ok.staging_url == "http://mao:8080"


# -- ends -----------------------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(*conditions: tuple[str, str]) -> Job:
    return Job.model_validate(
        {"metadata": {"name": "j", "uid": "u", "creationTimestamp": T0.isoformat()},
         "status": {"conditions": [{"type": t, "status": "True", "reason": r} for t, r in conditions]}}
    )  # fmt: skip


def state(kind: str, **fields: object) -> dict:
    return {kind: fields}


def pod(*, init: dict | None = None, main: dict | None = None, **status: object) -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": "j-abcde", "labels": {"job-name": "j"}},
            "spec": {"nodeName": "node-1"},
            "status": {
                "initContainerStatuses": [{"name": n, "state": s} for n, s in (init or {}).items()],
                "containerStatuses": [{"name": n, "state": s} for n, s in (main or {}).items()],
                **status,
            },
        }
    )


DONE = state("terminated", exitCode=0, reason="Completed")


@pytest.mark.parametrize(
    ("the_job", "the_pod", "seen", "kind"),
    [
        (job(), pod(init={STAGE_IN: DONE, TOOL: DONE}, main={STAGE_OUT: DONE}), True, EndKind.COMPLETED),
        (job(), pod(init={STAGE_IN: DONE, TOOL: state("terminated", exitCode=3, reason="Error")}), True, EndKind.FAILED),
        (job(), pod(init={STAGE_IN: DONE, TOOL: state("terminated", exitCode=137, reason="OOMKilled")}), True, EndKind.OOM_KILLED),
        (job(), pod(init={STAGE_IN: DONE, TOOL: state("waiting", reason="ImagePullBackOff")}), True, EndKind.IMAGE_UNAVAILABLE),
        (job(), pod(init={STAGE_IN: state("waiting", reason="ErrImagePull")}), True, EndKind.IMAGE_UNAVAILABLE),
        (job(), pod(init={STAGE_IN: state("terminated", exitCode=1)}, phase="Failed"), True, EndKind.LOST),
        (job(), pod(init={STAGE_IN: DONE, TOOL: DONE}, main={STAGE_OUT: state("terminated", exitCode=1)}), True, EndKind.LOST),
        (job(), pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory."), True, EndKind.NODE_LOST),
        (job(("Failed", "DeadlineExceeded")), None, True, EndKind.TIMED_OUT),
        (job(("Failed", "BackoffLimitExceeded")), None, True, EndKind.NODE_LOST),
        (job(), None, True, EndKind.NODE_LOST),  # the pod deleted from outside
        (None, None, True, EndKind.NODE_LOST),  # the Job deleted from outside
        (job(), pod(init={TOOL: state("waiting", reason="CreateContainerConfigError")}), True, EndKind.LOST),
    ],
)
def test_each_way_a_pod_ends(the_job: Job | None, the_pod: Pod | None, seen: bool, kind: EndKind) -> None:
    found = verdict(the_job, the_pod, pod_seen=seen)
    assert isinstance(found, Verdict) and found.kind is kind, found
    assert found.message or kind is EndKind.COMPLETED


@settings(max_examples=200)
@given(
    scheme=st.sampled_from(["", "docker://", "docker-pullable://", "containerd://", "cri-o://"]),
    repo=st.sampled_from(["", "busybox@", "docker.io/library/busybox@", "registry.lab:5000/a/b@"]),
    digest=st.text("0123456789abcdef", min_size=64, max_size=64),
)
def test_the_image_a_pod_ran_is_its_content_address_whatever_the_runtime(scheme: str, repo: str, digest: str) -> None:
    """Provenance and the cache record the same kind of id on every backend: ``sha256:<id>`` or
    ``<repo>@sha256:<digest>``, never the runtime's scheme in front of it."""
    address = f"{repo}sha256:{digest}"
    ran = Pod.model_validate(
        {"metadata": {"name": "j-abcde"}, "spec": {"nodeName": "node-1"},
         "status": {"phase": "Succeeded", "initContainerStatuses": [
             {"name": STAGE_IN, "state": DONE}, {"name": TOOL, "state": DONE, "imageID": scheme + address}]}}
    )  # fmt: skip
    end = end_of(EndKind.COMPLETED, "", job(("Complete", "")), ran, exit_code=0, log_tail="")
    assert end.image_id == address, end


def test_what_is_still_going() -> None:
    unschedulable = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}])
    found = verdict(job(), unschedulable, pod_seen=True)
    assert isinstance(found, Progress) and found.tool_started is None and "Unschedulable: 0/3 nodes" == found.waiting_reason
    running = pod(init={STAGE_IN: DONE, TOOL: state("running", startedAt=T0.isoformat())})
    found = verdict(job(), running, pod_seen=True)
    assert isinstance(found, Progress) and found.tool_started == T0
    assert isinstance(verdict(job(), None, pod_seen=False), Progress)  # no pod yet
    going = Pod.model_validate({**running.model_dump(by_alias=True, mode="json"), "metadata": {"name": "x", "deletionTimestamp": T0.isoformat()}})
    assert isinstance(verdict(job(), going, pod_seen=True), Progress)  # its deletion decides, once it is gone


# -- the log copy's resume bookkeeping -------------------------------------------------------------------


@st.composite
def logs_and_cuts(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """A log whose lines share whole seconds and even exact stamps, and where streams drop."""
    lines, moment = [], T0
    for index in range(draw(st.integers(1, 60))):
        moment += timedelta(microseconds=draw(st.sampled_from([0, 0, 1, 500_000, 1_000_000, 2_300_000])))
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".") + "Z"
        lines.append(f"{stamp} line {index}\n".encode())
    cuts = draw(st.lists(st.integers(0, len(lines)), max_size=8))
    return lines, cuts


def _stream_from(lines: list[bytes], since: str | None) -> list[bytes]:
    """What the API sends for ``sinceTime``: every line of that whole second and later."""
    if since is None:
        return list(lines)
    start = datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return [r for r in lines if _time(split_record(r)[0]) >= start]


def _time(stamp: bytes) -> datetime:
    text = stamp.decode().rstrip("Z")
    head, _, fraction = text.partition(".")
    return datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC) + timedelta(microseconds=int((fraction + "000000")[:6]))


@settings(max_examples=300, deadline=None)
@given(logs_and_cuts())
def test_a_log_resumed_after_drops_loses_and_doubles_nothing(case: tuple[list[bytes], list[int]]) -> None:
    lines, cuts = case
    kept: list[bytes] = []
    resume = _Resume()
    for cut in [*cuts, len(lines) + 1]:  # each stream drops after ``cut`` lines of what it sends
        since = resume.start()
        for record in _stream_from(lines, since)[:cut]:
            if resume.keep(split_record(record)[0]):
                kept.append(record)
    assert kept == lines


@settings(max_examples=200, deadline=None)
@given(logs_and_cuts(), st.randoms(use_true_random=False))
def test_lines_of_one_stream_out_of_stamp_order_are_all_kept(case: tuple[list[bytes], list[int]], rnd: Any) -> None:
    """stdout and stderr are copied apart and stamped when read: one stream may bring a line
    stamped before the one it brought last (seen: "err" before "out"); it is new all the same."""
    lines, _ = case
    shuffled = list(lines)
    rnd.shuffle(shuffled)
    resume = _Resume()
    resume.start()
    assert [r for r in shuffled if resume.keep(split_record(r)[0])] == shuffled


def test_every_kubernetes_setting_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "backends.md").read_text()
    missing = [key.upper() for key in KubernetesSettings.model_fields if f"`{key.upper()}`" not in docs]
    assert not missing, f"add these keys to docs/backends.md: {missing}"


def test_an_instance_builds_its_backend_where_its_staging_routes_look(tmp_path: Path) -> None:
    from orchestrator.api.staging import STAGING
    from orchestrator.app import create_app
    from orchestrator.config import load_settings
    from orchestrator.executors.kubernetes import from_instance

    instance = load_settings({"MAO_EXECUTOR_TOKEN": "x" * 16, "MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1"})
    backend = from_instance("lab", SETTINGS, instance)
    assert backend.exchange.root == create_app(instance)[STAGING].root == tmp_path / "staging"
    assert backend.exchange.max_output_bytes == instance.step_max_output
    assert backend.capabilities().kind == "kubernetes" and "gpus" in backend.capabilities().enforces
