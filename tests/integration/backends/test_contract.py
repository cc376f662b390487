"""The contract every backend keeps (orchestrator/executors/seam.py), tested against the real engine of
each kind with ContainerSpecs directly: no orchestrator, no git. Parametrised over drivers.DRIVERS.

Data in these tests goes through the backend's own data mode (the shared root for swarm): what a test
reads back from ``spec.output.folder`` came back the way a step's output does.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest

from orchestrator.executors.seam import BackendRejected, EndKind, Handle, Limits

from .conftest import Case

LIMIT = 90  # seconds any one wait may take before the test fails (never reached on a healthy engine)
SLEEP = ["sleep", "120"]
# A shell variable of 100 MB: under a 16 MB limit, the kernel kills it.
OUT_OF_MEMORY = "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


async def run(case: Case, cmd: list[str] | None, **fields: object):  # -> (handle, end)
    spec = case.spec(cmd, **fields)
    handle = await case.backend.submit(spec)
    end = await asyncio.wait_for(case.backend.wait(handle, spec), LIMIT)
    return handle, end


async def read_log(case: Case, handle: Handle, *, follow: bool = False, since: int = 0) -> bytes:
    return b"".join([chunk async for chunk in case.backend.logs(handle, follow=follow, since=since)])


async def started(case: Case, handle: Handle, marker: bytes = b"started") -> None:
    """Return once the tool printed ``marker`` (it runs, on whatever node)."""

    async def look() -> None:
        seen = b""
        async with contextlib.aclosing(case.backend.logs(handle, follow=True)) as stream:
            async for chunk in stream:
                seen += chunk
                if marker in seen:
                    return
        raise AssertionError(f"the log ended without {marker!r}: {seen!r}")

    await asyncio.wait_for(look(), LIMIT)


def needs(case: Case, field: str) -> None:
    """Skip a test of a field the backend does not enforce (it refuses it at init instead)."""
    if field not in case.backend.capabilities().enforces:
        pytest.skip(f"a {case.kind} backend does not enforce {field} (init refuses steps that set it)")


async def nothing_left(case: Case) -> None:
    assert await case.driver.leftovers(case.instance) == []
    assert await case.backend.list_managed(case.instance) == []


@pytest.mark.parametrize(
    ("code", "kind"), [(0, EndKind.COMPLETED), (3, EndKind.FAILED), (255, EndKind.FAILED)]
)
async def test_exit_code(case: Case, code: int, kind: EndKind) -> None:
    handle, end = await run(case, sh(f"echo out; echo err >&2; exit {code}"))
    assert (end.kind, end.exit_code) == (kind, code)
    assert end.retryable is (code != 0)
    assert end.engine_id and end.node
    assert end.run_seconds is not None and end.queued_seconds is not None
    assert "out\nerr\n" in end.log_tail or "err\nout\n" in end.log_tail
    await case.backend.cancel(handle)
    await nothing_left(case)


async def test_oom_kill(case: Case) -> None:
    _, end = await run(case, sh(OUT_OF_MEMORY), limits=Limits(memory=16 * 1024**2))
    assert end.kind is EndKind.OOM_KILLED, end
    assert end.exit_code == 137


async def test_timeout_counts_from_the_start(case: Case) -> None:
    _, end = await run(case, sh("echo before-the-end; exec sleep 120"), timeout=1.5)
    assert end.kind is EndKind.TIMED_OUT, end
    assert end.run_seconds is not None and end.run_seconds >= 1.5
    assert "before-the-end" in end.log_tail
    await nothing_left(case)


async def test_start_timeout_on_a_placement_no_node_matches(case: Case) -> None:
    needs(case, "placement")
    _, end = await run(case, ["true"], placement=case.driver.unschedulable_placement, start_timeout=1.5)
    assert end.kind is EndKind.UNSCHEDULABLE, end
    assert end.retryable and end.run_seconds is None
    assert end.queued_seconds is not None and end.queued_seconds >= 1.5
    await nothing_left(case)


async def test_cancel_leaves_nothing_and_is_safe_to_repeat(case: Case) -> None:
    spec = case.spec(sh("echo started; exec sleep 120"))
    handle = await case.backend.submit(spec)
    await started(case, handle)
    waiting = asyncio.create_task(case.backend.wait(handle, spec))
    await case.backend.cancel(handle)
    await nothing_left(case)
    await case.backend.cancel(handle)  # again: nothing to do, no error
    end = await asyncio.wait_for(waiting, LIMIT)
    assert end.kind is EndKind.CANCELLED and not end.retryable


async def test_submit_twice_is_one_object(case: Case) -> None:
    spec = case.spec(SLEEP)
    first, second = await asyncio.gather(case.backend.submit(spec), case.backend.submit(spec))
    third = await case.backend.submit(spec)
    assert first == second == third
    managed = await case.backend.list_managed(case.instance)
    assert [m.handle.name for m in managed] == [spec.name]


async def test_list_managed_finds_the_instance_objects_only(case: Case) -> None:
    mine = [case.spec(SLEEP, run="runa"), case.spec(SLEEP, run="runb")]
    handles = [await case.backend.submit(spec) for spec in mine]
    other = case.spec(SLEEP, run="runc")
    other = other.model_copy(
        update={"identity": other.identity.model_copy(update={"instance": case.instance + "-x"})}
    )
    other_handle = await case.backend.submit(other)
    try:
        managed = await case.backend.list_managed(case.instance)
        assert sorted(m.handle.name for m in managed) == sorted(h.name for h in handles)
        assert all(m.running for m in managed)
        by_name = {m.handle.name: m for m in managed}
        assert by_name[handles[0].name].labels["mao.run"] == "runa"
        assert by_name[handles[0].name].labels["mao.instance"] == case.instance
        for handle in handles:
            await case.backend.cancel(handle)
        await nothing_left(case)
    finally:
        await case.backend.cancel(other_handle)


async def test_follow_then_resume_since_loses_and_doubles_nothing(case: Case) -> None:
    expected = b"".join(b"line %d\n" % i for i in range(10, 40))
    spec = case.spec(sh("for i in $(seq 10 39); do echo line $i; sleep 0.05; done"))
    handle = await case.backend.submit(spec)
    got = b""
    async with contextlib.aclosing(case.backend.logs(handle, follow=True)) as stream:
        async for chunk in stream:
            got += chunk
            if len(got) >= 20:
                break  # the stream drops here
    rest = await asyncio.wait_for(read_log(case, handle, follow=True, since=len(got)), LIMIT)
    assert got + rest == expected
    end = await asyncio.wait_for(case.backend.wait(handle, spec), LIMIT)
    assert end.kind is EndKind.COMPLETED
    assert await read_log(case, handle) == expected
    assert await read_log(case, handle, since=17) == expected[17:]
    assert await read_log(case, handle, follow=True, since=len(expected)) == b""


async def test_the_tool_runs_unprivileged(case: Case) -> None:
    handle, end = await run(case, sh("id -u; id -g; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status"))
    assert end.kind is EndKind.COMPLETED, end
    out = (await read_log(case, handle)).decode()
    uid, gid = case.driver.tool_user
    assert out.splitlines()[:2] == [str(uid), str(gid)] and uid != 0
    assert re.search(r"^CapEff:\s+0+$", out, re.M), out
    if "no_new_privileges" in case.backend.capabilities().enforces:
        assert re.search(r"^NoNewPrivs:\s+1$", out, re.M), out


async def test_root_is_refused(case: Case) -> None:
    spec = case.spec(["true"], user=(0, 0))
    with pytest.raises(BackendRejected) as caught:
        await case.backend.validate(spec)
    assert caught.value.field == "user"
    with pytest.raises(BackendRejected):
        await case.backend.submit(spec)
    await nothing_left(case)


async def test_input_is_read_only_and_the_output_comes_back(case: Case) -> None:
    script = (
        "touch /usr/src/app/input/new 2>/dev/null && echo input-writable; "
        "cat /usr/src/app/data/old.txt /usr/src/app/input/in.txt > /usr/src/app/data/copy.txt; "
        "rm /usr/src/app/data/old.txt; mkdir /usr/src/app/data/sub; echo deep > /usr/src/app/data/sub/f; "
        "ln -s sub/f /usr/src/app/data/link"
    )
    spec = case.spec(sh(script))
    handle = await case.backend.submit(spec)
    end = await asyncio.wait_for(case.backend.wait(handle, spec), LIMIT)
    assert end.kind is EndKind.COMPLETED, end
    assert b"input-writable" not in await read_log(case, handle)
    out = spec.output.folder
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["copy.txt", "link", "sub", "sub/f"]
    assert (out / "copy.txt").read_text() == "old\ninput\n"
    assert (out / "link").is_symlink() and (out / "link").read_text() == "deep\n"
    assert sorted(p.name for p in spec.input.folder.iterdir()) == ["in.txt"]  # type: ignore[union-attr]


async def test_removed_from_outside_is_node_lost(case: Case) -> None:
    spec = case.spec(sh("echo started; exec sleep 120"))
    handle = await case.backend.submit(spec)
    await started(case, handle)
    await case.driver.remove_from_outside(handle)
    end = await asyncio.wait_for(case.backend.wait(handle, spec), LIMIT)
    assert end.kind is EndKind.NODE_LOST and end.retryable, end
    await nothing_left(case)


async def test_an_image_the_node_lacks_is_image_unavailable(case: Case) -> None:
    _, end = await run(case, ["true"], image_id="sha256:" + "0" * 64)
    assert end.kind is EndKind.IMAGE_UNAVAILABLE and end.retryable, end


async def test_a_follow_opens_with_an_empty_chunk_once_the_tool_started(case: Case) -> None:
    """The engine's stall clock starts at that chunk: time waiting to be scheduled is not silence."""
    if "placement" in case.backend.capabilities().enforces:
        spec = case.spec(
            sh("echo one; sleep 0.5; echo two"), placement=case.driver.unschedulable_placement, start_timeout=30
        )
        handle = await case.backend.submit(spec)
        stream = case.backend.logs(handle, follow=True)
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(1.5)
        assert not first.done()  # not scheduled: nothing yet
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await case.backend.cancel(handle)
    handle2 = await case.backend.submit(case.spec(sh("echo one; sleep 0.5; echo two"), run="run2"))
    chunks = [chunk async for chunk in case.backend.logs(handle2, follow=True)]
    assert chunks[0] == b"" and b"".join(chunks) == b"one\ntwo\n"


async def test_a_followed_burst_is_whole_when_the_tool_exits_at_once(case: Case) -> None:
    expected = b"".join(b"%d\n" % i for i in range(1, 20001))
    spec = case.spec(["seq", "1", "20000"])
    handle = await case.backend.submit(spec)
    followed = await asyncio.wait_for(read_log(case, handle, follow=True), LIMIT)
    assert followed == expected
