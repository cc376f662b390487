"""The checks of settings that one variable alone cannot decide: etcd's endpoints and TLS, the
executor's transport, the API's guards and the data's confinement, the data folder, the pools."""

from __future__ import annotations

import ipaddress
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from executor.private_folder import make_private
from executor.transport import (
    certificate_fingerprint,
    parse_fingerprint,
    socket_path_problem,
    unix_socket_path,
)
from executor.wire.names import name_problem

from ..urls import split_url

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
# The unspecified addresses the prototype's samples send (curl http://0.0.0.0:8080): only a page this
# API served itself has them as its origin, so a rebinding page cannot use them.
UNSPECIFIED_HOSTS = ("0.0.0.0", "::")
_HOSTNAME_RE = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,252})?$|^[0-9a-f:.]+$")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def legacy_open_problem(legacy_open: bool, api_host: str, api_token: str | None) -> str | None:
    """The prototype's tokenless API (MAO_API_LEGACY_OPEN=1): on loopback only, and never with a token."""
    if legacy_open and not is_loopback(api_host):
        return (
            f"MAO_API_LEGACY_OPEN=1 opens the API without a token, which is only allowed on loopback, "
            f"but MAO_API_HOST={api_host}: listen on 127.0.0.1 or drop MAO_API_LEGACY_OPEN"
        )
    if legacy_open and api_token:
        return "MAO_API_LEGACY_OPEN=1 and MAO_API_TOKEN are both set: choose one"
    return None


def api_hostnames(raw_names: str | None, advertise_url: str, api_host: str, problems: list[str]) -> tuple[str, ...]:
    """The Host names the API answers to (MAO_API_HOSTNAMES, else loopback's, the unspecified
    addresses, MAO_API_HOST and the advertised URL's host): anything else is a 421 (DNS rebinding)."""
    if raw_names:
        hostnames = [n.strip().lower() for n in raw_names.split(",") if n.strip()]
    else:
        advertised = split_url(advertise_url)
        hostnames = [*sorted(LOOPBACK_NAMES), "127.0.0.1", "::1", *UNSPECIFIED_HOSTS, api_host.lower()]
        if advertised is not None and advertised.hostname:
            hostnames.append(advertised.hostname.lower())
    for name in hostnames:
        if not _HOSTNAME_RE.fullmatch(name):
            problems.append(f"MAO_API_HOSTNAMES: {name!r} is not a host name or IP address")
    return tuple(dict.fromkeys(hostnames))


def git_credentials_file(credentials: str | None, problems: list[str]) -> Path | None:
    """MAO_GIT_CREDENTIALS: an absolute path to a file only this user may read."""
    git_credentials = Path(credentials).expanduser() if credentials else None
    if git_credentials is not None:
        if not git_credentials.is_absolute():
            problems.append(f"MAO_GIT_CREDENTIALS={credentials} must be an absolute path")
        elif not git_credentials.is_file():
            problems.append(f"MAO_GIT_CREDENTIALS={credentials} is not a file")
        elif git_credentials.stat().st_mode & 0o077:
            problems.append(f"MAO_GIT_CREDENTIALS={credentials} is readable by other users: chmod 600 it")
    return git_credentials


def master_roots(raw: str | None, data_dir: Path, problems: list[str]) -> tuple[Path, ...]:
    """MAO_MASTER_ROOTS, absolute and resolved; by default the local bare repositories'."""
    roots: list[Path] = []
    for item in filter(None, (part.strip() for part in (raw or "").split(","))):
        root = Path(item).expanduser()
        if not root.is_absolute():
            problems.append(f"MAO_MASTER_ROOTS: {item!r} must be an absolute path")
        else:
            roots.append(root.resolve())
    # The default: the local bare repositories POST /bare-repo/init creates.
    return tuple(roots or [(data_dir / "repos").resolve()])


def executor_transport(
    get: Callable[[str], str | None], url: str, insecure: bool, problems: list[str]
) -> bytes | None:
    """The executor's URL checked for a transport that proves the server (docs/security.md#transports):
    ``unix:///path`` (the default, in the data dir), ``https://`` with a pinned certificate
    (MAO_EXECUTOR_TLS_FINGERPRINT, or MAO_EXECUTOR_TLS_CERT the fingerprint is taken from), or plain
    ``http://`` on loopback only with MAO_EXECUTOR_INSECURE_TCP=1 (``insecure``). Returns the pin."""
    pin_text, pin_file = get("MAO_EXECUTOR_TLS_FINGERPRINT"), get("MAO_EXECUTOR_TLS_CERT")
    pin: bytes | None = None
    if pin_text and pin_file:
        problems.append("MAO_EXECUTOR_TLS_FINGERPRINT and MAO_EXECUTOR_TLS_CERT both pin the executor: give one")
    elif pin_text:
        pin = parse_fingerprint(pin_text)
        if pin is None:
            problems.append(
                f"MAO_EXECUTOR_TLS_FINGERPRINT={pin_text!r} is not a SHA-256 fingerprint (64 hex digits, "
                "colons allowed, as `mao-executor --fingerprint` prints it)"
            )
    elif pin_file:
        try:
            pin = certificate_fingerprint(Path(pin_file).expanduser().read_bytes())
        except (OSError, ValueError) as exc:
            problems.append(f"MAO_EXECUTOR_TLS_CERT={pin_file} is not a readable PEM certificate ({exc})")
    if (path := unix_socket_path(url)) is not None:
        if problem := socket_path_problem(path, "MAO_EXECUTOR_URL"):
            problems.append(problem)
        return None
    parts = split_url(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(
            f"MAO_EXECUTOR_URL={url!r} is not unix:///path/to/executor.sock or an http(s) URL"
        )
    elif parts.scheme == "http" and (pin_text or pin_file):
        problems.append(f"MAO_EXECUTOR_URL={url} is plain HTTP, so a pinned certificate cannot apply: write https://")
    elif parts.scheme == "https" and pin is None and not (pin_text or pin_file):
        problems.append(
            f"MAO_EXECUTOR_URL={url} needs the executor's certificate pinned: set MAO_EXECUTOR_TLS_FINGERPRINT "
            "to what `mao-executor --fingerprint` prints on its host (or MAO_EXECUTOR_TLS_CERT to its certificate)"
        )
    elif parts.scheme == "http" and not (insecure and is_loopback(parts.hostname)):
        problems.append(
            f"MAO_EXECUTOR_URL={url} is plain HTTP: whoever listens on that port while the executor is down "
            "receives its token and every step's secrets. Use the executor's Unix socket (the default, "
            "unix://$MAO_DATA_DIR/executor/executor.sock), https:// with MAO_EXECUTOR_TLS_FINGERPRINT, or, "
            "for tests only, a loopback address with MAO_EXECUTOR_INSECURE_TCP=1"
        )
    return pin


MAX_POOL_SLOTS = 100_000


def parse_pools(raw: str, problems: list[str]) -> dict[str, int]:
    """``MAO_POOLS``: ``name=slots`` items separated by commas (``gpu=1,heavy=2``); each problem
    goes into ``problems`` naming the item."""
    pools: dict[str, int] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, slots = (x.strip() for x in item.partition("="))
        if not sep or not name:
            problems.append(f"MAO_POOLS: {item!r} is not name=slots (e.g. gpu=1,heavy=2)")
        elif problem := name_problem(name, "MAO_POOLS pool name"):
            problems.append(problem)
        elif not slots.isdigit() or not 1 <= int(slots) <= MAX_POOL_SLOTS:
            problems.append(f"MAO_POOLS: {item!r}: slots must be a whole number from 1 to {MAX_POOL_SLOTS}")
        elif name in pools:
            problems.append(f"MAO_POOLS: pool {name!r} is given twice")
        else:
            pools[name] = int(slots)
    return pools


def parse_endpoints(raw: str, problems: list[str]) -> list[tuple[str, int]]:
    endpoints = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        # Accept http://host:port too: operators paste etcd's client URLs.
        hostport = item.split("://", 1)[-1].rstrip("/")
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"MAO_ETCD_ENDPOINTS: {item!r} is not host:port")
            continue
        endpoints.append((host.strip("[]"), int(port)))
    if not endpoints and not any(p.startswith("MAO_ETCD_ENDPOINTS") for p in problems):
        problems.append("MAO_ETCD_ENDPOINTS is empty: give at least one host:port")
    return endpoints


TLS_VARIABLES = ("MAO_ETCD_CA", "MAO_ETCD_CERT", "MAO_ETCD_KEY")


def etcd_tls(
    get: Callable[[str], str | None], raw_endpoints: str, insecure: bool, problems: list[str]
) -> tuple[Path | None, Path | None, Path | None, bool]:
    """The etcd TLS files (checked: readable, the key not readable by others) and the plain-HTTP switch.

    Secure by default: without the three files the orchestrator starts only when MAO_ETCD_INSECURE=1
    says plain HTTP is meant (``insecure``), and an endpoint's scheme, when given, must agree."""
    given = {name: get(name) for name in TLS_VARIABLES}
    schemes = {item.strip().split("://", 1)[0].lower() for item in raw_endpoints.split(",") if "://" in item}
    if not any(given.values()):
        if not insecure:
            problems.append(
                "etcd needs TLS: set MAO_ETCD_CA, MAO_ETCD_CERT and MAO_ETCD_KEY (the federation CA and "
                "this instance's client certificate and key; `maoctl instance install` writes them), or "
                "MAO_ETCD_INSECURE=1 for a plain-HTTP etcd, for tests only (anything that reaches its "
                "port, a web page in a browser included, reads and writes it)"
            )
        elif "https" in schemes:
            problems.append(
                "MAO_ETCD_ENDPOINTS has https:// endpoints but MAO_ETCD_INSECURE=1 asks for plain HTTP"
            )
        return None, None, None, insecure
    missing = [name for name, value in given.items() if not value]
    if missing:
        problems.append(
            f"etcd over TLS needs all of {', '.join(TLS_VARIABLES)}; missing: {', '.join(missing)}"
        )
    if insecure:
        problems.append("MAO_ETCD_INSECURE=1 contradicts MAO_ETCD_CA/CERT/KEY: choose TLS or plain HTTP")
    if "http" in schemes:
        problems.append(
            "MAO_ETCD_ENDPOINTS has http:// endpoints but etcd is reached over TLS: write https:// or host:port"
        )
    paths: list[Path | None] = []
    for name, value in given.items():
        path = Path(value).expanduser() if value else None
        if path is not None:
            if problem := tls_file_problem(name, path, private=name == "MAO_ETCD_KEY"):
                problems.append(problem)
        paths.append(path)
    return paths[0], paths[1], paths[2], False


def tls_file_problem(name: str, path: Path, private: bool) -> str | None:
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
        mode = path.stat().st_mode
    except OSError as exc:
        return f"{name}={path} cannot be read: {exc.strerror or exc}"
    if b"-----BEGIN" not in head:
        return f"{name}={path} is not a PEM file"
    if private and mode & 0o077:
        return (
            f"{name}={path} is readable by others (mode {mode & 0o777:o}): the key proves this instance to "
            f"the federation; chmod 600 {path}"
        )
    return None


def default_advertise_url(api_host: str, api_port: int) -> str:
    # A wildcard address means nothing to other machines: publish the host name instead.
    host = socket.gethostname() if api_host in ("0.0.0.0", "::", "") else api_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{api_port}"


def advertise_url_problem(url: str) -> str | None:
    parts = split_url(url)
    if parts is None:
        return f"MAO_ADVERTISE_URL={url!r} is not a valid URL (check the host and port)"
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return f"MAO_ADVERTISE_URL={url!r} is not an http(s) URL such as http://node1.example.org:8080"
    return None


def data_dir_problem(data_dir: Path) -> str | None:
    try:
        # 0700: the database, secrets and every dataset below it are this user's alone.
        make_private(data_dir)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"MAO_DATA_DIR={data_dir} is not writable: {exc.strerror or exc}"
    return None


