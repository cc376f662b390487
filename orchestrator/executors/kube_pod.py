"""What the Kubernetes objects of one attempt look like: the Job, its pod, and the Secret that carries
the attempt's private values and staging tickets. Pure functions (no I/O), so each rule is tested
without a cluster.

The pod runs three containers, one after the other, so that nothing of the tool overlaps with a
staging ticket and a failed tool uploads nothing:

1. ``stage-in`` (init container, the staging image): fetches the input tarball with its ticket and
   unpacks it into the ``input`` and ``data`` emptyDirs;
2. ``tool`` (init container, the step's image): the step, with ``input`` read-only at INPUT_MOUNT and
   ``data`` at OUTPUT_MOUNT. An init container that fails fails the pod (``restartPolicy: Never``), so
   the last container only ever starts after the tool exited 0;
3. ``stage-out`` (the pod's container, the staging image): tars ``data`` and uploads it with its ticket.

The tickets are files of a Secret volume mounted into the two staging containers only; the tool gets
its private env values from the same Secret (``secretKeyRef``: not in the pod spec) and no mount of it.
No container gets the service account's token, every one runs as MAO's uid with no capability, no
privilege escalation, a read-only root file system (``/tmp`` an emptyDir bounded by ``sizeLimit``) and
the runtime's default seccomp profile.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from .kube_settings import KubernetesSettings
from .seam import INPUT_MOUNT, MANAGED_LABEL, OUTPUT_MOUNT, ContainerSpec

Json = dict[str, Any]
STAGE_IN = "stage-in"
TOOL = "tool"
STAGE_OUT = "stage-out"
BACKEND_LABEL = "mao.backend"
JOB_NAME_LABEL = "job-name"  # set by the Job controller on its pods
STAGE = "/mao/stage"
TICKET = "/mao/ticket"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# Constant scripts: every value comes in through the environment, nothing is spliced into them.
# The orchestrator may be away for a moment (restarting, and then adopting this pod): before a
# transfer, each script waits for its liveness answer (``GET /``, no token) for up to
# $MAO_STAGING_WAIT seconds (the backend's STAGING_WAIT). Never a retry of the transfer itself: its
# ticket is single-use, spent when the orchestrator starts serving it, and a refused connection
# spent nothing.
_WAIT_FOR_ORCHESTRATOR = """wait_for_orchestrator() {
  rest=${1#http://}
  base="http://${rest%%/*}/"
  waited=0
  until wget -q -O /dev/null "$base" 2>/dev/null; do
    if [ "$waited" -ge "${MAO_STAGING_WAIT%.*}" ]; then
      echo "$2: wget $base: the orchestrator did not answer for $waited s"
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}
"""
STAGE_IN_SCRIPT = """set -eu
set -o pipefail
""" + _WAIT_FOR_ORCHESTRATOR + """wait_for_orchestrator "$MAO_STAGING_INPUT_URL" stage-in
token=$(cat /mao/ticket/input)
wget -q -O - --header "Authorization: Bearer $token" "$MAO_STAGING_INPUT_URL" | tar -x -o -f - -C /mao/stage
echo "stage-in: input and work folder in place"
"""
# busybox wget cannot PUT (and its --post-file stops at the first NUL byte), so the upload is a
# hand-made HTTP/1.1 request through nc; the tarball is made twice (once to count it: Content-Length)
# rather than stored, so no scratch space or memory grows with the output. ``nc -e`` runs the sender
# on the connection itself: the request goes out and the answer comes back without the half-close
# plain nc does at the end of its input (which the orchestrator's server takes for a lost connection).
STAGE_OUT_SCRIPT = """set -eu
""" + _WAIT_FOR_ORCHESTRATOR + """wait_for_orchestrator "$MAO_STAGING_OUTPUT_URL" stage-out
rest=${MAO_STAGING_OUTPUT_URL#http://}
MAO_HOST=${rest%%/*}
MAO_PATH=/${rest#*/}
case $MAO_HOST in *:*) host=${MAO_HOST%:*}; port=${MAO_HOST##*:};; *) host=$MAO_HOST; port=80;; esac
MAO_SIZE=$(tar -c -f - -C /mao/stage/data . | wc -c)
MAO_TOKEN=$(cat /mao/ticket/output)
export MAO_HOST MAO_PATH MAO_SIZE MAO_TOKEN
answer=$(nc -w 60 "$host" "$port" -e sh -c 'printf "PUT %s HTTP/1.1\\r\\nHost: %s\\r\\nAuthorization: Bearer %s\\r\\nContent-Type: application/x-tar\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n" "$MAO_PATH" "$MAO_HOST" "$MAO_TOKEN" "$MAO_SIZE"; tar -c -f - -C /mao/stage/data .; cat >&2' 2>&1)
status=$(printf '%s\\n' "$answer" | head -n 1)
case $status in
  "HTTP/1.1 200"*) echo "stage-out: $MAO_SIZE bytes uploaded" ;;
  *) echo "stage-out: the orchestrator refused the output: $status"; printf '%s\\n' "$answer" | tail -n 1; exit 1 ;;
esac
"""


def label_value(value: str) -> str:
    """``value`` as a label value (at most 63 characters of a restricted set): itself when it fits,
    else a stable hash (the full value is in the object's annotations)."""
    if len(value) <= 63 and _LABEL_VALUE.fullmatch(value):
        return value
    return "h-" + hashlib.sha256(value.encode()).hexdigest()[:40]


def object_labels(spec: ContainerSpec, backend: str) -> dict[str, str]:
    return {key: label_value(value) for key, value in {**spec.all_labels(), BACKEND_LABEL: backend}.items()}


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={label_value(value)}" for key, value in sorted(labels.items()))


def managed_selector(instance: str | None = None) -> str:
    labels = {MANAGED_LABEL: "true"}
    if instance is not None:
        labels["mao.instance"] = instance
    return selector(labels)


def env_key_problem(key: str) -> str | None:
    if not _ENV_KEY.fullmatch(key):
        return f"env: {key!r} cannot be a key of a Kubernetes Secret (letters, digits, '-', '_', '.')"
    return None


def secret_body(spec: ContainerSpec, backend: str, namespace: str, input_token: str, output_token: str) -> Json:
    data = {"input": input_token, "output": output_token}
    data.update({f"env.{key}": spec.env[key] for key in sorted(spec.secrets) if key in spec.env})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": spec.name,
            "namespace": namespace,
            "labels": object_labels(spec, backend),
            "annotations": spec.all_labels(),
        },
        "type": "Opaque",
        "stringData": data,
    }


def owner_patch(job_name: str, job_uid: str) -> Json:
    """Makes the Secret the Job's: removed with it by the garbage collector."""
    return {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid, "blockOwnerDeletion": False}
            ]
        }
    }


def quantity_cpu(cpus: float) -> str:
    return f"{max(1, math.ceil(cpus * 1000))}m"


def _hardened(uid: int, gid: int) -> Json:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def job_deadline(spec: ContainerSpec, settings: KubernetesSettings) -> int:
    """The Job's ``activeDeadlineSeconds``: the cluster's own backstop, counted by Kubernetes from the
    Job's start, so it holds the waiting and the staging too. The step's ``timeout`` itself is the
    orchestrator's watchdog, counted from the tool's start."""
    start = spec.start_timeout or settings.start_timeout
    return math.ceil(start + spec.timeout + settings.stage_seconds)


def _stage_container(
    name: str,
    script: str,
    url_variable: str,
    ticket: str,
    settings: KubernetesSettings,
    hardened: Json,
    resources: Json,
    mounts: list[Json],
) -> Json:
    """A staging container: ``script`` in the staging image, sent to its ticket's route."""
    return {
        "name": name,
        "image": settings.staging_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["sh", "-c", script],
        "env": [
            {"name": url_variable, "value": f"{settings.staging_url}/staging/{ticket}"},
            {"name": "MAO_STAGING_WAIT", "value": str(int(settings.staging_wait))},
        ],
        "securityContext": hardened,
        "resources": resources,
        "volumeMounts": mounts,
    }


def job_body(spec: ContainerSpec, backend: str, image: str, settings: KubernetesSettings) -> Json:
    uid, gid = spec.user
    labels = object_labels(spec, backend)
    hardened = _hardened(uid, gid)
    stage_resources = {
        "limits": {"memory": str(settings.stage_memory), "cpu": quantity_cpu(settings.stage_cpus)},
        "requests": {"memory": str(settings.stage_memory), "cpu": quantity_cpu(settings.stage_cpus)},
    }
    limits: dict[str, str] = {}
    if spec.limits.memory is not None:
        limits["memory"] = str(spec.limits.memory)
    if spec.limits.cpus is not None:
        limits["cpu"] = quantity_cpu(spec.limits.cpus)
    if spec.limits.gpus:
        limits[settings.gpu_resource] = str(spec.limits.gpus)
    tmp_mount = {"name": "tmp", "mountPath": "/tmp"}
    tool_env: list[Json] = []
    for key, value in spec.env.items():
        if key in spec.secrets:
            ref = {"secretKeyRef": {"name": spec.name, "key": f"env.{key}"}}
            tool_env.append({"name": key, "valueFrom": ref})
        else:
            tool_env.append({"name": key, "value": value})
    tool: Json = {
        "name": TOOL,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": tool_env,
        "securityContext": hardened,
        "resources": {"limits": limits, "requests": dict(limits)},
        "volumeMounts": [
            {"name": "input", "mountPath": INPUT_MOUNT, "readOnly": True},
            {"name": "data", "mountPath": OUTPUT_MOUNT},
            tmp_mount,
        ],
    }
    if spec.cmd is not None:
        tool["args"] = list(spec.cmd)  # as Docker's cmd: the image's entrypoint stays
    ticket_mount = {"name": "ticket", "mountPath": TICKET, "readOnly": True}
    stage_in = _stage_container(
        STAGE_IN, STAGE_IN_SCRIPT, "MAO_STAGING_INPUT_URL", f"{spec.name}/input", settings, hardened, stage_resources,
        [{"name": "input", "mountPath": f"{STAGE}/input"}, {"name": "data", "mountPath": f"{STAGE}/data"},
         ticket_mount, tmp_mount],
    )  # fmt: skip
    stage_out = _stage_container(
        STAGE_OUT, STAGE_OUT_SCRIPT, "MAO_STAGING_OUTPUT_URL", f"{spec.name}/output", settings, hardened,
        stage_resources, [{"name": "data", "mountPath": f"{STAGE}/data", "readOnly": True}, ticket_mount, tmp_mount],
    )  # fmt: skip
    data_dir: Json = {} if settings.data_size is None else {"sizeLimit": str(settings.data_size)}
    pod_spec: Json = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.cancel_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "fsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [stage_in, tool],
        "containers": [stage_out],
        "volumes": [
            {"name": "input", "emptyDir": dict(data_dir)},
            {"name": "data", "emptyDir": dict(data_dir)},
            {"name": "tmp", "emptyDir": {"sizeLimit": str(settings.tmp_size)}},
            {
                "name": "ticket",
                "secret": {
                    "secretName": spec.name,
                    "defaultMode": 0o400,
                    "items": [{"key": "input", "path": "input"}, {"key": "output", "path": "output"}],
                },
            },
        ],
    }
    if settings.service_account is not None:
        pod_spec["serviceAccountName"] = settings.service_account
    if settings.image_pull_secret is not None:
        pod_spec["imagePullSecrets"] = [{"name": settings.image_pull_secret}]
    if spec.placement:
        pod_spec["nodeSelector"] = dict(sorted(spec.placement.items()))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": spec.name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": spec.all_labels(),
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": job_deadline(spec, settings),
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels, "annotations": spec.all_labels()}, "spec": pod_spec},
        },
    }
