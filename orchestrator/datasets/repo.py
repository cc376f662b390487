"""One dataset's local bare repository, its node-branch work folders and its remote (synchronous core).

Layout under ``data_dir``::

    datasets/<name>.git            bare repository; remote "origin" = the dataset's master
    datasets/<name>.git/mao-index/ one index file per node branch (drives the work folder)
    work/<name>/<branch>/          output folder of a node branch, mounted into tool containers (no .git)
    work/<name>/.lanes/<run>/<branch>/  a run's own folder of that branch (overlap ``allow``: a run
                                   side by side with another one of the same pipeline; removed after)
    repos/<name>.git               bare repositories created by init_bare (usable as masters)

Only plumbing is used and no working-tree state lives in the repository: a crash at any point leaves
refs either old or new, and the next prepare_worktree resets the folder whatever it contains.
Everything here blocks; the orchestrator calls it through ``asyncio.to_thread`` (see ``Datasets``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
from git.exc import GitError as GitPythonError

from orchestrator.errors import Conflict, GitError, NotFound

from ._git import (
    GitCommandFailed,
    hardened_env,
    looks_rejected,
    looks_unreachable,
    redact,
    rejection_cause,
    run_git,
)
from .hygiene import OutputRefused, check_output, give_to_tool, inspect_folder, reclaim_owner
from .local import (
    GROUND_TRUTH,
    LOG_FORMAT,
    checked_master,
    checked_name,
    format_message,
    init_bare,
    init_bare_at,
    parse_log,
    remove_git_entries,
)
from .trees import TreeLimits, TreeTooLarge, remove_contents, remove_tree

__all__ = ["GROUND_TRUTH", "BranchConflict", "DatasetRepo", "MergeResult", "init_bare"]

log = logging.getLogger(__name__)

HEADS = "refs/heads/"
TRACKING = "refs/remotes/origin/"
FETCH_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"
_OID_RE = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")


class BranchConflict(Conflict):
    """Two runs side by side (overlap ``allow``) changed the same paths of one node branch: the later
    commit is kept under ``refs/mao/unmerged/<branch>/<commit>`` (never lost), the branch is untouched."""

    code = "branch_conflict"

    def __init__(self, message: str, paths: list[str], commit: str) -> None:
        super().__init__(message)
        self.paths = paths
        self.commit = commit


@dataclass(frozen=True)
class MergeResult:
    merged: bool  # False when the branch was already contained in ground-truth, or on conflict
    commit: str | None  # ground-truth tip after the operation (the new merge commit when merged)
    conflicts: list[str] = field(default_factory=list)  # conflicting paths (empty unless conflict)


class DatasetRepo:
    """One dataset's local bare repository, its node-branch work folders and its remote."""

    def __init__(
        self,
        data_dir: Path,
        name: str,
        master: str,
        *,
        git_name: str,
        git_email: str,
        network_timeout: float = 120,
        tool_owner: tuple[int, int] | None = None,
        max_output: int | None = None,
        max_files: int | None = None,
    ) -> None:
        self.name = checked_name(name, "dataset name")
        # Who tools run as (work folders are handed to them) and what a commit may hold; see hygiene.
        self.tool_owner = tool_owner
        self.max_output = max_output
        self.max_files = max_files
        # Every walk of a work folder or a snapshot: entries, depth, path length (trees.py).
        self.limits = TreeLimits(max_files)
        self.master = checked_master(master)
        for label, value in (("git name", git_name), ("git email", git_email)):
            if not value or any(ord(ch) < 32 or ch in "<>" for ch in value):
                raise ValueError(f"invalid {label} {value!r}")
        self.git_name = git_name
        self.git_email = git_email
        self.network_timeout = network_timeout
        self.data_dir = Path(data_dir)
        self.git_dir = self.data_dir / "datasets" / f"{self.name}.git"
        self.work_root = self.data_dir / "work" / self.name
        self._repo: git.Repo | None = None
        self._origin_configured = False  # origin's URL and refspec checked once per object

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
        """Every local branch and remote-tracking ref with its commit, in one git call."""
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

    def _index_path(self, branch: str, lane: str | None = None) -> Path:
        # Names never start with '.', so a lane's index cannot be a branch's.
        name = branch if lane is None else f".lane-{checked_name(lane, 'lane')}-{branch}"
        return self.git_dir / "mao-index" / name

    def _folder(self, branch: str, lane: str | None = None) -> Path:
        if lane is None:
            return self.work_root / branch
        return self.work_root / ".lanes" / checked_name(lane, "lane") / branch

    def _reclaim_owner(self) -> tuple[int, int] | None:
        """Our own ids when tools run as someone else (their files become ours again), else None."""
        return reclaim_owner(self.tool_owner)

    def _hand_to_tool(self, folder: Path) -> None:
        give_to_tool(folder, self.tool_owner)

    def _check_checkout(self, folder: Path, what: str) -> None:
        """git checks out symlinks with any target: refuse one that leads out of the folder; and a
        tree past the limits (another member may have pushed it) is refused naming its path."""
        bad = inspect_folder(folder, limits=self.limits, what=f"dataset {self.name!r}: {what}").outside_links
        if bad:
            raise OutputRefused(
                f"dataset {self.name!r}: {what} holds symlinks pointing outside its folder, which are "
                f"not allowed: {', '.join(bad[:10])}; remove them from the branch"
            )

    def _remove_git_entries(self, folder: Path, what: str) -> None:
        try:
            remove_git_entries(folder, self.limits)
        except TreeTooLarge as exc:
            raise OutputRefused(f"dataset {self.name!r}: {what}: {exc}", path=exc.path) from exc
        except OSError as exc:
            raise GitError(
                f"dataset {self.name!r}: could not remove git metadata from {folder}: {exc}"
            ) from exc

    # -- remote ------------------------------------------------------------------------------------

    def sync(self) -> None:
        """Create the bare repository if missing, point origin at the master, fetch (with prune)."""
        if not ((self.git_dir / "HEAD").is_file() and (self.git_dir / "objects").is_dir()):
            self.close()
            self._origin_configured = False
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

    def _push(self, *refspecs: str, atomic: bool = False, abort: threading.Event | None = None) -> None:
        """Push to origin. A push that lands also moves refs/remotes/origin/* of what it pushed (git
        does, through origin's fetch refspec): no ``update-ref`` is needed after it."""
        args = ["push", "--no-verify", *(["--atomic"] if atomic else []), "origin", *refspecs]
        if abort is not None and abort.is_set():
            raise GitError(f"dataset {self.name!r}: not pushed: the lock it was to run under was lost")
        try:
            self._git(*args, what="push", network=True, abort=abort)
        except GitCommandFailed as exc:
            if looks_rejected(exc.stderr) or looks_rejected(exc.detail):
                refs = ", ".join(spec.split(":", 1)[1].removeprefix(HEADS) for spec in refspecs)
                raise GitError(
                    f"dataset {self.name!r}: the master rejected the push of {refs} "
                    f"({rejection_cause(exc.stderr)}; nothing was pushed): {exc.detail}"
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
            args = ["commit-tree", "--no-gpg-sign", tree, "-m", "Initialise ground-truth\n"]
            commit = self._out(*args, what="create the initial commit", identity=True)
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

    # -- work folders ------------------------------------------------------------------------------

    def snapshot(self, dest: Path, ref: str = GROUND_TRUTH) -> str:
        """Export the tree of origin/<ref> (as of the last sync) into the empty folder ``dest``; no .git.
        Returns the commit id."""
        ref = checked_name(ref, "branch")
        commit = self._rev(TRACKING + ref)
        if commit is None:
            raise NotFound(f"dataset {self.name!r} has no branch {ref!r}")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise ValueError(f"snapshot destination {dest} is not empty")
        # A throw-away index; the leading '.' keeps it apart from branch indexes (names never start so).
        index = self.git_dir / "mao-index" / f".snapshot-{uuid.uuid4().hex}"
        index.parent.mkdir(exist_ok=True)
        try:
            self._git(
                "read-tree", "--reset", "-u", commit, what="export a snapshot", index=index, work_tree=dest
            )
        finally:
            index.unlink(missing_ok=True)
        self._check_checkout(dest, f"{ref} ({commit[:12]})")
        self._hand_to_tool(dest)
        return commit

    def prepare_worktree(self, branch: str, lane: str | None = None) -> tuple[Path, str]:
        """Make the branch's work folder hold exactly the branch's content and return (folder, parent).

        Parent: local refs/heads/<branch>, else origin/<branch>, else origin/ground-truth. Whatever a
        previous (failed) run left in the folder is discarded. ``lane``: a run's own folder of the
        branch instead of the shared one (``drop_lane`` removes it)."""
        branch = checked_name(branch, "branch")
        refs = self._refs()
        parent = (
            self._node_tip(refs, branch) or refs.get(TRACKING + branch) or refs.get(TRACKING + GROUND_TRUTH)
        )
        if parent is None:
            raise NotFound(f"dataset {self.name!r} has no ground-truth branch yet")
        folder = self._folder(branch, lane)
        folder.mkdir(parents=True, exist_ok=True)
        index = self._index_path(branch, lane)
        index.parent.mkdir(exist_ok=True)
        # Whatever a previous tool left: back to us, no special files, no links out (before git writes).
        try:
            inspect_folder(folder, self._reclaim_owner(), remove_bad=True, limits=self.limits)
            self._remove_git_entries(folder, f"the work folder of {branch!r}")
        except OutputRefused as exc:
            # More than a reset should walk (a failed tool's deep tree): start from an empty folder.
            log.warning("dataset %s: emptying the work folder of %s: %s", self.name, branch, exc.message)
            self._wipe(folder, index)
        kwargs: dict[str, Any] = {"index": index, "work_tree": folder}
        # read-tree --reset -u is `reset --hard` without HEAD: the index's stat data makes it rewrite only
        # what changed; files the index does not know are removed by clean afterwards.
        try:
            self._git("read-tree", "--reset", "-u", parent, what="reset the work folder", **kwargs)
        except GitError:
            index.unlink(missing_ok=True)  # a damaged index (crash while writing it): start afresh
            self._git("read-tree", "--reset", "-u", parent, what="reset the work folder", **kwargs)
        self._git("clean", "-ffdxq", what="clean the work folder", **kwargs)
        self._check_checkout(folder, f"branch {branch!r}")
        self._hand_to_tool(folder)
        return folder, parent

    def worktree(self, branch: str, lane: str | None = None) -> tuple[Path, str]:
        """The branch's work folder as it is (nothing reset: a tool adopted after a restart may
        still be writing it) and the commit ``prepare_worktree`` reset it to (the branch's tip,
        which only the run holding the folder moves)."""
        branch = checked_name(branch, "branch")
        refs = self._refs()
        parent = refs.get(HEADS + branch) or refs.get(TRACKING + branch) or refs.get(TRACKING + GROUND_TRUTH)
        folder = self._folder(branch, lane)
        if parent is None or not folder.is_dir():
            raise NotFound(f"dataset {self.name!r} has no work folder for {branch!r}")
        return folder, parent

    def has_lane(self, branch: str, lane: str) -> bool:
        """Whether the run ``lane`` has a folder of its own of the branch (overlap ``allow``)."""
        return self._folder(checked_name(branch, "branch"), lane).is_dir()

    def reclaim_worktree(self, branch: str, lane: str | None = None) -> None:
        """Take the branch's work folder back from the tool as soon as its container ended, whatever
        the outcome: re-owned, no setuid/setgid bit, no FIFO or socket (docs/security.md#tools)."""
        folder = self._folder(checked_name(branch, "branch"), lane)
        if folder.is_dir():
            what = f"dataset {self.name!r}, branch {branch!r}: the output"
            inspect_folder(folder, self._reclaim_owner(), limits=self.limits, what=what)

    def drop_lane(self, branch: str, lane: str) -> None:
        """Remove a run's own folder of the branch and its index (after its commit, or its failure)."""
        folder = self._folder(checked_name(branch, "branch"), lane)
        remove_tree(folder)  # whatever the tool left in it, however deep; never raises
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # the run's lane folder, once its last branch is gone
        self._index_path(branch, lane).unlink(missing_ok=True)

    def _wipe(self, folder: Path, index: Path) -> None:
        """Empty a work folder and forget its index: the next prepare checks the branch out afresh."""
        remove_contents(folder)
        index.unlink(missing_ok=True)

    def reset_worktree(self, branch: str, lane: str | None = None) -> str:
        """After a failed attempt: the work folder and its index hold the node branch again (its local
        tip, which only a landed vote moves), so nothing of the failure stays on disk (a full disk
        gets its space back at once) or reaches a later commit. A folder git cannot reset is emptied
        instead (the next run checks the branch out afresh). Returns what was done; never raises."""
        try:
            branch = checked_name(branch, "branch")
            folder, index = self._folder(branch, lane), self._index_path(branch, lane)
        except Exception as exc:  # noqa: BLE001 - a clean-up reports, it never raises
            return f"work folder not reset: {exc}"
        if not folder.is_dir():
            return "no work folder to reset"
        try:
            refs = self._refs()
            tip = (
                self._node_tip(refs, branch)
                or refs.get(TRACKING + branch)
                or refs.get(TRACKING + GROUND_TRUTH)
            )
            if tip is None:
                raise NotFound(f"dataset {self.name!r} has no ground-truth branch yet")
            inspect_folder(folder, self._reclaim_owner(), remove_bad=True, limits=self.limits)
            self._remove_git_entries(folder, f"the work folder of {branch!r}")
            kwargs: dict[str, Any] = {"index": index, "work_tree": folder}
            self._git("read-tree", "--reset", "-u", tip, what="reset the work folder", **kwargs)
            self._git("clean", "-ffdxq", what="clean the work folder", **kwargs)
            return f"work folder reset to {tip[:12]}"
        except Exception as exc:  # noqa: BLE001
            log.warning("dataset %s: emptying the work folder of %s: %s", self.name, branch,
                        getattr(exc, "message", exc))  # fmt: skip
            emptied = remove_contents(folder)
            with contextlib.suppress(OSError):
                index.unlink(missing_ok=True)
            return "work folder emptied" if emptied else "work folder not fully emptied (see the log)"

    def commit_worktree(
        self,
        branch: str,
        parent: str,
        message: str,
        trailers: Mapping[str, str],
        lane: str | None = None,
    ) -> tuple[str, bool]:
        """Commit everything in the branch's work folder on top of ``parent``; returns (commit, changed).

        The node branch does not move: only a landed vote moves it (``merge_and_push``,
        ``push_branch``), so a step that fails after its commit leaves nothing a later run builds on.
        When the content equals parent's, no commit is made and parent is returned. When the branch
        moved since the folder was prepared (another run's vote landed meanwhile, e.g. side by side
        with overlap ``allow``), the commit on ``parent`` is merged with the branch's tip and the merge
        is returned; paths both changed raise BranchConflict."""
        branch = checked_name(branch, "branch")
        if not _OID_RE.match(parent):
            raise ValueError(f"parent must be a commit id, not {parent!r}")
        full_message = format_message(message, trailers)
        folder = self._folder(branch, lane)
        if not folder.is_dir():
            raise NotFound(f"dataset {self.name!r} has no work folder for {branch!r}")
        what = f"dataset {self.name!r}, branch {branch!r}"
        self._remove_git_entries(folder, f"branch {branch!r}: the output")
        inspection = inspect_folder(
            folder, self._reclaim_owner(), limits=self.limits, what=f"{what}: the output"
        )
        check_output(inspection, self.max_output, what, self.max_files)
        kwargs: dict[str, Any] = {"index": self._index_path(branch, lane), "work_tree": folder}
        # -f: a .gitignore written by the tool must not hide part of its output.
        self._git("add", "-A", "-f", what="stage the output", **kwargs)
        tree = self._out("write-tree", what="write the output tree", **kwargs)
        resolved = self._out(
            "rev-parse", f"{parent}^{{commit}}", f"{parent}^{{tree}}", what="resolve the parent"
        )
        parent, parent_tree = resolved.split()
        current = self._node_tip(self._refs(), branch)
        if tree == parent_tree:
            # Nothing of ours to add: what the branch holds now (or the parent it would start from).
            return (current if current is not None and current != parent else parent), False
        args = ["commit-tree", "--no-gpg-sign", tree, "-p", parent, "-m", full_message]
        own = self._out(*args, what="create the commit", identity=True)
        if current is not None and current != parent:
            return self._merge_onto(branch, current, own, full_message), True
        return own, True

    def _merge_onto(self, branch: str, tip: str, own: str, full_message: str) -> str:
        """``own`` merged with the branch's tip ``tip`` (which another run's vote moved since ``own``'s
        parent), as a new merge commit; the branch does not move. BranchConflict on common paths."""
        args = ["merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", tip, own]
        status, out = self._git(*args, what="merge with the node branch", ok=(0, 1))
        merged_tree, *paths = out.split("\0")
        if status == 1:
            conflicts = list(dict.fromkeys(p for p in paths if p))
            kept = f"refs/mao/unmerged/{branch}/{own}"
            self._git("update-ref", "-m", "mao", kept, own, what=f"update {kept}")
            raise BranchConflict(
                f"dataset {self.name!r}: the output conflicts with what another run of the pipeline "
                f"committed on {branch!r} meanwhile, in {', '.join(conflicts[:10])} (kept as {kept})",
                conflicts,
                own,
            )
        note = f"Merge side-by-side output into {branch}\n\n{full_message}"
        args = ["commit-tree", "--no-gpg-sign", merged_tree.strip(), "-p", tip, "-p", own, "-m", note]
        return self._out(*args, what="create the merge commit", identity=True)

    def _onto_tip(self, branch: str, tip: str | None, commit: str, trailers: Mapping[str, str]) -> str:
        """``commit`` as something the branch can move to: itself when it already contains the tip,
        else merged with it (a vote of another run landed after this commit was made)."""
        if tip is None or tip == commit:
            return commit
        status, _ = self._git(
            "merge-base", "--is-ancestor", tip, commit, what="compare with the branch", ok=(0, 1)
        )
        if status == 0:
            return commit
        message = format_message(f"Output of {branch}", trailers)
        return self._merge_onto(branch, tip, commit, message)

    def _node_tip(self, refs: Mapping[str, str], branch: str) -> str | None:
        """The node branch as this instance last had it accepted: the local branch, or the master's
        copy when that is newer (a push landed but the process died before the local branch moved:
        building on the older one would make every later push a rejected non-fast-forward)."""
        local, pushed = refs.get(HEADS + branch), refs.get(TRACKING + branch)
        if pushed is None or local == pushed:
            return local
        if local is None:
            return None  # a branch this instance never voted: prepare starts from the master's copy
        status, _ = self._git(
            "merge-base", "--is-ancestor", local, pushed, what="compare with the master", ok=(0, 1)
        )
        return pushed if status == 0 else local

    def _advance(self, branch: str, commit: str) -> None:
        """The local node branch follows what the master now has (after a push that landed)."""
        self._git("update-ref", "-m", "mao: pushed", HEADS + branch, commit, what=f"update {HEADS + branch}")

    def _update_ref(self, ref: str, new: str, old: str) -> None:
        """update-ref with an expected old value ("" = must not exist)."""
        self._git("update-ref", "-m", "mao", ref, new, old, what=f"update {ref}")

    # -- merging -----------------------------------------------------------------------------------

    def push_branch(
        self, branch: str, commit: str | None = None, trailers: Mapping[str, str] | None = None
    ) -> str:
        """Push ``commit`` (default: the local tip) as the node branch only (the merge into
        ground-truth is retried later); the local branch then follows. Returns what was pushed
        (``commit``, merged with the branch's tip when another vote landed since it was made)."""
        branch = checked_name(branch, "branch")
        tip = self._node_tip(self._refs(), branch)
        commit = commit or tip
        if commit is None:
            raise NotFound(f"dataset {self.name!r} has no local branch {branch!r}")
        commit = self._onto_tip(branch, tip, commit, trailers or {})
        self._push(f"{commit}:{HEADS}{branch}")
        self._advance(branch, commit)
        return commit

    def merge_and_push(
        self,
        branch: str,
        message: str,
        trailers: Mapping[str, str],
        abort: threading.Event | None = None,
        commit: str | None = None,
    ) -> MergeResult:
        """Merge ``commit`` (a step's output; default: the node branch's local tip) into ground-truth
        and push both atomically; the local node branch moves to it only once the push landed. The
        caller holds the dataset's federation lock, so ground-truth can only move if someone ignores
        that lock. ``abort`` is set when that lock's lease is lost: the push is then not started, or
        killed."""
        branch = checked_name(branch, "branch")
        full_message = format_message(message, trailers)
        self.sync()
        refs = self._refs()
        gt = refs.get(TRACKING + GROUND_TRUTH) or self.ensure_ground_truth()
        tip = self._node_tip(refs, branch)
        commit = commit or tip
        if commit is None:
            raise NotFound(f"dataset {self.name!r} has no local branch {branch!r}")
        commit = self._onto_tip(branch, tip, commit, trailers)
        pushed = refs.get(TRACKING + branch)
        status, _ = self._git(
            "merge-base", "--is-ancestor", commit, gt, what="compare with ground-truth", ok=(0, 1)
        )
        if status == 0:  # already contained: nothing to merge
            if pushed != commit:
                self.push_branch(branch, commit)
            elif tip != commit:
                self._advance(branch, commit)
            return MergeResult(merged=False, commit=gt, conflicts=[])
        # In-memory merge; exit 1 = conflicts. Output: tree NUL (conflicted path NUL)*.
        args = ["merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", gt, commit]
        status, out = self._git(*args, what="merge into ground-truth", ok=(0, 1))
        tree, *paths = out.split("\0")
        if status == 1:
            conflicts = list(dict.fromkeys(p for p in paths if p))
            log.info("dataset %s: %s conflicts with ground-truth on %s", self.name, branch, conflicts)
            # Published for whoever resolves it; the next run of the branch builds on it.
            if pushed != commit:
                self.push_branch(branch, commit)
            elif tip != commit:
                self._advance(branch, commit)
            return MergeResult(merged=False, commit=gt, conflicts=conflicts)
        # Always a merge commit (also when ground-truth could fast-forward) so that its history shows
        # each vote.
        args = ["commit-tree", "--no-gpg-sign", tree.strip(), "-p", gt, "-p", commit, "-m", full_message]
        merge = self._out(*args, what="create the merge commit", identity=True)
        self._push(f"{commit}:{HEADS}{branch}", f"{merge}:{HEADS}{GROUND_TRUTH}", atomic=True, abort=abort)
        self._advance(branch, commit)
        return MergeResult(merged=True, commit=merge, conflicts=[])

    # -- inspection --------------------------------------------------------------------------------

    def log(self, ref: str = GROUND_TRUTH, max_count: int = 20) -> list[dict[str, Any]]:
        """Newest-first commits of origin/<ref>: commit, author, email, date (ISO 8601), subject, trailers."""
        ref = checked_name(ref, "branch")
        if self._rev(TRACKING + ref) is None:
            raise NotFound(f"dataset {self.name!r} has no branch {ref!r}")
        args = ["log", f"--max-count={int(max_count)}", f"--format={LOG_FORMAT}", TRACKING + ref, "--"]
        return parse_log(self._out(*args, what="read the log"))
