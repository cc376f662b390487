"""The executor's error codes, as subclasses of the hierarchy both services share (``executor.wire.errors``).

Sharing the hierarchy keeps one JSON shape (``{"error": code, "message": ...}``) across both services, so
the orchestrator's executor client can relay these codes unchanged.
"""

from __future__ import annotations

from executor.wire.errors import Conflict, Forbidden, NotFound, Unavailable


class DockerUnavailable(Unavailable, code="docker_unavailable"):
    """The Docker engine did not answer."""


class ImageNotFound(NotFound, code="image_not_found"):
    """The tool's image is not on this engine and may not, or could not, be pulled."""


class DockerSocketNotAllowed(Forbidden, code="docker_socket_not_allowed"):
    """A job asked for the Docker socket with an image not on the allow-list."""


class UserNotAllowed(Forbidden, code="user_not_allowed"):
    """A job asked to run as root, or as another user than the configured tool user."""


class MountNotAllowed(Forbidden, code="mount_not_allowed"):
    """A job asked for a mount outside the data root, or of the executor's own folders."""


class ContainerNameInUse(Conflict, code="container_name_in_use"):
    """A container of that name exists already (a job submitted twice)."""
