"""``Store.write`` and ``Store.read``: a transaction as one synchronous body, on SQLite run whole in a
thread. Generated: writes whose callers are cancelled at any moment, bodies that fail. Every write
is all or nothing; a caller cancelled while its body runs gets its ``CancelledError`` only once the
transaction ended, and the writer's turn is not given up before (the next write never meets a
transaction under way: one writer at a time); what the readers see is exactly the committed writes."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.store import Store
from orchestrator.store.tables import RegistryCacheRow, utcnow

# One write: (fails in its body, its caller cancelled after this many turns of the loop or never,
# through ``session`` rather than ``write``: the asynchronous writers wait for the same turn).
WRITES = st.lists(
    st.tuples(st.booleans(), st.one_of(st.none(), st.integers(0, 6)), st.booleans()), min_size=1, max_size=12
)


class Boom(Exception):
    pass


def names(s: Session) -> list[str]:
    return list(s.scalars(select(RegistryCacheRow.name).order_by(RegistryCacheRow.name)))


@settings(max_examples=25, deadline=None)
@given(WRITES)
def test_each_write_is_whole_and_one_at_a_time(writes: list[tuple[bool, int | None, bool]]) -> None:
    asyncio.run(_writes(writes))


async def _writes(writes: list[tuple[bool, int | None, bool]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite+aiosqlite:///{Path(folder) / 'db.sqlite'}")
        await store.start()
        under_way = threading.Lock()  # held while a body runs: a second body at once would fail it
        ended: list[str] = []  # the bodies that returned (their transactions commit)

        def body(name: str, fails: bool) -> Callable[[Session], None]:
            def write(s: Session) -> None:
                assert under_way.acquire(blocking=False), "two write transactions at once"
                try:
                    s.add(RegistryCacheRow(kind="tool", name=name, value={}, cached_at=utcnow()))
                    s.flush()
                    threading.Event().wait(0.002)  # long enough for a cancellation to land inside
                    if fails:
                        raise Boom(name)
                    ended.append(name)
                finally:
                    under_way.release()

            return write

        async def in_session(name: str) -> None:
            async with store.session("write") as s:
                assert not under_way.locked(), "a transaction in the writer's thread is under way"
                s.add(RegistryCacheRow(kind="tool", name=name, value={}, cached_at=utcnow()))
                await s.flush()
                await asyncio.sleep(0.002)
                assert not under_way.locked(), "a transaction in the writer's thread began"
            ended.append(name)

        async def cancel_after(task: asyncio.Task[None], turns: int) -> None:
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()

        tasks = []
        for number, (fails, cancel, asynchronous) in enumerate(writes):
            if asynchronous:
                task = asyncio.create_task(in_session(f"a{number}"))
                cancel, fails = None, False  # cancelled, its rollback is the driver's affair
            else:
                task = asyncio.create_task(store.write("write", body(f"t{number}", fails)))
            tasks.append((task, fails))
            if cancel is not None:
                asyncio.create_task(cancel_after(task, cancel))
        for task, fails in tasks:
            try:
                await task
            except asyncio.CancelledError:
                assert task.cancelled()
            except Boom:
                assert fails
            else:
                assert not fails
        try:
            # Exactly the bodies that returned were committed, whether or not their callers waited.
            assert await store.read("read", names) == sorted(ended)
        finally:
            await store.close()


def test_a_failing_body_writes_nothing_and_its_error_reaches_the_caller(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        await store.start()

        def half(s: Session) -> None:
            s.add(RegistryCacheRow(kind="tool", name="half", value={}, cached_at=utcnow()))
            s.flush()
            raise Boom("after the first row")

        with pytest.raises(Boom):
            await store.write("write half", half)
        assert await store.read("read", names) == []
        # The writer is free again, and a read cannot write.
        await store.write("write", lambda s: s.add(RegistryCacheRow(kind="tool", name="t", value={}, cached_at=utcnow())))
        assert await store.read("read", names) == ["t"]
        with pytest.raises(Exception, match="readonly|read-only|query_only|attempt to write"):
            await store.read("write in a read", lambda s: s.add(RegistryCacheRow(kind="tool", name="x", value={}, cached_at=utcnow())) or s.flush())
        await store.close()

    asyncio.run(scenario())
