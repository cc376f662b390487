"""The executor's error codes, as subclasses of the hierarchy both services share (``executor.wire.errors``).

Sharing the hierarchy keeps one JSON shape (``{"error": code, "message": ...}``) across both services, so
the orchestrator's executor client can relay these codes unchanged.
"""

from __future__ import annotations

from executor.wire.errors import Conflict, Forbidden, NotFound, Unavailable


class DockerUnavailable(Unavailable):
    code = "docker_unavailable"


class ImageNotFound(NotFound):
    code = "image_not_found"


class DockerSocketNotAllowed(Forbidden):
    code = "docker_socket_not_allowed"


class UserNotAllowed(Forbidden):
    code = "user_not_allowed"


class MountNotAllowed(Forbidden):
    code = "mount_not_allowed"


class ContainerNameInUse(Conflict):
    code = "container_name_in_use"
