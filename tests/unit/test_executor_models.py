"""The /run request model and the log-tail bound, without Docker."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from executor.docker_output import bounded_tail
from executor.wire.models import RunRequest, describe_validation_error

BASE = {"image": "busybox:latest", "output_dir": "/srv/out"}


def test_defaults() -> None:
    request = RunRequest.model_validate(BASE)
    assert request.cmd is None and request.env is None and request.input_dir is None
    assert request.user is None and request.docker_socket is False
    assert (request.timeout, request.log_lines) == (3600.0, 200)
    assert request.uid is None


def test_integer_timeout_and_uid() -> None:
    request = RunRequest.model_validate({**BASE, "timeout": 5, "user": "1000:1000"})
    assert request.timeout == 5.0 and request.uid == 1000
    assert RunRequest.model_validate({**BASE, "user": "0"}).uid == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"timeout": True}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"log_lines": 2.5}, "log_lines"),
        ({"cmd": ["echo", "a\x00b"]}, "cmd"),
        ({"env": {"A": "x\x00y"}}, "env"),
        ({"user": "99999999999"}, "user"),
        ({"labels": {"mao.managed": "false"}}, "labels"),
        ({"output_dir": "/srv/\x00out"}, "output_dir"),
        ({"extra": 1}, "extra"),
    ],
)
def test_rejected(change: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        RunRequest.model_validate({**BASE, **change})
    assert describe_validation_error(info.value).startswith(f"{field}")


def test_env_value_never_appears_in_the_message() -> None:
    with pytest.raises(ValidationError) as info:
        RunRequest.model_validate({**BASE, "env": {"TOKEN": "hunter2\x00"}})
    message = describe_validation_error(info.value)
    assert "TOKEN" in message and "hunter2" not in message


def test_bounded_tail_keeps_the_end_within_the_byte_limit() -> None:
    assert bounded_tail(b"short\n") == "short\n"
    raw = "é".encode() * 100  # 200 bytes of 2-byte characters
    tail = bounded_tail(raw, max_bytes=51)  # the cut lands inside a character
    assert tail == "é" * 25 and len(tail.encode()) <= 51
    invalid = bounded_tail(b"\xff" * 100, max_bytes=30)  # each becomes a 3-byte U+FFFD
    assert len(invalid.encode()) <= 30 and set(invalid) == {"\ufffd"}
