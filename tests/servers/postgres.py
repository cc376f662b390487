"""A private PostgreSQL cluster per test session."""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .process import (
    LOCALHOST,
    LOG_TAIL_LINES,
    ServerStartError,
    _read_tail,
    _register,
    _run,
    _unregister,
    free_port,
    is_root,
)

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _postgres_bindir() -> Path:
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.parent.name
        return tuple(int(x) for x in part.split(".") if x.isdigit())

    if candidates:
        return Path(max(candidates, key=version)).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise ServerStartError(
        "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (install postgresql)"
    )


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1:<port> with role ``mao`` and database ``mao``.

    When running as root, the cluster lives in its own /tmp folder owned by ``postgres`` (the
    server refuses to run as root, and pytest's tmp folders are not readable by other users);
    the server binaries then run via ``runuser -u postgres --``.
    """

    user = "mao"
    database = "mao"

    def __init__(self, tmpdir: str | os.PathLike[str] | None = None, port: int | None = None) -> None:
        self.bindir = _postgres_bindir()
        self.port = port or free_port()
        self.host = LOCALHOST
        self.password = secrets.token_hex(12)
        self.as_root = is_root()
        self._own_base = False
        if self.as_root or tmpdir is None:
            self.base = Path(tempfile.mkdtemp(prefix="mao-pg-"))
            self._own_base = True
        else:
            self.base = Path(tmpdir) / "postgres"
            self.base.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base / "data"
        self.socket_dir = self.base / "sock"
        if len(str(self.socket_dir)) > 80:  # unix socket paths are limited to ~107 bytes
            self.socket_dir = Path(tempfile.mkdtemp(prefix="mao-pgs-"))
        self.log_path = self.base / "postgres.log"
        self.running = False

    # -- helpers ---------------------------------------------------------------------------
    def _as_pg(self, args: Sequence[str]) -> list[str]:
        args = [str(a) for a in args]
        return ["runuser", "-u", "postgres", "--", *args] if self.as_root else args

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def log_tail_block(self, lines: int = LOG_TAIL_LINES) -> str:
        return f"\n--- last {lines} lines of {self.log_path} ---\n{_read_tail(self.log_path, lines)}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command as the superuser over the unix socket; return its output."""
        args = [
            self._bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", database,
            "-c", sql,
        ]  # fmt: skip
        return _run(self._as_pg(args), f"psql {sql!r}", timeout=60, cwd=str(self.base)).stdout

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> PostgresServer:
        for d in (self.base, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            for d in (self.base, self.socket_dir):
                shutil.chown(d, "postgres", "postgres")
                os.chmod(d, 0o700)
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            _run(
                self._as_pg([
                    self._bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                    "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-E", "UTF8", "--no-locale", "--no-sync",
                ]),
                "initdb",
                timeout=180,
                cwd=str(self.base),
            )  # fmt: skip
        options = " ".join([
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            f"-c listen_addresses={self.host}",
            "-c max_connections=300",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ])  # fmt: skip
        try:
            _run(
                self._as_pg([
                    self._bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
                    "-o", options, "-w", "-t", str(int(timeout)), "start",
                ]),
                "pg_ctl start",
                timeout=timeout + 30,
                cwd=str(self.base),
            )  # fmt: skip
        except ServerStartError as exc:
            raise ServerStartError(f"PostgreSQL could not start: {exc}{self.log_tail_block()}") from exc
        self.running = True
        _register(self)
        if not fresh:  # resumed after stop(keep_data=True): role and database exist
            return self
        try:
            self.psql(f"CREATE ROLE {self.user} LOGIN CREATEDB PASSWORD '{self.password}'")
            self.psql(f"CREATE DATABASE {self.database} OWNER {self.user}")
        except ServerStartError as exc:
            self.stop()
            raise ServerStartError(f"PostgreSQL setup failed: {exc}{self.log_tail_block()}") from exc
        return self

    def stop(self, timeout: float = 30.0, keep_data: bool = False) -> None:
        """Stop the server; with ``keep_data`` a later start() resumes the same cluster."""
        if self.running:
            try:
                _run(
                    self._as_pg([self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                                 "-t", str(int(timeout)), "stop"]),
                    "pg_ctl stop",
                    timeout=timeout + 30,
                    cwd=str(self.base),
                )  # fmt: skip
            except ServerStartError:
                self._kill_postmaster()
            self.running = False
        if keep_data:
            return
        _unregister(self)
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)
        if not str(self.socket_dir).startswith(str(self.base)):
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass

    # -- URLs ---------------------------------------------------------------------------------
    def url_for(self, database: str) -> str:
        """SQLAlchemy async URL for ``database`` as role mao."""
        return f"postgresql+asyncpg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def dsn_for(self, database: str) -> str:
        """Plain libpq/asyncpg DSN for ``database`` as role mao."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def create_database(self, name: str) -> str:
        """(Re)create an empty database ``name`` owned by mao and return its SQLAlchemy URL.

        An existing database of that name is dropped first, so each caller gets a fresh one.
        """
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"bad database name {name!r}: use lower-case letters, digits and _")
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.psql(f"CREATE DATABASE {name} OWNER {self.user}")
        return self.url_for(name)

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} running={self.running}>"


def start_postgres(tmpdir: str | os.PathLike[str] | None = None, port: int | None = None) -> PostgresServer:
    """initdb + start a private PostgreSQL; ``.url`` is ready for SQLAlchemy (asyncpg)."""
    return PostgresServer(tmpdir, port=port).start()
