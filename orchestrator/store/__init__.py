"""The instance's SQL database (SQLite by default, PostgreSQL in the compose deployment).

Contracts: every method is one transaction; an unreachable database raises ``DatabaseUnavailable``
(HTTP 503); values returned are frozen read models or plain values, never ORM rows bound to a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatabaseUnavailable, MaoError
from . import migrate
from .pipelines import PipelineTables
from .run_views import RunView
from .schedules import ScheduleTables

log = logging.getLogger(__name__)
T = TypeVar("T")

# Whether this task holds a write transaction already (a nested one would wait for itself).
_holding: contextvars.ContextVar[bool] = contextvars.ContextVar("mao_store_holding", default=False)


# Connections a PostgreSQL store holds at most (SQLAlchemy's default pool: 5 kept, 10 more on demand).
PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 10
# Read connections of an SQLite store (its one write connection aside).
SQLITE_READERS = 4


class Store(PipelineTables, ScheduleTables):
    """The database, with writes that wait their turn instead of failing under load.

    Every write transaction of the process runs one after the other (``session``: an asyncio queue
    in front of one writer), and reads run beside them (``reading``). On SQLite (the embedded
    default) the writer is one connection of its own and the readers are read-only connections (WAL
    lets them read while it writes): SQLite allows one writer at a time anyway, and transactions
    racing for it failed with "database is locked" once ``busy_timeout`` ran out, or at once when one
    that read first found another had committed. On PostgreSQL writer and readers share the pool,
    each waiting its turn in asyncio (never in the pool's own 30 s timeout): with one writer, the
    store's read-then-write transactions (a registration cached, a merge queued for several steps)
    cannot race into a duplicate key or a lost update. No run fails because the database is busy."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._readers: async_sessionmaker[AsyncSession] | None = None
        self._reader_engine: AsyncEngine | None = None
        self._write_turn = asyncio.Semaphore(1)
        self._read_turn = asyncio.Semaphore(SQLITE_READERS)
        self._definition_writes: Counter[str] = Counter()
        self._definition_writing: Counter[str] = Counter()
        # SQLite: the same file through the synchronous driver, for ``write`` and ``read`` (a whole
        # transaction in one thread: see ``write``), each side with threads of its own.
        self._sync: _SyncSide | None = None

    async def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            # No ping before each transaction: an SQLite connection is a file this process holds
            # open, never dropped by a server; the ping was four thread round trips of aiosqlite on
            # every transaction. A failing file (full disk, gone) fails the statement itself.
            self.engine = create_async_engine(self.url, pool_size=1, max_overflow=0, **kwargs)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            self._reader_engine = create_async_engine(
                self.url, pool_size=SQLITE_READERS, max_overflow=0, **kwargs
            )
            event.listen(self._reader_engine.sync_engine, "connect", _sqlite_reader_pragmas)
            if ":memory:" not in self.url and "///" in self.url:  # one file both drivers open
                self._sync = _SyncSide.of(self.url)
        else:
            # A server's connection can go stale (PostgreSQL restarted): pinged before each use.
            kwargs["pool_pre_ping"] = True
            if self.url.startswith("postgresql"):
                kwargs["connect_args"] = {"timeout": 5}
            self.engine = create_async_engine(
                self.url, pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW, **kwargs
            )
            self._reader_engine = self.engine
            # One writer, and readers taking the rest of the pool: nobody waits in the pool itself.
            self._read_turn = asyncio.Semaphore(PG_POOL_SIZE + PG_MAX_OVERFLOW - 1)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._readers = async_sessionmaker(self._reader_engine, expire_on_commit=False)
        async with self._translate("migrate the schema"):
            async with self._write_turn, self.engine.begin() as conn:
                await conn.run_sync(migrate.upgrade)

    async def close(self) -> None:
        if self._sync is not None:
            sync, self._sync = self._sync, None
            await asyncio.to_thread(sync.close)
        if self._reader_engine is not None and self._reader_engine is not self.engine:
            await self._reader_engine.dispose()
        if self.engine is not None:
            await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _translate(self, doing: str) -> AsyncIterator[None]:
        try:
            yield
        except MaoError:
            raise
        except (OperationalError, OSError, TimeoutError) as exc:
            if _disk_full(exc):
                raise DatabaseUnavailable(
                    f"the disk is full: the database could not {doing}: {_short(exc)}"
                ) from exc
            raise DatabaseUnavailable(
                f"the database did not answer while trying to {doing}: {_short(exc)}"
            ) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise DatabaseUnavailable(f"lost the database connection while trying to {doing}") from exc
            raise
        except SQLAlchemyError as exc:
            log.exception("database error while trying to %s", doing)
            raise MaoError(f"database error while trying to {doing}") from exc

    @contextlib.asynccontextmanager
    async def session(self, doing: str) -> AsyncIterator[AsyncSession]:
        """One transaction that may write: committed when the block ends, rolled back when it
        raises. It waits its turn (one writer at a time on SQLite) rather than fail when busy."""
        assert self._sessions is not None, "Store.start() was not called"
        if _holding.get():  # the one writer: a write transaction inside another would wait for itself
            raise RuntimeError(
                f"{doing}: a write transaction opened inside another one would wait for itself"
            )
        async with self._translate(doing):
            async with self._write_turn:
                token = _holding.set(True)
                try:
                    async with self._sessions() as session, session.begin():
                        yield session
                finally:
                    _holding.reset(token)

    @contextlib.asynccontextmanager
    async def reading(self, doing: str) -> AsyncIterator[AsyncSession]:
        """One read-only transaction, beside the writes (on SQLite its connection refuses to write:
        a write in here is a bug that fails loudly)."""
        assert self._readers is not None, "Store.start() was not called"
        async with self._translate(doing):
            async with self._read_turn, self._readers() as session, session.begin():
                yield session

    async def write(self, doing: str, body: Callable[[Session], T]) -> T:
        """``session`` with its transaction as one synchronous ``body``: committed when it returns,
        rolled back when it raises. On SQLite the whole transaction runs in the writer's thread, one
        hop there and back: through the asynchronous driver each statement, the ``BEGIN`` and the
        ``COMMIT`` were a hop of their own (~0.8 ms each, half of a step's database time). On
        PostgreSQL it runs in the async session (``run_sync``): a round trip per statement either
        way. A caller cancelled meanwhile gets its ``CancelledError`` once the transaction has ended
        (committed or not), never while it is under way: the writer's turn is not given up early."""
        if self._sync is None:
            async with self.session(doing) as s:
                return await s.run_sync(body)
        if _holding.get():
            raise RuntimeError(
                f"{doing}: a write transaction opened inside another one would wait for itself"
            )
        sync = self._sync
        async with self._translate(doing), self._write_turn:
            return await _settled(asyncio.get_running_loop().run_in_executor(sync.writer, sync.write, body))

    async def read(self, doing: str, body: Callable[[Session], T]) -> T:
        """``reading`` with its transaction as one synchronous ``body`` (``write``'s one hop on
        SQLite, on a read-only connection of its own)."""
        if self._sync is None:
            async with self.reading(doing) as s:
                return await s.run_sync(body)
        sync = self._sync
        async with self._translate(doing), self._read_turn:
            return await _settled(asyncio.get_running_loop().run_in_executor(sync.readers, sync.read, body))

    async def check(self) -> None:
        async with self.reading("answer a health check") as s:
            await s.execute(text("SELECT 1"))

    # -- runs ----------------------------------------------------------------------------------
    # Kept for callers outside the run engine (API, federation scheduler); see ``store.run_reads``.
    async def get_run(self, run_id: str) -> RunView | None:
        from .run_reads import RunReads

        return await RunReads(self).get(run_id)

    async def list_runs(
        self,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int = 50,
        trigger: str | None = None,
    ) -> list[RunView]:
        from .run_reads import RunReads

        return await RunReads(self).list(pipeline=pipeline, status=status, limit=limit, trigger=trigger)


class _SyncSide:
    """An SQLite store's synchronous engines: one write connection used by one thread (the writer's
    turn is the store's, ``Store.write``), and ``SQLITE_READERS`` read-only ones with a thread each."""

    def __init__(self, writer: Engine, reader: Engine) -> None:
        self.writer_engine = writer
        self.reader_engine = reader
        self.writes = sessionmaker(writer, expire_on_commit=False)
        self.reads = sessionmaker(reader, expire_on_commit=False)
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="mao-db-writer")
        self.readers = ThreadPoolExecutor(SQLITE_READERS, thread_name_prefix="mao-db-reader")

    @classmethod
    def of(cls, url: str) -> _SyncSide:
        sync_url = url.replace("+aiosqlite", "+pysqlite", 1)
        # Used by one thread at a time, but not always the one that opened it (a pool's threads).
        args = {"check_same_thread": False}
        writer = create_engine(sync_url, pool_size=1, max_overflow=0, connect_args=args)
        event.listen(writer, "connect", _sqlite_pragmas)
        reader = create_engine(sync_url, pool_size=SQLITE_READERS, max_overflow=0, connect_args=args)
        event.listen(reader, "connect", _sqlite_reader_pragmas)
        return cls(writer, reader)

    def write(self, body: Callable[[Session], T]) -> T:
        with self.writes() as session, session.begin():
            return body(session)

    def read(self, body: Callable[[Session], T]) -> T:
        with self.reads() as session, session.begin():
            return body(session)

    def close(self) -> None:
        self.writer.shutdown(wait=True)
        self.readers.shutdown(wait=True)
        self.writer_engine.dispose()
        self.reader_engine.dispose()


async def _settled(work: asyncio.Future[T]) -> T:
    """``work``'s result; when the caller is cancelled meanwhile, its ``CancelledError`` only once
    ``work`` has ended (a transaction in a thread cannot be interrupted: it commits or rolls back)."""
    cancelled: asyncio.CancelledError | None = None
    while not work.done():
        try:
            await asyncio.wait([work])
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        if not work.cancelled():
            work.exception()  # retrieved: the caller is told it was cancelled, not how the work ended
        raise cancelled
    return work.result()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL never corrupts the database; a power cut may lose the last few run-record
    # updates, which is a fair price for not paying an fsync on each of a step's bookkeeping writes.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_reader_pragmas(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _disk_full(exc: BaseException) -> bool:
    text = str(exc).lower()  # SQLite: "database or disk is full"; PostgreSQL: "could not extend file"
    return "disk is full" in text or "no space left" in text or "could not extend file" in text


def _short(exc: BaseException) -> str:
    text_ = str(exc).strip() or type(exc).__name__
    return text_.splitlines()[0][:300]
