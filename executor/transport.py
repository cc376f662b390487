"""Local transports that authenticate the server before anything is sent (docs/security.md#transports).

Two hops carry a token on one host: the orchestrator to its executor (the executor token, every step's
private variables) and maoctl to its local orchestrator (the API token). Over a TCP port, whoever
listens on it while the real server restarts receives them. So both hops use a Unix socket in a
folder only the server's user may write (0700, the socket 0600), and the client proves the server
before it sends a byte:

- the folder holding the socket belongs to a trusted uid and grants no one else write access (so no
  one else could have put the socket there), and the socket belongs to a trusted uid;
- after connecting, the kernel's record of the listening process (``SO_PEERCRED``) says a trusted uid
  made it: a socket planted by another user, even in a folder misconfigured as world-writable, fails.

A trusted uid is the client's own, root's, or, for a client running as root, the owner of the socket's
folder (``trusted_for_socket``: maoctl sending a data dir's token to that dir's owner, whose token it
is anyway).

For a remote executor (TCP) the server proves itself by TLS with a pinned certificate
(``parse_fingerprint``; the executor makes its own self-signed one, ``executor/tls.py``).

Shared by the executor (its listener), the orchestrator (its executor client and its own API socket)
and maoctl, so that every hop applies the same rules.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import stat
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from .private_folder import make_private

UNIX_SCHEME = "unix://"
# sockaddr_un holds 108 bytes including the final NUL.
MAX_SOCKET_PATH = 107
_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class UntrustedServer(Exception):
    """The listener could not prove it is the expected server; nothing was sent to it. Not an OSError,
    so that no client library mistakes it for a network error to wrap or retry."""


def unix_socket_path(url: str) -> str | None:
    """The socket path of a ``unix:///path/to.sock`` URL, or None for any other URL."""
    if not url.startswith(UNIX_SCHEME):
        return None
    return url[len(UNIX_SCHEME) :].rstrip("/") or None


def socket_path_problem(path: str, setting: str) -> str | None:
    """Why ``path`` cannot be a socket path (for configuration checks), or None."""
    if not path.startswith("/"):
        return f"{setting}: the socket path {path!r} must be absolute"
    if "\x00" in path:
        return f"{setting}: the socket path must not contain NUL"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return (
            f"{setting}: the socket path {path} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket "
            "address holds; choose a shorter one"
        )
    return None


def trusted_uids(*extra: int) -> frozenset[int]:
    """The uids a client trusts to run its server: its own, root's, and ``extra``."""
    return frozenset({os.geteuid(), 0, *extra})


def trusted_for_socket(path: str) -> frozenset[int]:
    """``trusted_uids``, plus, for a process running as root, the owner of the socket's folder: root
    may send a server the secrets of that folder's owner (maoctl run as root with a data dir's token,
    the compose healthcheck of an executor that handed its socket to the orchestrator's user)."""
    if os.geteuid() != 0:
        return trusted_uids()
    try:
        return trusted_uids(os.stat(os.path.dirname(path) or ".").st_uid)
    except OSError:
        return trusted_uids()


def _names(uids: Iterable[int]) -> str:
    return " or ".join(f"uid {uid}" for uid in sorted(uids))


def socket_file_problem(path: str, trusted: frozenset[int]) -> str | None:
    """Why the socket at ``path`` cannot be trusted (wrong owner of it or of its folder, a folder
    others may write), or None. A socket that is not there is no problem here: connecting fails."""
    folder = os.path.dirname(path) or "."
    found = _entry(os.stat, folder, f"its folder {folder}", stat.S_ISDIR, f"{folder} is not a folder", trusted)
    if not isinstance(found, os.stat_result):
        return found
    if found.st_mode & 0o022:
        return (
            f"its folder {folder} may be written by other users (mode {stat.S_IMODE(found.st_mode):o}), so "
            "anyone could have put the socket there: use a folder only the server's user may write"
        )
    found = _entry(os.lstat, path, "it", stat.S_ISSOCK, "it is not a socket", trusted)
    return None if isinstance(found, os.stat_result) else found


def _entry(
    look: Callable[[str], os.stat_result],
    path: str,
    who: str,
    is_kind: Callable[[int], bool],
    not_kind: str,
    trusted: frozenset[int],
) -> os.stat_result | str | None:
    """``look(path)`` when it is of the right kind and a trusted uid owns it; else why not (``who``
    names it in the sentence), or None when it is not there."""
    try:
        found = look(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{who} cannot be checked: {exc.strerror or exc}"
    if not is_kind(found.st_mode):
        return not_kind
    if found.st_uid not in trusted:
        return f"{who} belongs to uid {found.st_uid}, not {_names(trusted)}"
    return found


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process that made the listening socket ``sock`` is connected to (Linux)."""
    _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(uid)


def check_peer(sock: socket.socket, path: str, trusted: frozenset[int]) -> None:
    """Raise UntrustedServer unless the server at the other end of ``sock`` runs as a trusted uid."""
    uid = peer_uid(sock)
    if uid not in trusted:
        raise UntrustedServer(
            f"the process listening on {path} runs as uid {uid}, not {_names(trusted)}: it is not the "
            "server this client expects, so nothing was sent to it"
        )


def check_socket_file(path: str, trusted: frozenset[int]) -> None:
    if problem := socket_file_problem(path, trusted):
        raise UntrustedServer(f"the socket {path} is not trusted: {problem}; nothing was sent to it")


def connect_unix(path: str, trusted: frozenset[int], timeout: float | None = None) -> socket.socket:
    """A connected socket to the server at ``path``, proven to run as a trusted uid. Raises
    UntrustedServer, or OSError when nothing listens there."""
    check_socket_file(path, trusted)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        check_peer(sock, path, trusted)
    except BaseException:
        sock.close()
        raise
    return sock


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a proven Unix socket (the compose healthcheck uses it)."""

    def __init__(self, path: str, trusted: frozenset[int], timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path
        self._trusted = trusted

    def connect(self) -> None:
        self.sock = connect_unix(self._path, self._trusted, self.timeout)


# -- the server side --------------------------------------------------------------------------------
def listen_private(path: Path, owner: tuple[int, int] | None = None) -> socket.socket:
    """A bound Unix socket at ``path`` that only this user (and ``owner``, when this process is root)
    can reach: its folder 0700, the socket 0600. A socket left by a process that died is replaced; one
    that still answers is another server's, and OSError says so."""
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    mine = {os.geteuid(), *([owner[0]] if owner else [])}
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in mine:
        raise OSError(f"{folder} is not a folder of this user (uid {os.geteuid()}): cannot listen in it")
    make_private(folder)
    if owner is not None and os.geteuid() == 0:
        os.chown(folder, *owner)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(f"{path} exists and is not a socket: remove it or choose another path")
        if _answers(path):
            raise OSError(f"another server already listens on {path}")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Born 0600: the folder already shuts others out, this keeps the socket itself private too.
        previous = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)
        if owner is not None and os.geteuid() == 0:
            os.chown(path, *owner)
    except BaseException:
        sock.close()
        raise
    return sock


def socket_inode(path: Path) -> int:
    return os.lstat(path).st_ino


def remove_socket(path: Path, inode: int) -> None:
    """Remove the socket file at ``path`` if it is still the one this server bound (``inode``)."""
    with contextlib.suppress(OSError):
        info = os.lstat(path)
        if info.st_ino == inode and stat.S_ISSOCK(info.st_mode):
            os.unlink(path)


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2)
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


# -- TLS pinning ------------------------------------------------------------------------------------
def parse_fingerprint(text: str) -> bytes | None:
    """The 32 bytes of a SHA-256 certificate fingerprint written as ``sha256:AB:CD:...``, ``AB:CD:...``
    or plain hex (any case), or None when ``text`` is not one."""
    value = text.strip().lower().removeprefix("sha256:").replace(":", "")
    return bytes.fromhex(value) if _HEX64.fullmatch(value) else None


def format_fingerprint(digest: bytes) -> str:
    return "sha256:" + ":".join(f"{b:02X}" for b in digest)


def certificate_fingerprint(pem: bytes) -> bytes:
    """SHA-256 of the DER form of the (first) certificate in ``pem``: what TLS pinning compares."""
    import ssl

    text = pem.decode("ascii", "replace")
    begin = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text[begin:end])).digest()
