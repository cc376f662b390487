"""A dataset's local bare repository and its remote: git plumbing, refs, fetch and push (synchronous).

Every git call names the repository explicitly (``GIT_DIR``) and runs in the hardened environment of
``_git``; network calls are bounded by ``network_timeout`` and their failures said in one sentence
naming the master (its credentials redacted). ``ensure_ground_truth`` creates the master's
ground-truth branch once, accepting another node's when it raced us. The node branches' moves are in
``branches``, the work folders in ``repo`` (``DatasetRepo``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git
from git.exc import GitError as GitPythonError

from orchestrator.errors import GitError, NotFound
from orchestrator.phases import phase

from . import objects
from ._git import (
    MOVED,
    GitCommandFailed,
    hardened_env,
    looks_rejected,
    looks_unreachable,
    redact,
    rejection_cause,
    run_git,
)
from .known import Known
from .local import GROUND_TRUTH, LOG_FORMAT, checked_master, checked_name, init_bare_at, parse_log
from .ref_files import read_refs
from .trees import TreeLimits

HEADS = "refs/heads/"
TRACKING = "refs/remotes/origin/"
FETCH_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"
# A full commit id (SHA-1 or SHA-256): what a caller hands in as a parent, never an option or a name.
OID_RE = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")


@dataclass(frozen=True)
class RepoSettings:
    """What every dataset repository of an instance shares: the identity its commits carry, how long
    a network call may take, who tools run as and what a commit may hold (``hygiene``)."""

    git_name: str
    git_email: str
    network_timeout: float = 120
    tool_owner: tuple[int, int] | None = None
    max_output: int | None = None
    max_files: int | None = None


class PushRejected(GitError):
    """The master refused a push (a hook, a protected branch, or a branch that moved there: ``moved``):
    nothing of it landed."""

    def __init__(self, message: str, *, moved: bool) -> None:
        super().__init__(message)
        self.moved = moved


class BareRepo:
    """One dataset's local bare repository (``<data_dir>/datasets/<name>.git``) and its remote."""

    def __init__(self, data_dir: Path, name: str, master: str, settings: RepoSettings) -> None:
        self.name = checked_name(name, "dataset name")
        # Who tools run as (work folders are handed to them) and what a commit may hold; see hygiene.
        self.tool_owner = settings.tool_owner
        self.max_output = settings.max_output
        self.max_files = settings.max_files
        # Every walk of a work folder or a snapshot: entries, depth, path length (trees.py).
        self.limits = TreeLimits(settings.max_files)
        self.master = checked_master(master)
        for label, value in (("git name", settings.git_name), ("git email", settings.git_email)):
            if not value or any(ord(ch) < 32 or ch in "<>" for ch in value):
                raise ValueError(f"invalid {label} {value!r}")
        self.git_name = settings.git_name
        self.git_email = settings.git_email
        self.network_timeout = settings.network_timeout
        self.data_dir = Path(data_dir)
        self.git_dir = self.data_dir / "datasets" / f"{self.name}.git"
        self.work_root = self.data_dir / "work" / self.name
        self._repo: git.Repo | None = None
        self._origin_configured = False  # origin's URL and refspec checked once per object
        # The copies of the master's refs (refs/remotes/origin/*) are current but for what moved
        # there since without a push of ours: a fetch succeeded, and no push of ours failed after it
        # in a way that may have landed unseen (an answer lost to a timeout or a dropped connection,
        # the master failing after it updated the ref) or that says the master moved. Until then a
        # work folder is not prepared, nor a vote merged, without a fetch first.
        self._synced = False
        # The commits made here and which commit each work folder holds (known.py): git not asked again.
        self.known = Known()

    # -- plumbing helpers -------------------------------------------------------------------------

    def _runner(self) -> git.Git:
        if self._repo is None:
            if not (self.git_dir / "HEAD").is_file():
                raise GitError(f"dataset {self.name!r} has no local repository yet (sync it first)")
            try:
                self._repo = git.Repo(self.git_dir)
            except GitPythonError as exc:
                raise GitError(f"the local repository of dataset {self.name!r} is damaged: {exc}") from exc
        return self._repo.git

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def _git(
        self,
        *args: str,
        what: str,
        network: bool = False,
        index: Path | None = None,
        work_tree: Path | None = None,
        identity: bool = False,
        ok: tuple[int, ...] = (0,),
        abort: threading.Event | None = None,
    ) -> tuple[int, str]:
        # GIT_DIR is always explicit so that nothing inherited can point git at another repository.
        extra = {"GIT_DIR": str(self.git_dir)}
        if index is not None:
            extra["GIT_INDEX_FILE"] = str(index)
        if work_tree is not None:
            extra["GIT_WORK_TREE"] = str(work_tree)
        if identity:
            extra.update(
                GIT_AUTHOR_NAME=self.git_name,
                GIT_AUTHOR_EMAIL=self.git_email,
                GIT_COMMITTER_NAME=self.git_name,
                GIT_COMMITTER_EMAIL=self.git_email,
            )
        status, out, _ = run_git(
            self._runner(),
            args,
            env=hardened_env(extra),
            what=what,
            prefix=f"dataset {self.name!r}: ",
            timeout=self.network_timeout if network else None,
            ok=ok,
            abort=abort,
        )
        return status, out

    def _out(self, *args: str, what: str, **kwargs: Any) -> str:
        return self._git(*args, what=what, **kwargs)[1].strip()

    def _write_tree(self, index: Path, what: str) -> str:
        """``git write-tree`` of the index file ``index``: in this process when libgit2 gives git's
        answer (objects.py), else by git."""
        with phase("in process: write-tree"):
            tree = objects.tree_of_index(self.git_dir, index)
        return tree if tree is not None else self._out("write-tree", what=what, index=index)

    def _commit_tree(self, tree: str, parents: tuple[str, ...], message: str, what: str) -> str:
        """``git commit-tree --no-gpg-sign <tree> -p <parent>... -m <message>`` with this instance's
        identity as author and committer: the same object, made in this process when it can be
        (objects.py), else by git."""
        ident = objects.identity(self.git_dir, self.git_name, self.git_email)
        if ident is not None:
            with phase("in process: commit-tree"):
                made = objects.commit(self.git_dir, tree, parents, message, ident)
            if made is not None:
                return made
        args = ["commit-tree", "--no-gpg-sign", tree]
        for parent in parents:
            args += ["-p", parent]
        return self._out(*args, "-m", message, what=what, identity=True)

    def _rev(self, ref: str) -> str | None:
        """Commit id ``ref`` (a full refs/... name) points to, or None when it does not exist."""
        status, out = self._git(
            "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", what=f"resolve {ref}", ok=(0, 1)
        )
        return out.strip() if status == 0 else None

    def has_local_branch(self, branch: str) -> bool:
        """Whether the local repository exists and holds ``branch`` (no network)."""
        if not (self.git_dir / "HEAD").is_file():
            return False
        return self._rev(HEADS + checked_name(branch, "branch")) is not None

    def _refs(self) -> dict[str, str]:
        """Every local branch and remote-tracking ref with its commit: read from the ref files, or
        in one git call when they are not plainly readable (ref_files.py)."""
        refs = read_refs(self.git_dir, (HEADS, TRACKING))
        if refs is not None:
            return refs
        out = self._out(
            "for-each-ref", "--format=%(objectname) %(refname)", HEADS, TRACKING, what="list refs"
        )
        refs = {}
        for line in out.splitlines():
            oid, _, ref = line.partition(" ")
            refs[ref] = oid
        return refs

    def _master_shown(self) -> str:
        return redact(self.master)

    def _network_error(self, exc: GitCommandFailed, doing: str) -> GitError:
        if exc.timed_out:
            reason = f"the master {self._master_shown()} could not be reached (timed out after {self.network_timeout:g}s)"
        elif looks_unreachable(exc.stderr):
            reason = f"the master {self._master_shown()} could not be reached: {exc.detail}"
        else:
            reason = exc.detail
        return GitError(f"dataset {self.name!r}: could not {doing}: {reason}")

    def _update_ref(self, ref: str, new: str, old: str) -> None:
        """update-ref with an expected old value ("" = must not exist)."""
        self._git("update-ref", "-m", "mao", ref, new, old, what=f"update {ref}")

    # -- remote ------------------------------------------------------------------------------------

    def sync(self) -> None:
        """Create the bare repository if missing, point origin at the master, fetch (with prune)."""
        if not ((self.git_dir / "HEAD").is_file() and (self.git_dir / "objects").is_dir()):
            self.close()
            self._origin_configured = False
            self._synced = False
            init_bare_at(self.git_dir, f"create the local repository of dataset {self.name!r}")
        if not self._origin_configured:
            self._configure_origin()
        self.fetch()

    def _configure_origin(self) -> None:
        status, url = self._git("config", "--get", "remote.origin.url", what="read origin", ok=(0, 1))
        if status != 0 or url.strip() != self.master:
            self._git("config", "remote.origin.url", self.master, what="set the master URL")
        status, specs = self._git("config", "--get-all", "remote.origin.fetch", what="read origin", ok=(0, 1))
        if specs.split() != [FETCH_REFSPEC]:
            self._git("config", "--replace-all", "remote.origin.fetch", FETCH_REFSPEC, what="set refspec")
        self._origin_configured = True

    def fetch(self) -> None:
        try:
            self._git("fetch", "--prune", "--no-tags", "--quiet", "origin", what="fetch", network=True)
        except GitCommandFailed as exc:
            raise self._network_error(exc, "fetch from its master") from exc
        self._synced = True

    def _push(
        self,
        *refspecs: str,
        atomic: bool = False,
        abort: threading.Event | None = None,
        lease: tuple[str, str] | None = None,
    ) -> None:
        """Push to origin. A push that lands also moves refs/remotes/origin/* of what it pushed (git
        does, through origin's fetch refspec): no ``update-ref`` is needed after it. ``lease``: (ref,
        commit) the master's ref must still be at, else git rejects the push ("stale info", a
        ``PushRejected`` with ``moved``): a fast-forward alone would also land on a ref the master
        moved back since (a force-push, a restore), undoing that."""
        options = ["--atomic"] if atomic else []
        if lease is not None:
            options.append(f"--force-with-lease={lease[0]}:{lease[1]}")
        args = ["push", "--no-verify", *options, "origin", *refspecs]
        if abort is not None and abort.is_set():
            raise GitError(f"dataset {self.name!r}: not pushed: the lock it was to run under was lost")
        self.known.offered([spec.split(":", 1)[0] for spec in refspecs])
        try:
            self._git(*args, what="push", network=True, abort=abort)
        except GitCommandFailed as exc:
            # Whatever failed, the copies of the master's refs may be behind it now: the push landed
            # but its answer was lost, or it was rejected because the branch moved there.
            self._synced = False
            if looks_rejected(exc.stderr) or looks_rejected(exc.detail):
                refs = ", ".join(spec.split(":", 1)[1].removeprefix(HEADS) for spec in refspecs)
                cause = rejection_cause(exc.stderr)
                raise PushRejected(
                    f"dataset {self.name!r}: the master rejected the push of {refs} "
                    f"({cause}; nothing was pushed): {exc.detail}",
                    moved=cause == MOVED,
                ) from exc
            raise self._network_error(exc, "push to its master") from exc

    def remote_branches(self) -> list[str]:
        """Branches of the master as of the last fetch."""
        out = self._out("for-each-ref", "--format=%(refname)", TRACKING, what="list remote branches")
        names = [line.removeprefix(TRACKING) for line in out.splitlines() if line.startswith(TRACKING)]
        return sorted(name for name in names if name != "HEAD")

    def _default_branch(self, branches: list[str]) -> str:
        """The master's HEAD branch if it exists, else main, master or the first branch."""
        try:
            out = self._out("ls-remote", "--symref", "origin", "HEAD", what="read HEAD", network=True)
        except GitCommandFailed as exc:
            raise self._network_error(exc, "read the master's default branch") from exc
        for line in out.splitlines():
            if line.startswith("ref: " + HEADS) and line.endswith("\tHEAD"):
                head = line[len("ref: " + HEADS) : -len("\tHEAD")]
                if head in branches:
                    return head
        for candidate in ("main", "master"):
            if candidate in branches:
                return candidate
        return branches[0]

    def ensure_ground_truth(self) -> str:
        """Make sure the master has ``ground-truth`` (created from its default branch, or from an empty
        initial commit when the master is empty) and return its tip. Never forces: when another node
        created it first, theirs is accepted."""
        if not (self.git_dir / "HEAD").is_file():
            self.sync()
        tip = self._rev(TRACKING + GROUND_TRUTH)
        if tip:
            return tip
        branches = self.remote_branches()
        if branches:
            base = self._default_branch(branches)
            commit = self._rev(TRACKING + base)
            assert commit, base
        else:
            # mktree reads the (empty) tree listing from stdin, which GitPython connects to /dev/null.
            tree = self._out("mktree", what="write the empty tree")
            commit = self._commit_tree(tree, (), "Initialise ground-truth\n", "create the initial commit")
        try:
            self._push(f"{commit}:{HEADS}{GROUND_TRUTH}")
        except GitError:
            # Most likely another node created it between our fetch and our push: accept theirs.
            self.fetch()
            tip = self._rev(TRACKING + GROUND_TRUTH)
            if tip:
                return tip
            raise
        return commit

    def ground_truth_reached(self, commit: str) -> bool:
        """Whether the master's ground-truth (as of the last sync) is at ``commit`` or past it: an
        announced advance is checked so before a data trigger fires on it. ``commit`` must be a full
        hexadecimal id (checked by the caller), never an option or a ref name."""
        tip = self._rev(TRACKING + GROUND_TRUTH)
        if tip is None:
            return False
        if tip == commit:
            return True
        status, _ = self._git(
            "merge-base", "--is-ancestor", commit, tip, what="check an announced advance", ok=(0, 1, 128)
        )
        return status == 0

    # -- inspection --------------------------------------------------------------------------------

    def log(self, ref: str = GROUND_TRUTH, max_count: int = 20) -> list[dict[str, Any]]:
        """Newest-first commits of origin/<ref>: commit, author, email, date (ISO 8601), subject, trailers."""
        ref = checked_name(ref, "branch")
        if self._rev(TRACKING + ref) is None:
            raise NotFound(f"dataset {self.name!r} has no branch {ref!r}")
        args = ["log", f"--max-count={int(max_count)}", f"--format={LOG_FORMAT}", TRACKING + ref, "--"]
        return parse_log(self._out(*args, what="read the log"))
