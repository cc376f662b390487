"""Where a dataset's master may be: never a URL carrying credentials, and a local path only under
``MAO_MASTER_ROOTS`` (docs/security.md).

The credential checks themselves are pure and live in ``domain.masters``.

A master is git's remote for the dataset. Left unchecked, a local path lets anyone who may register a
dataset read any repository the orchestrator's user can read (``/etc``, another instance's data) and
makes the orchestrator push a ``ground-truth`` branch into it. The check runs when a dataset is
registered (400) and again whenever a master is used, since another federation member may have
written the registration straight into etcd.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from orchestrator.domain.masters import credentials_problem, local_path
from orchestrator.errors import BadRequest


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
