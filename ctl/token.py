"""Where the local orchestrator keeps its API token: the file it wrote into its data dir.

An orchestrator started without ``MAO_API_TOKEN`` generates a token into ``$MAO_DATA_DIR/api-token``
(mode 0600). maoctl run by the same user on the same host reads it from there: ``MAO_DATA_DIR``, or
the orchestrator's default ``~/.mao/data``, and sends it only through that orchestrator's socket
(``ctl.local_socket``): never to another machine, nor to whoever holds the TCP port.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

TOKEN_FILE = "api-token"


def default_data_dir() -> Path:
    return Path(os.environ.get("MAO_DATA_DIR") or Path.home() / ".mao" / "data").expanduser()


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
