"""What a dataset's master may be, as pure checks: a git URL or path git can use safely, never a URL
carrying credentials. Where a local path may point (``MAO_MASTER_ROOTS``) is configuration and is checked
by ``datasets.masters.resolve_master``.

A master URL is shared with the whole federation (it is in the dataset's registration in etcd), so a
secret in it is a secret given to every member. Credentials can hide in several parts of a URL, and
the check covers the class, not one spelling: a user part of an http(s) URL (where a token is often
put as the user name), a password in any URL, a query string (``?private_token=...``) or a fragment,
each also when percent-encoded (``%3F``, ``%23``, ``%40``, ``%3A``, once or several times over).

The registration check (400) and every use of a master run these, since another federation member may
have written a registration straight into etcd (docs/security.md).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_URL_SCHEMES = frozenset({"file", "git", "http", "https", "ssh", "git+ssh", "ssh+git"})
# git's `<transport>::<address>` syntax selects a remote helper (transport.c: is_urlschemechar).
_HELPER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_GIT_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
MAX_MASTER_LENGTH = 2048


def check_master(master: object) -> str | None:
    """Why ``master`` is not an acceptable dataset master (git URL or local path), or None when it is.

    Plain strings git cannot use (such as the placeholder "git-link" an existing client registers) are
    accepted: they fail, harmlessly, when fetched.
    """
    if not isinstance(master, str) or not master:
        return "the master must be a non-empty string"
    if len(master) > MAX_MASTER_LENGTH:
        return f"the master is longer than {MAX_MASTER_LENGTH} characters"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in master):
        return "the master must not contain whitespace or control characters"
    if master.startswith("-"):
        return "the master must not start with '-'"
    if _HELPER_RE.match(master):
        return "the master must not use git's '<transport>::<address>' remote-helper form"
    url = _GIT_URL_RE.match(master)
    if url:
        scheme, rest = url.group(1).lower(), url.group(2)
        if scheme not in _URL_SCHEMES:
            return f"unsupported master URL scheme {url.group(1)!r} (use https, ssh, git, file or a path)"
        authority = rest.split("/", 1)[0]
        if authority.startswith("-") or authority.rpartition("@")[2].startswith("-"):
            return "the host of the master URL must not start with '-'"
    else:
        # scp-like "user@host:path": ssh would read a host starting with '-' as an option. git refuses
        # such hosts itself since 2.14.1; this catches them at registration already.
        head = master.split(":", 1)[0]
        if ":" in master and "/" not in head and head.rpartition("@")[2].startswith("-"):
            return "the host of the master must not start with '-'"
    return None


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/]*)(.*)$", re.DOTALL)
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
CREDENTIALS_HINT = (
    "put credentials in the file MAO_GIT_CREDENTIALS names (git credential-store lines, "
    "https://user:token@host, mode 0600) or use an SSH key, and register the URL without them"
)


# Enough rounds to undo any encoding a person or a tool would apply; more is an attempt to hide.
_DECODE_ROUNDS = 5


def _decoded(text: str) -> str:
    """``text`` percent-decoded until it no longer changes (so ``%253F`` is seen as ``?``)."""
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(text)
        if decoded == text:
            return text
        text = decoded
    return text


def credentials_problem(master: str) -> str | None:
    """Why ``master`` may carry credentials (see the module's docstring), or None."""
    url = _SCHEME_RE.match(master)
    if url is None:
        return _scp_credentials_problem(master)
    scheme, authority, rest = url.group(1).lower(), url.group(2), url.group(3)
    plain = _decoded(authority + rest)
    if "?" in plain or "#" in plain:
        return (
            "the master URL has a query string or a fragment, where access tokens are put; "
            f"git needs neither: {CREDENTIALS_HINT}"
        )
    userinfo, at, _ = _decoded(authority).rpartition("@")
    if not at:
        return None
    if ":" in userinfo or scheme not in _SSH_SCHEMES:
        return f"the master URL contains credentials: {CREDENTIALS_HINT}"
    return None


def _scp_credentials_problem(master: str) -> str | None:
    # git's scp-like ``user@host:path`` (a colon before any slash) has a user part but no password:
    # a colon in front of the '@' can only be one.
    head = master.split("/", 1)[0]
    if ":" not in head or "@" not in head:
        return None
    user = _decoded(head.rpartition("@")[0])
    return f"the master contains a password: {CREDENTIALS_HINT}" if ":" in user else None


def local_path(master: str) -> str | None:
    """The filesystem path git would use for ``master``, or None when it names a remote."""
    url = _SCHEME_RE.match(master)
    if url is not None:
        scheme, host, path = url.group(1).lower(), url.group(2), url.group(3)
        if scheme != "file":
            return None
        if host not in ("", "localhost"):
            return f"//{host}{path}"  # a UNC-like path: never under a root
        return unquote(path)
    # git reads "host:path" (a colon before any slash) as scp-like ssh; everything else is a path.
    head = master.split("/", 1)[0]
    if ":" in head:
        return None
    return master
