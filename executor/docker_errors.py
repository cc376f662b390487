"""The Docker engine's failures as executor errors: the edge where Docker SDK and requests errors stop.

Every blocking call on the engine (executor.docker_runner, executor.docker_output) runs inside
``docker_errors`` so the layers above deal only with MaoError; the messages the executor gives for
the engine's refusals are written here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from executor.errors import DockerUnavailable
from executor.wire.errors import Conflict

# Docker's answer to DeviceRequests no installed driver takes (``--gpus`` without the NVIDIA runtime).
DEVICE_DRIVER_MISSING = "could not select device driver"


@contextmanager
def docker_errors(action: str) -> Iterator[None]:
    """Turn "the engine did not answer" in any of its library forms into DockerUnavailable."""
    try:
        yield
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise DockerUnavailable(
            f"the Docker engine did not answer while {action}: {exc}; check that dockerd is running "
            "and that DOCKER_HOST points at it"
        ) from exc
    except docker.errors.APIError as exc:
        if exc.status_code is not None and exc.status_code >= 500:
            raise DockerUnavailable(f"the Docker engine failed while {action}: {explain(exc)}") from exc
        raise
    except docker.errors.DockerException as exc:
        # Raised by from_env() when no engine can be reached at all (bad DOCKER_HOST, missing socket).
        raise DockerUnavailable(
            f"the Docker engine cannot be reached while {action}: {exc}; check DOCKER_HOST and that dockerd runs"
        ) from exc


def removed_by_someone_else(name: str) -> Conflict:
    return Conflict(
        f"container {name} was removed by someone else while it was being run; run it again",
        code="container_removed",
    )


def explain(exc: Exception) -> str:
    """The engine's own explanation of ``exc`` where it gave one."""
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def not_pullable(reference: str, reason: str) -> str:
    return (
        f"image {reference!r} is not on this Docker engine and could not be pulled ({reason}); "
        "check the reference, or load the image on the executor's host (docker pull / docker load)"
    )
