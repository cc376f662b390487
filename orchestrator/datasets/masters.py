"""Where a dataset's master may be: never a URL carrying credentials, and a local path only under
``MAO_MASTER_ROOTS`` (docs/security.md).

A master URL is shared with the whole federation (it is in the dataset's registration in etcd), so a
secret in it is a secret given to every member. Credentials can hide in several parts of a URL, and
the check covers the class, not one spelling: a user part of an http(s) URL (where a token is often
put as the user name), a password in any URL, a query string (``?private_token=...``) or a fragment,
each also when percent-encoded (``%3F``, ``%23``, ``%40``, ``%3A``, once or several times over).

A master is git's remote for the dataset. Left unchecked, a local path lets anyone who may register a
dataset read any repository the orchestrator's user can read (``/etc``, another instance's data) and
makes the orchestrator push a ``ground-truth`` branch into it. The check runs when a dataset is
registered (400) and again whenever a master is used, since another federation member may have
written the registration straight into etcd.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote

from orchestrator.errors import BadRequest

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


def resolve_master(master: str, roots: Sequence[Path]) -> str:
    """``master`` as git should use it: a remote URL unchanged, a local path resolved (symlinks
    followed; a relative path against the first root) and refused unless it lies under a root.
    Raises BadRequest saying why."""
    if problem := credentials_problem(master):
        raise BadRequest(problem, code="master_credentials")
    path = local_path(master)
    if path is None:
        return master
    if not roots:
        raise BadRequest("local-path masters are disabled on this instance (MAO_MASTER_ROOTS is empty)")
    base = roots[0]
    candidate = Path(path) if os.path.isabs(path) else base / path
    resolved = candidate.resolve()
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return str(resolved)
    raise BadRequest(
        f"the master {master!r} is a local path outside the folders this instance allows "
        f"({', '.join(str(r) for r in roots)}): create a local master with POST /bare-repo/init "
        "(maoctl repo add), or ask the operator to add its folder to MAO_MASTER_ROOTS",
        code="master_not_allowed",
    )
