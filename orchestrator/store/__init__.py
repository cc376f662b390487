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
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ..errors import DatabaseUnavailable, MaoError
from . import migrate
from .pipelines import PipelineTables
from .run_views import RunView
from .schedules import ScheduleTables

log = logging.getLogger(__name__)

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
