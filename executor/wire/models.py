"""The /run request body and its validation, and the /run answer.

Both are shared with the orchestrator (``orchestrator.executors``), which builds a ``RunRequest`` and
reads a ``RunResult``: one model on both sides of the wire, not a dict built in one place and checked
in another.

Strict types on purpose: a ``"timeout": "60"`` or ``"cmd": "ls -l"`` is a caller bug, and silently coercing
it would run something other than what the caller meant. Unknown fields are rejected for the same reason:
a misspelt ``timout`` must not quietly become a one-hour default.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from executor.wire.images import image_problem
from executor.wire.names import NAME_PATTERN

MAX_TIMEOUT = 7 * 24 * 3600.0
# A /run body is a few KiB at most; a larger one is a mistake or an attack. The orchestrator checks its
# steps against this at init, so a step that could never be sent is refused there.
MAX_BODY_BYTES = 1024 * 1024
# The Docker engine refuses less than 6 MiB.
MIN_MEMORY = 6 * 1024 * 1024
# ... and less than 0.01 CPU (NanoCPUs 10,000,000): "Range of CPUs is from 0.01 to N".
MIN_CPUS = 0.01
MAX_CPUS = 1024
MAX_PIDS = 4_194_304
MAX_GPUS = 64
DEFAULT_TIMEOUT = 3600.0
DEFAULT_LOG_LINES = 200
MIN_LOG_BYTES = 64 * 1024
MIN_TMP_SIZE = 1024 * 1024
DEFAULT_TMP_SIZE = 256 * 1024 * 1024
MANAGED_LABEL = "mao.managed"
INSTANCE_LABEL = "mao.instance"
# Where tools find their data; fixed so tool images need no configuration.
OUTPUT_MOUNT = "/usr/src/app/data"
INPUT_MOUNT = "/usr/src/app/input"
SOCKET_MOUNT = "/var/run/docker.sock"

_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
_USER_RE = re.compile(r"^[0-9]{1,10}(:[0-9]{1,10})?$")
_MAX_ID = 2**32 - 2  # 2**32-1 is (uid_t)-1, "no user", in the kernel


def _no_nul(value: str, what: str) -> str:
    # The engine and the kernel cut strings at NUL; refuse rather than run a truncated command.
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    return value


def _host_path(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    _no_nul(value, field)
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path on the executor's host, got {value!r}")
    return value


def _checked_image(value: str) -> str:
    problem = image_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# An image reference the engine can be asked about (executor.wire.images).
ImageReference = Annotated[str, AfterValidator(_checked_image)]


class ContainerFields(BaseModel):
    """What every container request says about its container: the image and command, its data
    folders, who it runs as and its limits. ``RunRequest`` (``POST /run``) and ``SubmitRequest``
    (``POST /containers``, executor/wire/containers.py) add how they are waited for."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    image: ImageReference
    cmd: list[str] | None = None
    env: dict[str, str] | None = None
    output_dir: str
    input_dir: str | None = None
    user: str | None = None
    docker_socket: bool = False
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] = DEFAULT_TIMEOUT
    name: str | None = None
    labels: dict[str, str] | None = None
    # Resource limits (executor.hardening): bytes of memory, CPUs (fractions allowed), processes.
    memory: Annotated[int, Field(ge=MIN_MEMORY, le=2**50)] | None = None
    cpus: Annotated[float, Field(ge=MIN_CPUS, le=MAX_CPUS)] | None = None
    pids: Annotated[int, Field(ge=8, le=MAX_PIDS)] | None = None
    # GPUs the container gets (the engine's NVIDIA runtime: DeviceRequests, executor.hardening).
    # Absent rather than 0 for none, so that an orchestrator talks to an executor older than GPUs.
    gpus: Annotated[int, Field(ge=1, le=MAX_GPUS)] | None = None
    # Disk a tool may fill while it runs (executor.hardening): the root file system is read-only and
    # /tmp a tmpfs of ``tmp_size`` bytes (absent: DEFAULT_TMP_SIZE), unless ``writable_root`` (the
    # step's explicit choice; its writes outside /tmp and its folders are then unbounded).
    writable_root: bool = False
    tmp_size: Annotated[int, Field(ge=MIN_TMP_SIZE, le=2**40)] | None = None

    @field_validator("cmd")
    @classmethod
    def _cmd(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                return None  # the prototype's way of saying "the image's default command", like null
            for item in value:
                _no_nul(item, "cmd items")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            if not _ENV_KEY_RE.fullmatch(key):
                raise ValueError(
                    f"invalid variable name {key!r}: use letters, digits and '_', not starting with a digit"
                )
            # Only the key is named: values may be secrets and must not end up in responses or logs.
            _no_nul(item, f"the value of {key}")
        return value

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, value: str) -> str:
        return _host_path(value, "output_dir") or ""

    @field_validator("input_dir")
    @classmethod
    def _input_dir(cls, value: str | None) -> str | None:
        return _host_path(value, "input_dir")

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _USER_RE.fullmatch(value) or any(int(part) > _MAX_ID for part in value.split(":")):
            raise ValueError(f"must be numeric 'uid:gid' (or 'uid'), e.g. '1000:1000', got {value!r}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.fullmatch(value):
            raise ValueError(
                f"invalid container name {value!r}: use 1-201 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            if not key or len(key) > 255:
                raise ValueError(f"label keys must be 1-255 characters, got {key!r}")
            if key in cls.reserved_labels():
                raise ValueError(f"label {key!r} is set by the executor and cannot be overridden")
            _no_nul(key, "label keys")
            _no_nul(item, f"the value of label {key}")
        return value

    @classmethod
    def reserved_labels(cls) -> frozenset[str]:
        return frozenset({MANAGED_LABEL, INSTANCE_LABEL})

    @property
    def uid(self) -> int | None:
        return None if self.user is None else int(self.user.split(":")[0])


class RunRequest(ContainerFields):
    """``POST /run``: run one container to its end in one request (the executor waits, enforces the
    timeout and the stall timeout, and removes the container before it answers)."""

    log_lines: Annotated[int, Field(ge=1, le=10000)] = DEFAULT_LOG_LINES
    # Killed (``stalled`` in the result) when it writes nothing to stdout/stderr for this long.
    stall_timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] | None = None
    # Bytes of the container's output the executor keeps for GET /logs (head and tail beyond it);
    # absent: 50 MiB (executor.output_log).
    log_max_bytes: Annotated[int, Field(ge=MIN_LOG_BYTES, le=2**40)] | None = None


class RunResult(BaseModel):
    """How one container ended. ``exit_code`` is None when it was killed before exiting on its own
    (timeout, stall, cancel)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    exit_code: int | None = None
    timed_out: bool = False
    stalled: bool = False
    cancelled: bool = False
    image_id: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration: float | None = None
    log_tail: str = ""
    container: str | None = None


class KillRequest(BaseModel):
    """``POST /kill``: stop and remove every container of this instance labelled with ``run`` (and
    ``step`` when given), and refuse /run requests for them that arrive afterwards."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    run: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,64}$")]
    # A step name (the orchestrator's name rule): it is matched against container labels.
    step: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None


class ImageRequest(BaseModel):
    """``POST /image``: the id of an image on this engine (null when absent; never pulled)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    image: ImageReference


RUN_LABEL = "mao.run"
STEP_LABEL = "mao.step"


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, naming the field, for the 400 message."""
    parts = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (not part of the /run API; check its spelling)"
        elif item["type"] == "missing":
            message = "is required"
        parts.append(f"{field}: {message}")
    return "; ".join(parts)
