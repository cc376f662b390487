"""A dataset's repository with its node branches' work folders: ``DatasetRepo``, the synchronous core.

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
The repository and its remote are ``bare.BareRepo``, the node branches' moves ``branches.Branches``;
``DatasetRepo`` adds the work folders: prepared, handed to tools, reclaimed, reset and committed.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import GitError, NotFound

from .bare import HEADS, OID_RE, TRACKING
from .branches import Branches
from .hygiene import OutputRefused, check_output, give_to_tool, inspect_folder, reclaim_owner
from .local import GROUND_TRUTH, checked_name, format_message, remove_git_entries
from .trees import TreeTooLarge, remove_contents, remove_tree

__all__ = ["DatasetRepo"]

log = logging.getLogger(__name__)


class DatasetRepo(Branches):
    """One dataset's local bare repository, its node-branch work folders and its remote."""

    # -- work folders ------------------------------------------------------------------------------

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

    def sync_for(self, branch: str) -> None:
        """``sync`` before a work folder of ``branch`` is prepared, unless this object fetched before
        (and no push failed since: ``_synced``) and the local node branch exists. A node branch is
        this instance's own (the step's name and the instance's: ``node_branch``), moved only by its
        own pushes, which move this repository's copy of the master's branch too when they land and
        say so: its tip, the folder's parent, is known without a fetch. A push whose answer was lost
        may have landed all the same: the next prepare fetches. The vote fetches under the dataset's
        lock before it merges, and merges a tip moved elsewhere."""
        if self._synced and HEADS + checked_name(branch, "branch") in self._refs():
            return
        self.sync()

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
        index = self._index_path(branch, lane)
        if self.known.take_folder(str(folder)) == parent and folder.is_dir() and index.is_file():
            # It holds exactly the parent, as the last commit from it left it (known.py): no walk, no
            # reset, no clean to do; only the hand-over to the tool.
            self._hand_to_tool(folder)
            return folder, parent
        folder.mkdir(parents=True, exist_ok=True)
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
        self.known.take_folder(str(folder))  # its tool may still be writing it
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
        self.known.take_folder(str(folder))
        if folder.is_dir():
            what = f"dataset {self.name!r}, branch {branch!r}: the output"
            inspect_folder(folder, self._reclaim_owner(), limits=self.limits, what=what)

    def drop_lane(self, branch: str, lane: str) -> None:
        """Remove a run's own folder of the branch and its index (after its commit, or its failure)."""
        folder = self._folder(checked_name(branch, "branch"), lane)
        self.known.take_folder(str(folder))
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
        self.known.take_folder(str(folder))
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
        if not OID_RE.fullmatch(parent):
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
        tree = self._write_tree(kwargs["index"], "write the output tree")
        parent_tree = self.known.tree(parent)  # a commit made here: usually the previous step's output
        if parent_tree is None:
            resolved = self._out(
                "rev-parse", f"{parent}^{{commit}}", f"{parent}^{{tree}}", what="resolve the parent"
            )
            parent, parent_tree = resolved.split()
        # The folder and its index hold ``tree`` now, unless it has what git does not keep (an empty
        # folder, which a reset would remove) or the inspection had to remove something.
        exact = not inspection.empty_folders and not inspection.removed
        current = self._node_tip(self._refs(), branch)
        if tree == parent_tree:
            if exact:
                self.known.folder_holds(str(folder), parent)
            # Nothing of ours to add: what the branch holds now (or the parent it would start from).
            return (current if current is not None and current != parent else parent), False
        own = self._commit_tree(tree, (parent,), full_message, "create the commit")
        self.known.made(own, tree, (parent,))
        if exact:
            self.known.folder_holds(str(folder), own)
        if current is not None and current != parent:
            return self._merge_onto(branch, current, own, full_message), True
        return own, True
