"""The settings of a ``docker`` backend (``MAO_BACKEND_<NAME>_<KEY>``): apart from the backend, so that
configuration reads them without importing the backends (kinds.py here)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from executor.transport import parse_fingerprint, socket_path_problem, unix_socket_path
from executor.wire.models import MAX_GPUS, MAX_TIMEOUT


class DockerSettings(BaseModel):
    """``MAO_BACKEND_<NAME>_<KEY>`` of a ``docker`` backend (keys in capitals there). Without ``url``,
    the instance's executor (``MAO_EXECUTOR_URL`` with its transport settings, checked by config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[str, Field(pattern=r"^(unix:///\S+|https://[^\s/]+(/\S*)?)$")] | None = None
    token: Annotated[str, Field(min_length=1)] | None = None
    tls_fingerprint: str | None = None
    start_timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] | None = None
    # The GPUs of the executor's host (NVIDIA runtime installed): the operator's word, since the
    # executor's engine does not say; a step may ask for up to this many.
    gpus: Annotated[int, Field(ge=0, le=MAX_GPUS)] = 0

    @model_validator(mode="after")
    def _transport(self) -> DockerSettings:
        # The same rules as MAO_EXECUTOR_URL (docs/security.md#transports), for an executor of its own:
        # its Unix socket, or https with its certificate pinned; never plain http.
        if self.tls_fingerprint is not None and parse_fingerprint(self.tls_fingerprint) is None:
            raise ValueError("TLS_FINGERPRINT is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
        if self.url is None:
            return self
        if (path := unix_socket_path(self.url)) is not None:
            if problem := socket_path_problem(path, "URL"):
                raise ValueError(problem)
        elif self.tls_fingerprint is None:
            raise ValueError(f"{self.url} needs the executor's certificate pinned: set TLS_FINGERPRINT")
        return self

    def fingerprint(self) -> bytes | None:
        return parse_fingerprint(self.tls_fingerprint) if self.tls_fingerprint else None
