"""The Kubernetes API as the backend uses it, over kubernetes-asyncio (docs/backends.md#kubernetes says
why that client): the only module that calls the client, so its errors are translated here, once.

Every call asks for the raw answer (``_preload_content=False``) and parses the part it needs into the
typed models of kube_status.py: the client's own model classes are slow to build (a watch of a
thousand pods spends its CPU there) and untyped. Failures become the seam's: ``BackendUnavailable``
when the API cannot be asked (down, unreachable, 5xx, credentials refused), ``KubeNotFound`` /
``KubeConflict`` / ``KubeInvalid`` for the answers the backend acts on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import load_incluster_config, load_kube_config
from kubernetes_asyncio.config.config_exception import ConfigException

from ..config.backends.kubernetes import KubernetesSettings
from .kube_pod import Json
from .kube_status import Job, Pod
from .seam import BackendUnavailable

REQUEST_TIMEOUT = 30.0
# A watch is asked to end after this long (the server may end it sooner); then it is renewed from
# its last resourceVersion. Reading waits at most a little longer for the next line.
WATCH_SECONDS = 240
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT, sock_read=WATCH_SECONDS + 30)
_LOG_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT, sock_read=None)


class KubeNotFound(Exception):
    pass


class KubeConflict(Exception):
    pass


class KubeInvalid(Exception):
    """The API refused an object as invalid or forbidden by policy (400, 403 on create, 422)."""


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class KubeApi:
    def __init__(self, backend: str, settings: KubernetesSettings) -> None:
        self.backend = backend
        self.settings = settings
        self.namespace = settings.namespace
        self._client: k8s.ApiClient | None = None
        self._core: k8s.CoreV1Api | None = None
        self._batch: k8s.BatchV1Api | None = None

    async def start(self) -> None:
        configuration = k8s.Configuration()
        try:
            if self.settings.in_cluster:
                load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                await load_kube_config(
                    config_file=str(self.settings.kubeconfig) if self.settings.kubeconfig else None,
                    context=self.settings.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (ConfigException, OSError, ValueError) as exc:
            raise BackendUnavailable(f"backend {self.backend}: cannot read the Kubernetes credentials: {exc}") from exc
        # Every attempt follows one log; the connection pool must not queue them behind each other.
        configuration.connection_pool_maxsize = 0
        self._client = k8s.ApiClient(configuration)
        self._core = k8s.CoreV1Api(self._client)
        self._batch = k8s.BatchV1Api(self._client)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def core(self) -> Any:
        if self._core is None:
            raise BackendUnavailable(f"backend {self.backend}: not started (its credentials could not be read)")
        return self._core

    @property
    def batch(self) -> Any:
        if self._batch is None:
            raise BackendUnavailable(f"backend {self.backend}: not started (its credentials could not be read)")
        return self._batch

    # -- one request ---------------------------------------------------------------------------------

    async def _raw(
        self, what: str, call: Callable[..., Awaitable[Any]], *args: Any, timeout: Any = REQUEST_TIMEOUT, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await call(
                *args, _preload_content=False, _request_timeout=timeout, **kwargs
            )
        except (aiohttp.ClientError, TimeoutError, OSError, ApiException) as exc:
            raise BackendUnavailable(f"backend {self.backend}: {what}: the Kubernetes API did not answer ({exc})") from exc
        if response.status >= 300:
            try:
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                body = b""
            finally:
                response.release()
            raise self._error(what, response.status, body)
        return response

    def _error(self, what: str, status: int, body: bytes) -> Exception:
        try:
            message = str(json.loads(body).get("message", "")) or body.decode(errors="replace")[:300]
        except (ValueError, AttributeError):
            message = body.decode(errors="replace")[:300]
        text = f"{what}: {status} {message}"
        if status == 404:
            return KubeNotFound(text)
        if status == 409:
            return KubeConflict(text)
        if status == 410:
            return WatchExpired(text)
        if status in (400, 422):
            return KubeInvalid(text)
        if status == 403 and "forbidden" in message.lower() and "violates podsecurity" in message.lower():
            return KubeInvalid(text)
        return BackendUnavailable(f"backend {self.backend}: {text}")

    async def _json(self, what: str, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        response = await self._raw(what, call, *args, **kwargs)
        try:
            async with response:
                return json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BackendUnavailable(f"backend {self.backend}: {what}: the answer broke off ({exc})") from exc

    # -- what the backend asks ---------------------------------------------------------------------------

    async def version(self) -> str:
        answer = await self._json("asking the API's version", k8s.VersionApi(self._client).get_code)
        return str(answer.get("gitVersion", "?"))

    async def get_job(self, name: str) -> Job | None:
        try:
            return Job.model_validate(await self._json(f"reading Job {name}", self.batch.read_namespaced_job, name, self.namespace))
        except KubeNotFound:
            return None

    async def create_job(self, body: Json) -> Job:
        name = body["metadata"]["name"]
        answer = await self._json(f"creating Job {name}", self.batch.create_namespaced_job, self.namespace, body)
        return Job.model_validate(answer)

    async def delete_job(self, name: str, grace: int) -> None:
        body = {"propagationPolicy": "Foreground", "gracePeriodSeconds": grace}
        try:
            await self._json(f"deleting Job {name}", self.batch.delete_namespaced_job, name, self.namespace, body=body)
        except KubeNotFound:
            pass

    async def list_jobs(self, selector: str) -> list[Job]:
        answer = await self._json("listing Jobs", self.batch.list_namespaced_job, self.namespace, label_selector=selector)
        return [Job.model_validate(item) for item in answer.get("items") or []]

    async def pods_of(self, job: str) -> list[Pod]:
        answer = await self._json(
            f"listing the pods of Job {job}", self.core.list_namespaced_pod, self.namespace, label_selector=f"job-name={job}"
        )
        return [Pod.model_validate(item) for item in answer.get("items") or []]

    async def put_secret(self, body: Json) -> None:
        """Create the Secret, or replace one a crashed submission left."""
        name = body["metadata"]["name"]
        try:
            await self._json(f"creating Secret {name}", self.core.create_namespaced_secret, self.namespace, body)
        except KubeConflict:
            await self._json(f"replacing Secret {name}", self.core.replace_namespaced_secret, name, self.namespace, body)

    async def own_secret(self, name: str, patch: Json) -> None:
        try:
            await self._json(
                f"giving Secret {name} to its Job", self.core.patch_namespaced_secret, name, self.namespace, patch
            )
        except KubeNotFound:
            pass

    async def delete_secret(self, name: str) -> None:
        try:
            await self._json(f"deleting Secret {name}", self.core.delete_namespaced_secret, name, self.namespace)
        except KubeNotFound:
            pass

    async def list_secrets(self, selector: str) -> list[str]:
        answer = await self._json("listing Secrets", self.core.list_namespaced_secret, self.namespace, label_selector=selector)
        return [str(item["metadata"]["name"]) for item in answer.get("items") or []]

    async def gpus(self) -> int | None:
        """The most GPUs one node can give a pod (its ``gpu_resource`` allocatable: a pod runs on one
        node), or None when this account may not list nodes (a namespaced Role cannot)."""
        try:
            answer = await self._json("listing nodes", self.core.list_node)
        except BackendUnavailable:
            return None
        most = 0
        for node in answer.get("items") or []:
            value = ((node.get("status") or {}).get("allocatable") or {}).get(self.settings.gpu_resource, "0")
            try:
                most = max(most, int(value))
            except ValueError:
                continue
        return most

    # -- streams -------------------------------------------------------------------------------------

    async def list_for_watch(self, kind: str, selector: str) -> tuple[list[Json], str]:
        """The objects (raw) and the list's resourceVersion, to watch from."""
        call = self.core.list_namespaced_pod if kind == "pods" else self.batch.list_namespaced_job
        answer = await self._json(f"listing {kind}", call, self.namespace, label_selector=selector)
        return list(answer.get("items") or []), str((answer.get("metadata") or {}).get("resourceVersion", ""))

    async def watch(self, kind: str, selector: str, resource_version: str) -> AsyncIterator[tuple[str, Json]]:
        """(event type, raw object) from ``resource_version`` on, until the server ends the watch.
        WatchExpired when the version is too old; BackendUnavailable when the stream breaks."""
        call = self.core.list_namespaced_pod if kind == "pods" else self.batch.list_namespaced_job
        response = await self._raw(
            f"watching {kind}",
            call,
            self.namespace,
            label_selector=selector,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            timeout=_STREAM_TIMEOUT,
        )
        async with response:
            while True:
                try:
                    line = await response.content.readline()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise BackendUnavailable(f"backend {self.backend}: the watch of {kind} broke off ({exc})") from exc
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    raise BackendUnavailable(f"backend {self.backend}: the watch of {kind} sent {line[:80]!r}") from None
                kind_of, raw = str(event.get("type", "")), event.get("object") or {}
                if kind_of == "ERROR":
                    if raw.get("code") == 410:
                        raise WatchExpired(str(raw.get("message", "")))
                    raise BackendUnavailable(f"backend {self.backend}: the watch of {kind} failed: {raw.get('message')}")
                yield kind_of, raw

    async def log_lines(self, pod: str, container: str, since_time: str | None, follow: bool) -> AsyncIterator[bytes]:
        """The container's log, each line with its timestamp (``timestamps=true``), as bytes; from
        ``since_time`` (RFC 3339, whole seconds: the API's precision) on."""
        # The generated read_namespaced_pod_log has no sinceTime (the API has): the same call, by hand.
        query: list[tuple[str, str]] = [("container", container), ("timestamps", "true")]
        if follow:
            query.append(("follow", "true"))
        if since_time is not None:
            query.append(("sinceTime", since_time))

        async def call(**options: Any) -> Any:
            if self._client is None:
                raise BackendUnavailable(f"backend {self.backend}: not started")
            return await self._client.call_api(
                "/api/v1/namespaces/{namespace}/pods/{name}/log",
                "GET",
                {"namespace": self.namespace, "name": pod},
                query,
                {"Accept": "text/plain"},
                auth_settings=["BearerToken"],
                **options,
            )

        response = await self._raw(f"reading the log of {pod}/{container}", call, timeout=_LOG_TIMEOUT)
        async with response:
            while True:
                try:
                    line = await response.content.readline()
                except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    raise BackendUnavailable(f"backend {self.backend}: the log of {pod} broke off ({exc})") from exc
                if not line:
                    return
                yield line
