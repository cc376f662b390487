"""The blocking Docker work: image lookup and pull, container create/start/wait/kill/remove, cleanup.

Everything here blocks on the Docker engine and must run in a worker thread (see executor.runs); nothing
here knows about asyncio. Docker SDK and requests errors are translated into executor errors at this edge
(executor.docker_errors) so the layers above deal only with MaoError; reading a container's output is
executor.docker_output.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container, ContainerCollection
from docker.types import Mount
from docker.utils import parse_repository_tag

from executor.config import Settings
from executor.docker_errors import (
    DEVICE_DRIVER_MISSING,
    docker_errors,
    explain,
    not_pullable,
    removed_by_someone_else,
)
from executor.docker_output import bounded_tail
from executor.errors import ContainerNameInUse, ImageNotFound
from executor.wire.containers import EXECUTOR_LABEL
from executor.wire.errors import BadRequest
from executor.wire.models import INSTANCE_LABEL, MANAGED_LABEL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one container; built from a validated RunRequest."""

    image: str
    name: str
    cmd: list[str] | None
    env: dict[str, str]
    user: str | None
    labels: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    group_add: list[str] = field(default_factory=list)
    # Capabilities, no-new-privileges and resource limits (executor.hardening.container_limits).
    limits: dict[str, Any] = field(default_factory=dict)


class _Api(docker.APIClient):  # type: ignore[misc]  # docker-py is untyped
    """The engine's API without the inspection docker-py makes after each log read to learn
    whether the container has a tty (whose log is not multiplexed): no container this executor
    creates has one (``DockerRunner.create`` never asks for it), and every log it reads is one of
    its own, so a log read is one round trip, not two (the tail of every ended container, each
    pass of an output follower)."""

    def _check_is_tty(self, container: object) -> bool:
        return False


class EngineClient(docker.DockerClient):  # type: ignore[misc]  # docker-py is untyped
    """``docker.DockerClient`` (``from_env`` included) over ``_Api``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.api = _Api(*args, **kwargs)


class DockerRunner:
    """Blocking operations on the Docker engine on behalf of one executor instance.

    Contract shared by every method: it may block (call it from a worker thread, never the event loop);
    an engine that does not answer raises DockerUnavailable; other failures raise the executor error
    documented on the method. Containers it creates carry ``mao.managed=true`` and
    ``mao.instance=<instance>``, and it only ever lists or cleans up containers carrying both, so executors
    sharing one engine never touch each other's containers.
    """

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[..., docker.DockerClient] = EngineClient.from_env,
        max_pool_size: int = 16,
    ) -> None:
        self._settings = settings
        self._client_factory = client_factory
        self._max_pool_size = max_pool_size
        self._client_obj: docker.DockerClient | None = None
        self._client_lock = threading.Lock()

    # -- connection ---------------------------------------------------------------------------------------

    def _client(self) -> docker.DockerClient:
        # Created lazily (and re-tried on each call until it works) so the executor starts, and reports
        # 503 on /health, while the engine is still down instead of refusing to start.
        with self._client_lock:
            if self._client_obj is None:
                with docker_errors("connecting to the Docker engine"):
                    self._client_obj = self._client_factory(max_pool_size=self._max_pool_size)
            return self._client_obj

    def close(self) -> None:
        """Close the engine connection (idempotent)."""
        with self._client_lock:
            if self._client_obj is not None:
                self._client_obj.close()
                self._client_obj = None

    def _labels_filter(self) -> dict[str, Any]:
        return {"label": [f"{MANAGED_LABEL}=true", f"{INSTANCE_LABEL}={self._settings.instance}"]}

    def ping(self) -> None:
        """Return when the engine answers; raise DockerUnavailable otherwise."""
        with docker_errors("checking the Docker engine"):
            self._client().ping()

    def running_count(self) -> int:
        """How many of this executor's containers are running now (/run's and submitted ones)."""
        with docker_errors("listing containers"):
            mine = self._client().containers.list(filters={**self._labels_filter(), "status": "running"}, sparse=True)
            submitted = self._client().containers.list(
                filters={"label": self._submitted_filter(), "status": "running"}, sparse=True
            )
        return len({c.id for c in [*mine, *submitted]})

    def _submitted_filter(self, labels: dict[str, str] | None = None) -> list[str]:
        return [
            f"{MANAGED_LABEL}=true",
            f"{EXECUTOR_LABEL}={self._settings.instance}",
            *(f"{k}={v}" for k, v in (labels or {}).items()),
        ]

    # -- submitted containers (executor.containers) -----------------------------------------------------------

    def inspect(self, name: str) -> dict[str, Any] | None:
        """The engine's description of container ``name`` (``docker inspect``), None when it is gone."""
        with docker_errors(f"inspecting container {name}"):
            try:
                return dict(self._client().api.inspect_container(name))
            except docker.errors.NotFound:
                return None

    def container(self, name: str) -> Container | None:
        with docker_errors(f"finding container {name}"):
            try:
                return self._client().containers.get(name)
            except docker.errors.NotFound:
                return None

    def list_submitted(self, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """The engine's summaries (``docker ps -a``: Id, Names, State, Labels, Created) of the
        containers this executor created through POST /containers, carrying all ``labels``."""
        with docker_errors("listing submitted containers"):
            found = self._client().containers.list(
                all=True, filters={"label": self._submitted_filter(labels)}, sparse=True
            )
        return [dict(c.attrs) for c in found]

    def node_name(self) -> str:
        """The Docker engine's host name (``docker info``), for the attempt record."""
        with docker_errors("asking the Docker engine for its name"):
            return str(self._client().info().get("Name") or os.uname().nodename)

    # -- images ---------------------------------------------------------------------------------------------

    def find_image(self, reference: str) -> str | None:
        """The id ('sha256:...') of ``reference`` on this engine, or None when it is not there."""
        with docker_errors(f"looking up image {reference}"):
            try:
                image_id: str = self._client().images.get(reference).id
                return image_id
            except docker.errors.ImageNotFound:
                return None
            except docker.errors.APIError as exc:
                if exc.status_code == 400:
                    raise BadRequest(
                        f"image: the Docker engine rejected {reference!r}: {explain(exc)}"
                    ) from exc
                raise

    def pull_image(self, reference: str, deadline: float) -> str:
        """Pull ``reference`` and return its id; raise ImageNotFound if it cannot be pulled by ``deadline``.

        ``deadline`` is a time.monotonic() value. The engine streams progress while it pulls, so the
        deadline is checked between progress messages; a silent engine is caught by the client's own
        read timeout.
        """
        repository, tag = parse_repository_tag(reference)
        tag = tag or "latest"
        client = self._client()
        stream = None
        try:
            with docker_errors(f"pulling image {reference}"):
                try:
                    stream = client.api.pull(repository, tag=tag, stream=True, decode=True)
                    for event in stream:
                        if isinstance(event, dict) and event.get("error"):
                            raise ImageNotFound(not_pullable(reference, str(event["error"])))
                        if time.monotonic() > deadline:
                            raise ImageNotFound(
                                not_pullable(
                                    reference, "the pull did not finish within MAO_EXECUTOR_PULL_TIMEOUT"
                                )
                            )
                    pulled: str = client.images.get(reference).id
                    return pulled
                except (docker.errors.APIError, requests.exceptions.ReadTimeout) as exc:
                    # A registry that refuses or is unreachable is reported by the engine as an APIError;
                    # only a broken connection to the engine itself stays a 503 (via _docker_errors).
                    raise ImageNotFound(not_pullable(reference, explain(exc))) from exc
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()

    # -- containers -------------------------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        """Create (not start) the container. Raises ContainerNameInUse, ImageNotFound, BadRequest."""
        # A submitted container's mao.instance is its orchestrator's (spec.labels); /run's requests
        # cannot set it (RunRequest), so theirs is this executor's.
        labels = {INSTANCE_LABEL: self._settings.instance, **spec.labels, MANAGED_LABEL: "true"}
        with docker_errors(f"creating container {spec.name}"):
            try:
                created: Container = _Created(client=self._client()).create(
                    spec.image,
                    command=spec.cmd,
                    name=spec.name,
                    environment=spec.env,
                    user=spec.user,
                    labels=labels,
                    mounts=spec.mounts,
                    group_add=spec.group_add or None,
                    # Tools crawl the web and talk to local services; the host network is what they expect.
                    network_mode="host",
                    detach=True,
                    **spec.limits,
                )
                # What the create asked for, as an inspection would show it (the answer has the id only).
                created.attrs.update({"Name": f"/{spec.name}", "Config": {"Labels": labels}})
                return created
            except docker.errors.ImageNotFound as exc:
                # Removed by someone else between our lookup and the create.
                raise ImageNotFound(
                    f"image {spec.image!r} disappeared from the Docker engine before the container was created; retry"
                ) from exc
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    raise ContainerNameInUse(
                        f"a container named {spec.name!r} already exists on this Docker engine: "
                        "choose another name, or remove the old container"
                    ) from exc
                if exc.status_code is not None and 400 <= exc.status_code < 500:
                    raise BadRequest(
                        f"the Docker engine refused to create the container: {explain(exc)}"
                    ) from exc
                raise

    def start(self, container: Container) -> None:
        """Start the container. Raises BadRequest when the engine refuses (e.g. cmd not found in the image)."""
        with docker_errors(f"starting container {container.name}"):
            try:
                container.start()
            except docker.errors.NotFound as exc:
                raise removed_by_someone_else(container.name) from exc
            except docker.errors.APIError as exc:
                # Runtime refusals ("executable file not found", bad user) are a property of cmd, user and
                # image, so the caller's to fix; older engines report them as 500. So is a device request
                # this engine has no driver for (GPUs on a host without the NVIDIA runtime).
                explained = explain(exc)
                if DEVICE_DRIVER_MISSING in explained:
                    raise BadRequest(
                        f"the container did not start: {explained}; this host's Docker engine has no "
                        "NVIDIA runtime for the step's gpus (docs/backends.md#gpus)"
                    ) from exc
                if exc.status_code is not None and exc.status_code >= 500 and "OCI runtime" not in explained:
                    raise
                raise BadRequest(f"the container did not start: {explained}; check cmd, user and the image") from exc

    def wait(self, container: Container) -> int:
        """Block until the container exits; return its exit code. No time limit: the caller enforces one."""
        with docker_errors(f"waiting for container {container.name}"):
            try:
                result = container.wait()
            except docker.errors.NotFound as exc:
                raise removed_by_someone_else(container.name) from exc
            return int(result.get("StatusCode", -1))

    def kill(self, container: Container) -> None:
        """Kill the container; a container that already stopped or is gone is fine."""
        with docker_errors(f"killing container {container.name}"):
            try:
                container.kill()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: not running any more
                    raise

    def logs_tail(self, container: Container | str, lines: int) -> str:
        """The last ``lines`` lines of stdout+stderr, UTF-8 with replacement, at most 64 KiB; of a
        container or of the one named so (one request to the engine: no inspection first)."""
        name = container if isinstance(container, str) else container.name
        with docker_errors(f"reading the logs of container {name}"):
            try:
                if isinstance(container, str):
                    raw = self._client().api.logs(container, stdout=True, stderr=True, tail=lines)
                else:
                    raw = container.logs(stdout=True, stderr=True, tail=lines)
            except docker.errors.NotFound:
                return ""
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: dead or being removed: its log is going with it
                    raise
                return ""
        return bounded_tail(raw if isinstance(raw, bytes) else b"")

    def remove(self, name: str) -> None:
        """Force-remove (kill if needed) the container named ``name``; one already gone is fine."""
        with docker_errors(f"removing container {name}"):
            try:
                self._client().api.remove_container(name, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                # 409 "removal already in progress": someone (our own cleanup) is on it.
                if exc.status_code != 409:
                    raise

    def remove_labelled(self, labels: dict[str, str]) -> list[str]:
        """Force-remove this instance's containers carrying all ``labels``; return their names."""
        filters = self._labels_filter()
        filters["label"] = [*filters["label"], *(f"{k}={v}" for k, v in labels.items())]
        with docker_errors("listing containers to remove"):
            # sparse: no inspect per container, which fails when one goes away while listing.
            containers = self._client().containers.list(all=True, filters=filters, sparse=True)
        names = [str(c.attrs.get("Names", ["?"])[0]).lstrip("/") for c in containers]
        for name in names:
            self.remove(name)
        return names

    def remove_leftovers(self) -> list[str]:
        """Force-remove every container /run left (its executor crashed mid-run); return their names.
        Submitted containers (``POST /containers``) stay: they outlive this process by design and
        are adopted (``executor.containers``)."""
        with docker_errors("listing leftover containers"):
            containers = self._client().containers.list(all=True, filters=self._labels_filter(), sparse=True)
        names = [
            str(c.attrs.get("Names", ["?"])[0]).lstrip("/")
            for c in containers
            if EXECUTOR_LABEL not in (c.attrs.get("Labels") or {})
        ]
        for name in names:
            self.remove(name)
        return names

    # -- host ----------------------------------------------------------------------------------------------------

    def docker_socket_gid(self) -> int | None:
        """The group owning the Docker socket, or None when it cannot be read from here."""
        try:
            return os.stat(self._settings.docker_socket).st_gid
        except OSError:
            return None

    @staticmethod
    def directory_problem(path: str, field_name: str) -> str | None:
        """Why ``path`` cannot be bind-mounted as ``field_name``, or None when it is an existing directory."""
        try:
            if os.path.isdir(path):
                return None
            if os.path.exists(path):
                return f"{field_name}: {path!r} exists but is not a directory"
        except (OSError, ValueError) as exc:
            return f"{field_name}: {path!r} cannot be checked: {exc}"
        return f"{field_name}: {path!r} does not exist on the executor's host; create it first"


class _Created(ContainerCollection):  # type: ignore[misc]  # docker-py is untyped
    """``containers.create`` without the inspection docker-py makes after it (its ``get``): a
    created container is only started (by id) and named (``create`` adds the name), so the id the
    create answered is all it needs; one round trip to the engine fewer per submission."""

    def get(self, container_id: str) -> Container:
        return self.prepare_model({"Id": container_id})
