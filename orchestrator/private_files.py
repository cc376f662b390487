"""Files only the orchestrator's user may read: the data dir's database and the generated API token.

The process runs with umask 077 (``__main__``), so what it creates is private from the first moment;
``tighten`` fixes what an older version left readable.

The API token is generated when ``MAO_API_TOKEN`` is not given.
It is written once, at first start, to ``$MAO_DATA_DIR/api-token`` (mode 0600, created with
``O_EXCL`` so no other file is followed or reused) and read back at every later start, so the token
survives restarts. Only its path is ever logged. ``maoctl`` run by the same user on the same host
reads it from there (``ctl.token``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import stat
from pathlib import Path

from executor.private_folder import make_private

from .config import Settings

log = logging.getLogger(__name__)

TOKEN_FILE = "api-token"


DATABASE_FILES = ("mao.db", "mao.db-wal", "mao.db-shm", "mao.db-journal")


def tighten(data_dir: Path) -> None:
    """Make the data dir 0700 and the SQLite database files in it 0600 (SQLite gives its WAL and
    SHM files the database file's mode, so they follow)."""
    make_private(data_dir)
    for name in DATABASE_FILES:
        path = data_dir / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
            path.chmod(0o600)
            log.warning("%s was readable by other users: made it 0600", path)


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def ensure_api_token(settings: Settings) -> Settings:
    """``settings`` with the API token to require: MAO_API_TOKEN when given, none in legacy open
    mode, otherwise the data dir's token file (created with a fresh token the first time)."""
    if settings.api_token or settings.api_legacy_open:
        if settings.api_legacy_open:
            log.warning(
                "MAO_API_LEGACY_OPEN=1: the API answers without a token to anyone who can reach "
                "%s (every local user and program); unset it once the prototype's clients are gone",
                settings.api_url,
            )
        return settings
    path = token_path(settings.data_dir)
    token = _read(path) or _create(path)
    log.info("API token in %s (clients send 'Authorization: Bearer <its content>')", path)
    return dataclasses.replace(settings, api_token=token, api_token_file=path)


def _read(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise RuntimeError(f"{path} is not a regular file of this user: remove it and start again")
        if info.st_mode & 0o077:
            os.fchmod(handle.fileno(), 0o600)
            log.warning("%s was readable by other users: made it 0600 (change the token if it leaked)", path)
        token = handle.read().strip()
    return token or None


def _create(path: Path, what: str = "an API token") -> str:
    token = secrets.token_urlsafe(32)
    path.unlink(missing_ok=True)  # an empty file left by a crash between create and write
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    log.info("generated %s at first start", what)
    return token


GATEWAY_SECRET_FILE = "gateway-secret"


def gateway_secret(data_dir: Path) -> bytes:
    """This instance's own secret for marking the raw entries it acknowledged (``gateway.raw``):
    created at first start like the token (0600, ``O_EXCL``), never sent anywhere."""
    path = data_dir / GATEWAY_SECRET_FILE
    return (_read(path) or _create(path, "the gateway's secret")).encode()
