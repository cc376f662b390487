"""A submitted container's output as an async stream: the engine's blocking reader
(executor.docker_output.stream_output, on a thread of the followers' pool) bridged into the event loop,
with back-pressure, for ``GET /containers/{name}/logs``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from executor.docker_output import stream_output
from executor.docker_runner import DockerRunner

# Output handed from the engine's stream to a reader, at most this many chunks ahead of it.
STREAM_QUEUE = 64


class StreamBroken(Exception):
    """A container's output stream broke off before its end (the engine failed mid-stream)."""


async def output_stream(
    runner: DockerRunner, followers: ThreadPoolExecutor, name: str, since: int, follow: bool
) -> AsyncGenerator[bytes, None]:
    """The container's output from byte ``since``; with ``follow``, until it has ended. Raises
    StreamBroken at the end when the engine's stream broke off (the reader asks again)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_QUEUE)
    streams: list[Any] = []
    stop = [False]
    whole = [False]

    def sink(chunk: bytes) -> bool:
        if stop[0]:
            return False
        # Blocks this thread while the reader is behind: the engine's stream waits, not memory.
        asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
        return not stop[0]

    def read() -> None:
        try:
            container = runner.container(name)
            # A container that is gone has nothing more to say: its output ended whole.
            whole[0] = container is None or stream_output(container, since, follow, sink, streams.append)
        finally:
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(queue.put(None), loop)

    reading = loop.run_in_executor(followers, read)
    reading.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
        if not whole[0]:
            raise StreamBroken(f"the output of {name} broke off")
    finally:
        stop[0] = True
        while not queue.empty():  # a writer blocked on a full queue goes on, sees stop
            queue.get_nowait()
        for stream in streams:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(stream.close)
