"""Reading a container's stdout+stderr from the Docker engine: a bounded tail, a stream resumed from
a byte offset, and a follow that is whole even when the engine ends it early.

Everything here blocks on the engine and runs in a worker thread (executor.runs, executor.containers).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import docker.errors
import requests.exceptions
from docker.models.containers import Container

from executor.docker_errors import docker_errors

log = logging.getLogger(__name__)

LOG_TAIL_MAX_BYTES = 64 * 1024


def bounded_tail(raw: bytes, max_bytes: int = LOG_TAIL_MAX_BYTES) -> str:
    """The end of ``raw`` decoded as UTF-8, at most ``max_bytes`` once re-encoded.

    The cut may land inside a multi-byte character; skipping leading continuation bytes avoids a
    replacement character that would itself be 3 bytes and push the result over the limit.
    """
    if len(raw) > max_bytes:
        raw = raw[-max_bytes:]
        start = 0
        while start < len(raw) and start < 4 and 0x80 <= raw[start] <= 0xBF:
            start += 1
        raw = raw[start:]
    text = raw.decode("utf-8", errors="replace")
    # Invalid bytes become U+FFFD (3 bytes each), so the text can still outgrow the limit; trim by characters.
    while len(text.encode("utf-8")) > max_bytes:
        text = text[len(text) // 64 + 1 :]
    return text


def _after(stream: Iterable[Any], skip: int) -> Iterator[bytes]:
    """The non-empty chunks of a log stream past its first ``skip`` bytes."""
    for chunk in stream:
        data = chunk if isinstance(chunk, bytes) else bytes(chunk)
        if skip:
            cut = min(skip, len(data))
            data, skip = data[cut:], skip - cut
        if data:
            yield data


def stream_output(
    container: Container,
    since: int,
    follow: bool,
    sink: Callable[[bytes], bool],
    opened: Callable[[Any], None] = lambda _stream: None,
) -> bool:
    """Hand the container's stdout+stderr from byte ``since`` on to ``sink`` (which returns False
    to stop), until its end (``follow``) or the output so far. The engine keeps the whole log
    of a container it has not removed, in the same order at every read, so offsets are stable.
    ``opened`` gets the stream: closing it from another thread ends a silent follow at once.
    True when the stream ended on its own (everything was handed over, or the container is
    gone); False when it broke off (the engine failed, or the stream was closed under it)."""
    name = container.name
    streams: list[Any] = []

    def hand_over(start: int, follow: bool) -> int | None:
        """Bytes handed over from ``start`` on; None when the sink stopped it."""
        handed = 0
        stream = container.logs(stdout=True, stderr=True, stream=True, follow=follow)
        streams.append(stream)
        opened(stream)
        for data in _after(stream, start):
            if not sink(data):
                return None
            handed += len(data)
        return handed

    try:
        with docker_errors(f"reading the output of container {name}"):
            handed = hand_over(since, follow)
            if handed is None:
                return False
            if follow:
                # Docker 20.10 ends a followed log early when the container exits while the
                # reader lags behind its log file (follow_output says more): once the container
                # has ended, what the follow missed is read again; while it runs, the stream
                # broke off and the reader asks again from the bytes it has.
                container.reload()
                if container.status in ("created", "running", "restarting", "paused"):
                    return False
                if hand_over(since + handed, follow=False) is None:
                    return False
        return True
    except docker.errors.NotFound:
        return True
    except Exception as exc:  # noqa: BLE001 - engine away, or the stream closed under us
        # The reader's stream breaks off here; it asks again from the bytes it has (``since``).
        log.debug("Streaming the output of %s stopped: %s", name, exc)
        return False
    finally:
        for stream in streams:
            if hasattr(stream, "close"):
                with contextlib.suppress(Exception):
                    stream.close()


def follow_output(container: Container, sink: Callable[[bytes], None]) -> None:
    """Hand every byte the container writes to stdout/stderr, from its first, to ``sink`` (each
    once, in order) until it exits and its output is complete. Blocks for the container's whole
    life: run it on a thread of its own (the full log and the stall check read what it hands over).

    A followed log is not a complete record: Docker 20.10 ends it early when the container exits
    while the reader lags behind the log file (seen on a loaded machine: 53 KB of 430 KB), and an
    error can end it any time. What was handed over is always a prefix of the log, and the log
    itself is whole: once the container has ended, the log is read again and what the follow
    missed is handed over (one more pass over the log, handing over nothing when the follow got it all)."""
    delivered = 0

    def hand_over(follow: bool) -> None:
        nonlocal delivered
        for data in _after(container.logs(stdout=True, stderr=True, stream=True, follow=follow), delivered):
            sink(data)
            delivered += len(data)

    try:
        hand_over(follow=True)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        # Until the container ends the stall check sees no output; the timeout still applies.
        log.debug("Following the output of %s stopped: %s", container.name, exc)
    try:
        container.wait()
        hand_over(follow=False)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        log.debug("The output of %s could not be read to its end: %s", container.name, exc)
