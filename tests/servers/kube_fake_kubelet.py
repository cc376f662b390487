"""The fake cluster's kubelet (kube_fake.py): schedules a pod on its one node and runs its containers,
in the shared Docker engine (or, with ``--simulate``, plays them without running anything).

Docker mode maps a pod's container as a kubelet with the Docker runtime would: ``command`` is the
entrypoint and ``args`` the command; ``runAsUser``/``runAsGroup`` (refused when ``runAsNonRoot`` meets
uid 0), dropped capabilities, ``allowPrivilegeEscalation: false`` as no-new-privileges, a read-only
root file system, memory and CPU limits, the node's pids limit; emptyDir volumes are host folders
(0777, as the kubelet makes them), a Secret volume a folder of its chosen keys owned by the pod's
uid and fsGroup. Staging containers (``stage-*``) share the host's network namespace, so that they
reach the orchestrator on loopback; the tool gets none. Logs are read from the Engine API (aiohttp on
the Docker socket) with their timestamps, so a dropped stream can be ended at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import shutil
import struct
import tarfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from .kube_fake import Fake, Json

LABEL = "mao.kube-fake"
IMAGE_REASONS_WAIT = 1.0
OOM_EVENT_GRACE = 2  # seconds after an exit 137 within which the engine may still log its OOM


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def memory_bytes(value: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 1000**2, "G": 1000**3}
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(float(value[: -len(unit)]) * factor)
    return int(value)


def nano_cpus(value: str) -> int:
    return int(value[:-1]) * 1_000_000 if value.endswith("m") else int(float(value) * 1e9)


def _stamp(moment: datetime | None = None) -> bytes:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


class _PodRun:
    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.containers: dict[str, str] = {}  # name -> docker container id
        self.dirs: list[Path] = []
        self.logs: dict[str, list[tuple[bytes, bytes]]] = {}  # simulate: name -> lines
        self.grown = asyncio.Event()
        self.ended: set[str] = set()
        self.pending: set[asyncio.Future[Any]] = set()  # Docker calls in threads, awaited by ``stop``


class Kubelet:
    def __init__(self, fake: Fake) -> None:
        self.fake = fake
        self.options = fake.options
        self.runs: dict[tuple[str, str], _PodRun] = {}
        self._docker: Any = None
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        self._socket = host.removeprefix("unix://")
        self._session: aiohttp.ClientSession | None = None

    @property
    def docker(self) -> Any:
        if self._docker is None:
            import docker

            self._docker = docker.from_env(timeout=120)
        return self._docker

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self._socket))
        return self._session

    async def close(self) -> None:
        for key in list(self.runs):
            ns, name = key
            pod = self.fake.store.get("pods", ns, name)
            if pod is not None:
                await self.stop(pod, 0)
        if self._session is not None:
            await self._session.close()

    def start(self, pod: Json) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        run = self.runs.setdefault(key, _PodRun())
        run.task = asyncio.create_task(self._run(pod, run))

    async def stop(self, pod: Json, grace: int) -> None:
        """Stop the pod's containers (SIGTERM, then SIGKILL after ``grace``) and remove them and its volumes."""
        run = self.runs.pop((pod["metadata"]["namespace"], pod["metadata"]["name"]), None)
        if run is None:
            return
        if run.task is not None:
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run.task
        # A container being created when the task was cancelled is created all the same: wait for it,
        # then remove it with the others.
        for pending in list(run.pending):
            with contextlib.suppress(Exception):
                await pending
        if not self.options.simulate:
            for cid in run.containers.values():
                await asyncio.to_thread(self._remove_container, cid, grace)
        for folder in run.dirs:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        run.grown.set()

    def _remove_container(self, cid: str, grace: int) -> None:
        import docker

        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container = self.docker.containers.get(cid)
            with contextlib.suppress(docker.errors.APIError):
                container.stop(timeout=grace)
            container.remove(force=True)

    async def containers(self, instance: str | None) -> list[str]:
        if self.options.simulate:
            return []
        filters = {"label": [LABEL] + ([f"{LABEL}.instance={instance}"] if instance else [])}

        def names() -> list[str]:
            return [c.name for c in self.docker.containers.list(all=True, filters=filters, ignore_removed=True)]

        return await asyncio.to_thread(names)

    # -- running a pod ---------------------------------------------------------------------------------------

    async def _put(self, pod: Json) -> None:
        key = ("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
        if key in self.fake.store.objects:
            await self.fake.store.put("pods", pod)

    async def _run(self, pod: Json, run: _PodRun) -> None:
        spec, status = pod["spec"], pod["status"]
        node = self.fake.node()
        wanted = spec.get("nodeSelector") or {}
        gpus = max(
            [int(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0))
             for c in spec.get("initContainers", []) + spec["containers"]] or [0]
        )  # fmt: skip
        if any(node["metadata"]["labels"].get(k) != v for k, v in wanted.items()) or gpus > self.options.gpus:
            why = "1 node(s) didn't match Pod's node affinity/selector" if wanted else "1 Insufficient nvidia.com/gpu"
            status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": f"0/1 nodes are available: {why}."}]  # fmt: skip
            await self._put(pod)
            return
        spec["nodeName"] = node["metadata"]["name"]
        status.update(startTime=now_text(), conditions=[{"type": "PodScheduled", "status": "True"}])
        waiting = {"waiting": {"reason": "PodInitializing"}}
        status["initContainerStatuses"] = [{"name": c["name"], "state": dict(waiting)} for c in spec.get("initContainers", [])]
        status["containerStatuses"] = [{"name": c["name"], "state": dict(waiting)} for c in spec["containers"]]
        await self._put(pod)
        volumes = await asyncio.to_thread(self._volumes, pod, run)
        for field, containers in (("initContainerStatuses", spec.get("initContainers", [])), ("containerStatuses", spec["containers"])):
            for index, container in enumerate(containers):
                code = await self._container(pod, run, container, status[field][index], volumes)
                if code != 0:
                    status["phase"] = "Failed"
                    await self._put(pod)
                    await self.fake.pod_ended(pod)
                    return
            if field == "initContainerStatuses":
                status["phase"] = "Running"
                await self._put(pod)
        status["phase"] = "Succeeded"
        await self._put(pod)
        await self.fake.pod_ended(pod)

    def _volumes(self, pod: Json, run: _PodRun) -> dict[str, Path]:
        base = self.options.root / f"{pod['metadata']['namespace']}-{pod['metadata']['name']}"
        base.mkdir(parents=True, exist_ok=True)
        run.dirs.append(base)
        context = pod["spec"].get("securityContext") or {}
        folders = {}
        for volume in pod["spec"].get("volumes") or []:
            folder = base / volume["name"]
            folder.mkdir()
            if "secret" in volume:
                secret = self.fake.store.get("secrets", pod["metadata"]["namespace"], volume["secret"]["secretName"]) or {}
                data = secret.get("data") or {}
                for item in volume["secret"].get("items") or [{"key": k, "path": k} for k in data]:
                    path = folder / item["path"]
                    path.write_bytes(base64.b64decode(data.get(item["key"], "")))
                    os.chmod(path, volume["secret"].get("defaultMode", 0o644))
                    with contextlib.suppress(PermissionError):
                        os.chown(path, context.get("runAsUser", -1), context.get("fsGroup", -1))
                os.chmod(folder, 0o755)
            else:
                os.chmod(folder, 0o777)
            folders[volume["name"]] = folder
        return folders

    async def _container(self, pod: Json, run: _PodRun, container: Json, status: Json, volumes: dict[str, Path]) -> int:
        """Run one container to its end; its exit code. A container that cannot start waits for ever
        (as a kubelet retrying): the pod's deletion or its Job's deadline ends it."""
        context = {**(pod["spec"].get("securityContext") or {}), **(container.get("securityContext") or {})}
        problem, env = self._env(pod, container)
        if problem is None and context.get("runAsNonRoot") and not context.get("runAsUser"):
            problem = "container has runAsNonRoot and image will run as root"
        if problem is not None:
            status["state"] = {"waiting": {"reason": "CreateContainerConfigError", "message": problem}}
            await self._put(pod)
            await asyncio.Event().wait()
        if self.options.simulate:
            return await self._simulate(pod, run, container, status, env)
        image = await asyncio.to_thread(self._image, container["image"])
        if image is None:
            status["state"] = {"waiting": {"reason": "ErrImagePull", "message": f'pull access denied for {container["image"]}'}}
            await self._put(pod)
            await asyncio.sleep(IMAGE_REASONS_WAIT)
            status["state"] = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{container["image"]}"'}}
            await self._put(pod)
            await asyncio.Event().wait()
        status["imageID"] = f"docker://{image}"
        starting = asyncio.ensure_future(asyncio.to_thread(self._start, pod, run, container, context, env, volumes))
        run.pending.add(starting)
        starting.add_done_callback(run.pending.discard)
        cid, started = await asyncio.shield(starting)
        status["state"] = {"running": {"startedAt": started}}
        await self._put(pod)
        code, oom, started, finished = await asyncio.to_thread(self._wait, cid)
        reason = "Completed" if code == 0 else "OOMKilled" if oom else "Error"
        status["state"] = {"terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished}}
        await self._put(pod)
        return code

    def _env(self, pod: Json, container: Json) -> tuple[str | None, dict[str, str]]:
        env = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = item["valueFrom"]["secretKeyRef"]
            secret = self.fake.store.get("secrets", pod["metadata"]["namespace"], ref["name"])
            if secret is None or ref["key"] not in (secret.get("data") or {}):
                return f'secret "{ref["name"]}" or its key "{ref["key"]}" not found', {}
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return None, env

    def _image(self, reference: str) -> str | None:
        import docker

        try:
            return str(self.docker.images.get(reference).id)
        except (docker.errors.ImageNotFound, docker.errors.APIError):
            return None

    def _start(
        self, pod: Json, run: _PodRun, container: Json, context: Json, env: dict[str, str], volumes: dict[str, Path]
    ) -> tuple[str, str]:
        from docker.types import Mount

        limits = (container.get("resources") or {}).get("limits") or {}
        mounts = [
            Mount(m["mountPath"], str(volumes[m["name"]]), type="bind", read_only=bool(m.get("readOnly")))
            for m in container.get("volumeMounts") or []
        ]
        uid, gid = context.get("runAsUser"), context.get("runAsGroup")
        labels = {LABEL: "1", f"{LABEL}.pod": pod["metadata"]["name"]}
        instance = (pod["metadata"].get("labels") or {}).get("mao.instance")
        if instance:
            labels[f"{LABEL}.instance"] = instance
        kwargs: dict[str, Any] = {
            "image": container["image"],
            "entrypoint": container.get("command"),
            "command": container.get("args"),
            "user": f"{uid}:{gid if gid is not None else uid}" if uid is not None else None,
            "environment": env,
            "labels": labels,
            "name": f"kfake-{pod['metadata']['name']}-{container['name']}",
            "network_mode": "host" if container["name"].startswith("stage-") else "none",
            "read_only": bool(context.get("readOnlyRootFilesystem")),
            "cap_drop": (context.get("capabilities") or {}).get("drop"),
            "security_opt": ["no-new-privileges:true"] if context.get("allowPrivilegeEscalation") is False else None,
            "pids_limit": self.options.pids,
            "mounts": mounts,
            "detach": True,
        }
        if "memory" in limits:
            kwargs["mem_limit"] = kwargs["memswap_limit"] = memory_bytes(limits["memory"])
        if "cpu" in limits:
            kwargs["nano_cpus"] = nano_cpus(limits["cpu"])
        created = self.docker.containers.create(**kwargs)
        run.containers[container["name"]] = created.id
        created.start()
        created.reload()
        return created.id, created.attrs["State"]["StartedAt"]

    def _wait(self, cid: str) -> tuple[int, bool, str, str]:
        container = self.docker.containers.get(cid)
        code = int(container.wait()["StatusCode"])
        container.reload()
        state = container.attrs["State"]
        oom = bool(state.get("OOMKilled")) or (code == 137 and self._oom_event(cid))
        return code, oom, state["StartedAt"], state["FinishedAt"]

    def _oom_event(self, cid: str) -> bool:
        """A kubelet learns of an OOM kill from the cgroup, always. Docker 20.10 sets its OOMKilled flag
        only when containerd's OOM report beats the exit, but logs an ``oom`` event either way (the
        swarm backend reads it the same way): asked up to OOM_EVENT_GRACE seconds into the future,
        the engine answers then with what came until then."""
        now = int(time.time())
        events = self.docker.events(
            since=now - 600, until=now + OOM_EVENT_GRACE, decode=True,
            filters={"type": "container", "container": cid, "event": "oom"},
        )  # fmt: skip
        try:
            return any(event.get("Action") == "oom" for event in events)
        finally:
            events.close()

    # -- simulate mode ------------------------------------------------------------------------------------

    async def _simulate(self, pod: Json, run: _PodRun, container: Json, status: Json, env: dict[str, str]) -> int:
        """Play a container: the staging ones do their HTTP as the real ones would, the tool prints."""
        name = container["name"]
        started = now_text()
        status["state"] = {"running": {"startedAt": started}}
        status["imageID"] = f"simulated://{container['image']}"
        await self._put(pod)
        run.logs[name] = []
        code = 0
        if name in ("stage-in", "stage-out"):
            code = await self._simulate_staging(pod, name, env)
        else:
            await asyncio.sleep(self.options.simulate_seconds)
            run.logs[name].append((_stamp(), b"simulated tool output\n"))
            run.grown.set()
        run.ended.add(name)
        run.grown.set()
        status["state"] = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                          "startedAt": started, "finishedAt": now_text()}}  # fmt: skip
        await self._put(pod)
        return code

    async def _simulate_staging(self, pod: Json, name: str, env: dict[str, str]) -> int:
        volume = next(v for v in pod["spec"]["volumes"] if "secret" in v)
        secret = self.fake.store.get("secrets", pod["metadata"]["namespace"], volume["secret"]["secretName"]) or {}
        key = "input" if name == "stage-in" else "output"
        token = base64.b64decode((secret.get("data") or {}).get(key, "")).decode()
        headers = {"Authorization": f"Bearer {token}"}
        url = env["MAO_STAGING_INPUT_URL" if name == "stage-in" else "MAO_STAGING_OUTPUT_URL"]
        async with aiohttp.ClientSession() as session:
            if name == "stage-in":
                async with session.get(url, headers=headers) as answer:
                    await answer.read()
                    return 0 if answer.status == 200 else 1
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                info = tarfile.TarInfo("./out.txt")
                body = b"simulated\n"
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
            headers["Content-Type"] = "application/x-tar"
            async with session.put(url, headers=headers, data=buffer.getvalue()) as answer:
                await answer.read()
                return 0 if answer.status == 200 else 1

    # -- logs -----------------------------------------------------------------------------------------------

    def log(self, pod: Json, container: str, since_time: str | None, follow: bool) -> AsyncIterator[tuple[bytes, bytes]] | None:
        run = self.runs.get((pod["metadata"]["namespace"], pod["metadata"]["name"]))
        since = 0
        if since_time:
            since = int(datetime.strptime(since_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
        if self.options.simulate:
            if run is None or container not in run.logs:
                return None
            return self._simulated_lines(run, container, since, follow)
        if run is None or container not in run.containers:
            return None
        return self._docker_lines(run.containers[container], since, follow)

    async def _simulated_lines(self, run: _PodRun, container: str, since: int, follow: bool) -> AsyncIterator[tuple[bytes, bytes]]:
        position = 0
        while True:
            run.grown.clear()
            lines = run.logs.get(container, [])
            while position < len(lines):
                stamp, line = lines[position]
                position += 1
                yield stamp, line
            if not follow or container in run.ended or (run.task is not None and run.task.done()):
                return
            await run.grown.wait()

    async def _docker_lines(self, cid: str, since: int, follow: bool) -> AsyncIterator[tuple[bytes, bytes]]:
        # Docker 20.10 ends a followed log early when the container exits while the reader lags behind
        # its log file (executor/docker_runner.py stream_output says more). A kubelet reads a complete
        # file, so once the container has exited, what the follow missed is read again: the entries
        # come in the file's order at every read, so the ones already sent are skipped by count.
        sent = 0
        async for entry in self._docker_read(cid, since, follow):
            sent += 1
            yield entry
        if not follow or not await self._exited(cid):
            return
        skipped = 0
        async for entry in self._docker_read(cid, since, False):
            if skipped < sent:
                skipped += 1
                continue
            yield entry

    async def _exited(self, cid: str) -> bool:
        async with self.session().get(f"http://docker/containers/{cid}/json") as answer:
            if answer.status != 200:
                return False
            state = (await answer.json()).get("State") or {}
            return not state.get("Running", False)

    async def _docker_read(self, cid: str, since: int, follow: bool) -> AsyncIterator[tuple[bytes, bytes]]:
        query = {"stdout": "1", "stderr": "1", "timestamps": "1", "follow": "1" if follow else "0", "since": str(since)}
        timeout = aiohttp.ClientTimeout(total=None)
        async with self.session().get(f"http://docker/containers/{cid}/logs", params=query, timeout=timeout) as answer:
            if answer.status != 200:
                return
            while True:
                try:
                    header = await answer.content.readexactly(8)
                    frame = await answer.content.readexactly(struct.unpack(">I", header[4:])[0])
                except asyncio.IncompleteReadError:
                    return
                stamp, _, text = frame.partition(b" ")  # one log entry: "<RFC3339Nano> <line>"
                yield stamp, text
