"""A fake of the Kubernetes API: exactly the endpoints the ``kubernetes`` backend calls, served on a
loopback port, with a Job controller and a kubelet behind them (no Kubernetes API server of any kind
can run on these machines: /work/shared/ENGINES.md).

What it is, and what it is not (the HTTP side is kube_fake_api.py, the kubelet kube_fake_kubelet.py):
- The API: ``/version``; Jobs (create, get, list, watch, delete with propagationPolicy); pods (get,
  list, watch, delete, the Eviction API, logs with ``follow``, ``timestamps`` and ``sinceTime``);
  Secrets (create, replace, strategic-merge patch, list, delete, garbage-collected with their owner Job);
  nodes (list: one node, its labels and GPUs). A bearer token (the kubeconfig's) is required.
  ``resourceVersion`` is one counter; watches resume from any version this process has seen.
- The Job controller: one pod per Job named ``<job>-<5 letters>`` with the ``job-name`` label; the Job
  ``Complete`` when its pod succeeds, ``Failed`` (``BackoffLimitExceeded``) when it fails or is deleted
  while active, ``Failed`` (``DeadlineExceeded``, its pods deleted) past ``activeDeadlineSeconds``;
  ``ttlSecondsAfterFinished`` honoured.
- The kubelet (kube_fake_kubelet.py): schedules by ``nodeSelector`` and GPU requests (else the pod
  stays Pending with ``PodScheduled=False``, reason ``Unschedulable``); runs the pod's init containers in
  order, then its container, FOR REAL in the shared Docker engine (user, capabilities, no-new-privileges,
  read-only root, memory/CPU limits, the node's pids limit; emptyDir and Secret volumes as host folders;
  staging containers on the host's network, so they reach the orchestrator's staging routes on
  loopback, the tool without any). ``--simulate`` runs nothing: the kubelet plays the staging
  containers itself (HTTP to the staging routes, as the real ones do) and a tool that prints a line and
  exits 0, for the benchmark of the orchestrator's side.
- Failures to inject (``POST /fake/...``): a kubelet eviction (``evict``), dropped log streams
  (``config`` ``{"drop_logs_after": N, "drop_logs_times": M}``: the next M log streams end after N
  lines; a drop after every N lines for ever would starve any client, as sinceTime has whole seconds), dropped watches
  (``drop-watches``), expired resource versions (``compact``: the next watch gets 410 Gone). Pod
  deletion and the Eviction API are the real API's. ``GET /fake/objects?instance=`` lists what is left.

Run: ``python -m tests.servers.kube_fake --port P --token T --root DIR [--simulate] [--gpus N]
[--pids N] [--node-label k=v]``; ``start_kube_fake`` (below) does it and writes the kubeconfig.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import os
import secrets
import string
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger("kube_fake")

Json = dict[str, Any]
NODE = "kfake-node"


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str) -> Json:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code}


def fail(code: int, reason: str, message: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 404: web.HTTPNotFound, 409: web.HTTPConflict,
           410: web.HTTPGone, 422: web.HTTPUnprocessableEntity}[code]  # fmt: skip
    return cls(text=json.dumps(status_body(code, reason, message)), content_type="application/json")


def flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter (clients send true, True or 1)."""
    return request.query.get(name, "").lower() in ("true", "1")


def matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def merge(base: Json, patch: Json) -> Json:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        elif value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


@dataclass
class Store:
    """Every object, by (kind, namespace, name), and the events of every change, for watches."""

    objects: dict[tuple[str, str, str], Json] = field(default_factory=dict)
    events: list[tuple[int, str, str, str, Json]] = field(default_factory=list)  # rv, kind, ns, type, obj
    version: int = 1
    oldest: int = 0  # watches from before this get 410 Gone (``compact``)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    watch_epoch: int = 0  # ``drop-watches`` ends every open watch

    def get(self, kind: str, ns: str, name: str) -> Json | None:
        return self.objects.get((kind, ns, name))

    def items(self, kind: str, ns: str | None, selector: str | None = None) -> list[Json]:
        return [
            obj
            for (k, n, _), obj in sorted(self.objects.items())
            if k == kind and (ns is None or n == ns) and matches(obj["metadata"].get("labels") or {}, selector)
        ]

    async def put(self, kind: str, obj: Json) -> Json:
        meta = obj["metadata"]
        key = (kind, meta.get("namespace", ""), meta["name"])
        event = "MODIFIED" if key in self.objects else "ADDED"
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        self.objects[key] = obj
        await self._event(kind, key[1], event, obj)
        return obj

    async def remove(self, kind: str, ns: str, name: str) -> Json | None:
        obj = self.objects.pop((kind, ns, name), None)
        if obj is not None:
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            await self._event(kind, ns, "DELETED", obj)
        return obj

    async def _event(self, kind: str, ns: str, event: str, obj: Json) -> None:
        self.events.append((self.version, kind, ns, event, copy.deepcopy(obj)))
        async with self.changed:
            self.changed.notify_all()


@dataclass
class Options:
    token: str
    root: Path
    simulate: bool = False
    gpus: int = 0
    pids: int = 512
    node_labels: dict[str, str] = field(default_factory=dict)
    drop_logs_after: int | None = None
    drop_logs_times: int | None = None  # how many streams to drop (None: every one)
    simulate_seconds: float = 0.05


class Fake:
    """The API server, the Job controller and the kubelet's bookkeeping."""

    def __init__(self, options: Options) -> None:
        from .kube_fake_kubelet import Kubelet

        self.options = options
        self.store = Store()
        self.kubelet = Kubelet(self)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.deleting: dict[tuple[str, str], asyncio.Future[Json | None]] = {}

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def node(self) -> Json:
        labels = {"kubernetes.io/hostname": NODE, **self.options.node_labels}
        allocatable = {"cpu": "2", "memory": "4Gi", "pods": "1000", "nvidia.com/gpu": str(self.options.gpus)}
        return {"metadata": {"name": NODE, "labels": labels}, "status": {"allocatable": allocatable, "capacity": allocatable}}

    # -- the Job controller --------------------------------------------------------------------------

    async def create_job(self, ns: str, job: Json) -> Json:
        meta = job.setdefault("metadata", {})
        meta.update(namespace=ns, uid=secrets.token_hex(16), creationTimestamp=now_text(), generation=1)
        job["status"] = {"startTime": now_text(), "active": 1}
        await self.store.put("jobs", job)
        suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
        template = copy.deepcopy(job["spec"]["template"])
        pod_meta = template.setdefault("metadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), "job-name": meta["name"], "controller-uid": meta["uid"]}
        pod_meta.update(
            name=f"{meta['name']}-{suffix}", namespace=ns, uid=secrets.token_hex(16), creationTimestamp=now_text(),
            ownerReferences=[{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"]}],
        )  # fmt: skip
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template["spec"],
               "status": {"phase": "Pending", "conditions": []}}  # fmt: skip
        await self.store.put("pods", pod)
        self.kubelet.start(pod)
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline:
            self.spawn(self._deadline(ns, meta["name"], meta["uid"], float(deadline)))
        return job

    async def _deadline(self, ns: str, name: str, uid: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        job = self.store.get("jobs", ns, name)
        if job is None or job["metadata"]["uid"] != uid or self._finished(job):
            return
        await self._finish(job, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        for pod in self.store.items("pods", ns, f"job-name={name}"):
            self.spawn(self.delete_pod(ns, pod["metadata"]["name"], grace=0, by_controller=True))

    @staticmethod
    def _finished(job: Json) -> bool:
        return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in job["status"].get("conditions", []))

    async def _finish(self, job: Json, kind: str, reason: str, message: str) -> None:
        status = job["status"]
        status["conditions"] = [{"type": kind, "status": "True", "reason": reason, "message": message,
                                 "lastTransitionTime": now_text()}]  # fmt: skip
        status["active"] = 0
        status["succeeded" if kind == "Complete" else "failed"] = 1
        if kind == "Complete":
            status["completionTime"] = now_text()
        await self.store.put("jobs", job)
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None:
            self.spawn(self._expire(job["metadata"]["namespace"], job["metadata"]["name"], job["metadata"]["uid"], ttl))

    async def _expire(self, ns: str, name: str, uid: str, ttl: float) -> None:
        await asyncio.sleep(ttl)
        job = self.store.get("jobs", ns, name)
        if job is not None and job["metadata"]["uid"] == uid:
            await self.delete_job(ns, name, "Background")

    async def pod_ended(self, pod: Json) -> None:
        """The kubelet's report: the pod Succeeded or Failed."""
        ns, owner = pod["metadata"]["namespace"], pod["metadata"]["labels"].get("job-name")
        job = self.store.get("jobs", ns, owner) if owner else None
        if job is None or self._finished(job):
            return
        if pod["status"]["phase"] == "Succeeded":
            await self._finish(job, "Complete", "", "")
        else:
            await self._finish(job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")

    async def delete_job(self, ns: str, name: str, policy: str) -> Json | None:
        job = self.store.get("jobs", ns, name)
        if job is None:
            return None
        pods = self.store.items("pods", ns, f"job-name={name}")
        if policy == "Foreground":
            job["metadata"]["deletionTimestamp"] = now_text()
            job["metadata"]["finalizers"] = ["foregroundDeletion"]
            await self.store.put("jobs", job)
            await asyncio.gather(*(self.delete_pod(ns, p["metadata"]["name"], by_controller=True) for p in pods))
            await self._remove_job(job)
        else:
            await self._remove_job(job)
            if policy != "Orphan":
                for pod in pods:
                    self.spawn(self.delete_pod(ns, pod["metadata"]["name"], by_controller=True))
        return job

    async def _remove_job(self, job: Json) -> None:
        ns, uid = job["metadata"]["namespace"], job["metadata"]["uid"]
        await self.store.remove("jobs", ns, job["metadata"]["name"])
        for secret in self.store.items("secrets", ns):
            if any(ref.get("uid") == uid for ref in secret["metadata"].get("ownerReferences") or []):
                await self.store.remove("secrets", ns, secret["metadata"]["name"])

    async def delete_pod(self, ns: str, name: str, grace: int | None = None, by_controller: bool = False) -> Json | None:
        """Delete a pod gracefully; a second deletion of the same pod waits for the first."""
        key = (ns, name)
        if key not in self.deleting:
            self.deleting[key] = asyncio.ensure_future(self._delete_pod(ns, name, grace, by_controller))
            self.deleting[key].add_done_callback(lambda _: self.deleting.pop(key, None))
        return await asyncio.shield(self.deleting[key])

    async def _delete_pod(self, ns: str, name: str, grace: int | None, by_controller: bool) -> Json | None:
        pod = self.store.get("pods", ns, name)
        if pod is None:
            return None
        if pod["metadata"].get("deletionTimestamp") is None:
            pod["metadata"]["deletionTimestamp"] = now_text()
            await self.store.put("pods", pod)
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        await self.kubelet.stop(pod, grace)
        if not by_controller and pod["status"]["phase"] not in ("Succeeded", "Failed"):
            pod["status"]["phase"] = "Failed"
            await self.pod_ended(pod)
        await self.store.remove("pods", ns, name)
        return pod


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--simulate", action="store_true")
    parser.add_argument("--simulate-seconds", type=float, default=0.05)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--pids", type=int, default=512)
    parser.add_argument("--node-label", action="append", default=[])
    args = parser.parse_args(argv)
    labels = dict(item.split("=", 1) for item in args.node_label)
    args.root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    options = Options(args.token, args.root, args.simulate, args.gpus, args.pids, labels, None, args.simulate_seconds)
    from .kube_fake_api import serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options, args.port))


# -- starting it from tests and benches -------------------------------------------------------------------


@dataclass
class KubeFake:
    """A running fake: its URL, token, kubeconfig file and process."""

    url: str
    token: str
    kubeconfig: Path
    process: Any  # ManagedProcess

    def call(self, method: str, path: str, body: Json | None = None, *, token: bool = False) -> Json:
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
            return dict(json.loads(answer.read() or b"{}"))

    def stop(self) -> None:
        self.process.stop()


def write_kubeconfig(path: Path, url: str, token: str, namespace: str = "default") -> Path:
    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {"token": token}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    os.chmod(path, 0o600)
    return path


def start_kube_fake(folder: Path, *, simulate: bool = False, gpus: int = 0, pids: int = 512) -> KubeFake:
    from .process import REPO_ROOT, ManagedProcess, free_port, wait_http

    folder.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_urlsafe(16)
    args = [sys.executable, "-m", "tests.servers.kube_fake", "--port", str(port), "--token", token,
            "--root", str(folder / "kubelet"), "--gpus", str(gpus), "--pids", str(pids)]  # fmt: skip
    if simulate:
        args.append("--simulate")
    process = ManagedProcess(args, folder / "kube-fake.log", cwd=REPO_ROOT, name="kube-fake")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/version", process=process)
    return KubeFake(url, token, write_kubeconfig(folder / "kubeconfig", url, token), process)


if __name__ == "__main__":
    main()
