"""Finding the API token without being told: the file the orchestrator wrote into its data dir.

An orchestrator started without ``MAO_API_TOKEN`` generates a token into ``$MAO_DATA_DIR/api-token``
(mode 0600). maoctl run by the same user on the same host reads it from there: ``MAO_DATA_DIR``, or
the orchestrator's default ``~/.mao/data``. Only for an orchestrator on a loopback address: the token
of this host's instance is never sent to another machine.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

TOKEN_FILE = "api-token"


def default_data_dir() -> Path:
    return Path(os.environ.get("MAO_DATA_DIR") or Path.home() / ".mao" / "data").expanduser()


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_token(url: str, data_dir: Path | None = None) -> str | None:
    """The token in the local orchestrator's token file, when ``url`` is on this host and the file is
    readable (by this user: it is 0600); None otherwise."""
    host = urlsplit(url).hostname or ""
    if not _is_loopback(host):
        return None
    try:
        token = ((data_dir or default_data_dir()) / TOKEN_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None
