"""Full step logs without Docker: the executor's bounded output file (head, marker, tail; followers),
its following of a container's output (against a stand-in container), and the orchestrator's
streaming mask (secrets split across chunks)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import docker.errors
from docker.models.containers import Container
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.docker_output import follow_output, stream_output
from executor.output_log import LogBook, OutputLog
from orchestrator.runs.attempt import redact
from orchestrator.runs.step_logs import Masker


async def _read(output: OutputLog, follow: bool = False) -> bytes:
    return b"".join([chunk async for chunk in output.chunks(follow=follow)])


async def test_a_log_within_the_bound_is_kept_whole(tmp_path: Path) -> None:
    output = OutputLog(tmp_path / "c", 256 * 1024, asyncio.get_running_loop())
    text = b"".join(b"line %d\n" % i for i in range(1, 5001))
    assert output.segment < len(text) < output.max_bytes  # spans several segments, within the bound
    for start in range(0, len(text), 777):
        output.write(text[start : start + 777])
    output.end()
    assert await _read(output) == text


async def test_beyond_the_bound_the_head_a_marker_and_the_tail_are_kept(tmp_path: Path) -> None:
    limit = 64 * 1024
    output = OutputLog(tmp_path / "c", limit, asyncio.get_running_loop())
    lines = [b"line %06d\n" % i for i in range(1, 50_001)]  # 600 KB, far over the bound
    text = b"".join(lines)
    for start in range(0, len(text), 1000):
        output.write(text[start : start + 1000])
    output.end()
    kept = await _read(output)
    head, _, rest = kept.partition(b"\n[mao: ")
    marker, _, tail = rest.partition(b"]\n")
    omitted = int(marker.split(b" ")[0])
    assert b"exceeded MAO_STEP_LOG_MAX_BYTES" in marker
    assert text.startswith(head) and text.endswith(tail)
    assert len(head) + omitted + len(tail) == len(text)
    # Cut between whole lines: no line (nor a secret in it) is split by the marker.
    assert head.endswith(b"\n") and tail.startswith(b"line ") and len(tail) % len(lines[0]) == 0
    assert len(head) + len(tail) <= limit
    assert len(head) >= limit // 4 and len(tail) >= limit // 4
    # On disk too: no more than the bound.
    assert sum(p.stat().st_size for p in (tmp_path / "c").iterdir()) <= limit


async def test_a_follower_gets_output_as_it_comes_and_stops_at_the_end(tmp_path: Path) -> None:
    output = OutputLog(tmp_path / "c", 1024 * 1024, asyncio.get_running_loop())
    got: list[bytes] = []

    async def follow() -> None:
        async for chunk in output.chunks(follow=True):
            got.append(chunk)

    task = asyncio.create_task(follow())
    await asyncio.to_thread(output.write, b"first\n")
    for _ in range(200):
        if got:
            break
        await asyncio.sleep(0.05)
    assert b"".join(got) == b"first\n" and not task.done()
    await asyncio.to_thread(output.write, b"second\n")
    await asyncio.to_thread(output.end)
    await asyncio.wait_for(task, 30)
    assert b"".join(got) == b"first\nsecond\n"


async def test_the_log_book_replaces_drops_and_cleans_up(tmp_path: Path) -> None:
    book = LogBook(str(tmp_path / "logs"))
    assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o700
    first = book.open("c1", 64 * 1024)
    first.write(b"old")
    second = book.open("c1", 64 * 1024)
    assert book.get("c1") is second and not first.folder.exists()
    assert book.drop("c1") and book.get("c1") is None and not book.drop("c1")
    book.open("c2", 64 * 1024)
    book.close()
    assert book.get("c2") is None


def test_the_mask_holds_across_any_chunk_boundary() -> None:
    secrets = {"A": "s3cr3t-value", "B": "pass", "C": "abc"}  # "abc" is too short to mask
    text = "start s3cr3t-value mid passpass s3cr3t-valu s3cr3t-values abc end s3cr3t-value"
    expected = redact(text, secrets).encode()
    rng = random.Random(7)
    data = text.encode()
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        masker = Masker(secrets)
        out = b"".join(masker.feed(p) for p in pieces) + masker.flush()
        assert out == expected
        assert b"s3cr3t-value" not in out


def test_without_secrets_chunks_pass_through() -> None:
    masker = Masker(None)
    assert masker.feed(b"abc") == b"abc" and masker.flush() == b""


def test_only_what_may_start_a_secret_is_held_back() -> None:
    masker = Masker({"A": "secret"})
    assert masker.feed(b"waiting for input\n") == b"waiting for input\n"  # a follower sees it now
    assert masker.feed(b"value: sec") == b"value: "
    assert masker.feed(b"ret!") == b"***!"
    assert masker.feed(b"se") == b"" and masker.flush() == b"se"


# -- following a container's output ----------------------------------------------------------------


class _EarlyEndingContainer:
    """A container whose followed log ends early (Docker 20.10 under load, or an error), while its
    log read after the end is whole; each read may cut the bytes into chunks anywhere."""

    name = "c"

    def __init__(self, output: bytes, followed: int, chunks: list[int], error: bool) -> None:
        self.output, self.followed, self.chunks, self.error = output, followed, chunks, error
        self.waited = False

    def _cut(self, data: bytes) -> Iterator[bytes]:
        sizes = itertools.cycle(self.chunks)
        while data:
            size = next(sizes)
            yield data[:size]
            data = data[size:]

    def logs(self, *, stdout: bool, stderr: bool, stream: bool, follow: bool) -> Iterator[bytes]:
        assert stdout and stderr and stream
        if not follow:
            assert self.waited, "the complete log is read only once the container has ended"
            yield from self._cut(self.output)
            return
        yield from self._cut(self.output[: self.followed])
        if self.error:
            raise docker.errors.APIError("the stream broke")

    def wait(self) -> dict[str, int]:
        self.waited = True
        return {"StatusCode": 0}


@settings(max_examples=200, deadline=None)
@given(
    output=st.binary(max_size=600),
    followed=st.floats(min_value=0, max_value=1),
    chunks=st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=5),
    error=st.booleans(),
)
def test_the_output_handed_over_is_the_whole_log_however_the_follow_ended(
    output: bytes, followed: float, chunks: list[int], error: bool
) -> None:
    container = _EarlyEndingContainer(output, int(len(output) * followed), chunks, error)
    got: list[bytes] = []
    follow_output(cast(Container, container), got.append)
    assert b"".join(got) == output and all(got)


class _StreamedContainer(_EarlyEndingContainer):
    """The same container as stream_output meets it: ended or still running when its follow ends."""

    def __init__(self, output: bytes, followed: int, chunks: list[int], error: bool, running: bool) -> None:
        super().__init__(output, followed, chunks, error)
        self.status = "running" if running else "exited"
        self.waited = not running  # an ended container's log may be read whole

    def reload(self) -> None:
        pass


@settings(max_examples=200, deadline=None)
@given(
    output=st.binary(max_size=600),
    followed=st.floats(min_value=0, max_value=1),
    since=st.floats(min_value=0, max_value=1),
    chunks=st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=5),
    error=st.booleans(),
    running=st.booleans(),
)
def test_a_streamed_log_is_whole_or_says_it_broke_off(
    output: bytes, followed: float, since: float, chunks: list[int], error: bool, running: bool
) -> None:
    """stream_output (the executor's log API) from any offset: a follow that ended early is read
    again once the container has ended; while it runs, the stream says it broke off (the reader
    asks again from the bytes it has). Whatever was handed over is the log from ``since`` on, or a
    prefix of it."""
    start = int(len(output) * since)
    container = _StreamedContainer(output, max(start, int(len(output) * followed)), chunks, error, running)
    got: list[bytes] = []
    whole = stream_output(cast(Container, container), start, True, lambda data: got.append(data) or True)
    handed = b"".join(got)
    assert all(got)
    if whole:
        assert handed == output[start:]
    else:
        assert output[start:].startswith(handed)
        assert running or error
