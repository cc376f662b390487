"""How a node branch's commits land: pushed as the node branch, merged into ground-truth.

Only a landed vote moves a node branch (``push_branch``, ``merge_and_push``): the local branch follows
the master's once the push landed. A commit made on a tip that another run's vote moved meanwhile
(overlap ``allow``) is merged with that tip first; paths both changed raise ``BranchConflict`` and the
commit is kept under ``refs/mao/unmerged/`` (never lost).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.errors import Conflict, NotFound

from .bare import HEADS, TRACKING, BareRepo, PushRejected
from .local import GROUND_TRUTH, checked_name, format_message
from .ref_files import write_ref

log = logging.getLogger(__name__)


class BranchConflict(Conflict):
    """Two runs side by side (overlap ``allow``) changed the same paths of one node branch: the later
    commit is kept under ``refs/mao/unmerged/<branch>/<commit>`` (never lost), the branch is untouched."""

    code = "branch_conflict"

    def __init__(self, message: str, paths: list[str], commit: str) -> None:
        super().__init__(message)
        self.paths = paths
        self.commit = commit


class _StaleTip(Exception):
    """A vote without a fetch found its commit contained in, or conflicting with, this repository's
    copy of ground-truth: final only on the master's real tip, so it is merged again after a fetch."""


@dataclass(frozen=True)
class MergeResult:
    merged: bool  # False when the branch was already contained in ground-truth, or on conflict
    commit: str | None  # ground-truth tip after the operation (the new merge commit when merged)
    conflicts: list[str] = field(default_factory=list)  # conflicting paths (empty unless conflict)


class Branches(BareRepo):
    """A dataset repository's node branches: which tip each is at, and how a commit lands on it."""

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
        merge = self._commit_tree(merged_tree.strip(), (tip, own), note, "create the merge commit")
        self.known.made(merge, merged_tree.strip(), (tip, own))
        return merge

    def _merged_tree_known(self, onto: str, commit: str) -> str | None:
        """The tree ``git merge-tree --write-tree onto commit`` writes (cleanly), when this process
        knows it without asking git, else None. Called only for a ``commit`` not contained in
        ``onto`` (checked before). Known when ``commit`` was made here on one parent P, and ``onto``
        is a merge made here with P as a parent: P is then the one best common ancestor (every other
        common ancestor is P's); and when ``onto`` holds P's tree, only the commit's side changed
        anything, so the merge is the commit's tree, whole, with no conflict (renames or not: the
        other side renamed and added nothing). That is the vote of a node branch that alone writes
        its dataset, on every step after the first (tests/unit/test_datasets_objects.py holds it
        against git's merge on generated trees)."""
        parents = self.known.parents(commit)
        if parents is None or len(parents) != 1 or not self.known.is_parent(parents[0], onto):
            return None
        base_tree, onto_tree = self.known.tree(parents[0]), self.known.tree(onto)
        if base_tree is None or onto_tree != base_tree:
            return None
        return self.known.tree(commit)

    def _onto_tip(self, branch: str, tip: str | None, commit: str, trailers: Mapping[str, str]) -> str:
        """``commit`` as something the branch can move to: itself when it already contains the tip,
        else merged with it (a vote of another run landed after this commit was made)."""
        if tip is None or tip == commit or self.known.is_parent(tip, commit):
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
        if self.known.is_parent(local, pushed):
            return pushed
        status, _ = self._git(
            "merge-base", "--is-ancestor", local, pushed, what="compare with the master", ok=(0, 1)
        )
        return pushed if status == 0 else local

    def _advance(self, branch: str, commit: str) -> None:
        """The local node branch follows what the master now has (after a push that landed): its
        loose ref written here, or by ``git update-ref`` when that cannot be (ref_files.py)."""
        if write_ref(self.git_dir, HEADS + branch, commit):
            return
        self._git("update-ref", "-m", "mao: pushed", HEADS + branch, commit, what=f"update {HEADS + branch}")

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
        announced: str | None = None,
    ) -> MergeResult:
        """Merge ``commit`` (a step's output; default: the node branch's local tip) into ground-truth
        and push both atomically; the local node branch moves to it only once the push landed. The
        caller holds the dataset's federation lock, so ground-truth can only move if someone ignores
        that lock. ``abort`` is set when that lock's lease is lost: the push is then not started, or
        killed. ``announced``: ground-truth's tip as the last merge under that lock announced it
        (``merging/advances.py``); when this repository's copy of the master's ground-truth is
        already there (and nothing failed since the last fetch: ``_synced``), the fetch is skipped;
        a push the master rejects (something moved there unannounced), a conflict and a commit found
        already merged are then done again after a fetch."""
        branch = checked_name(branch, "branch")
        if (
            announced is not None
            and self._synced
            and self._refs().get(TRACKING + GROUND_TRUTH) == announced
        ):
            try:
                return self._merge_and_push(branch, message, trailers, abort, commit, fetched=False)
            except PushRejected as exc:
                if not exc.moved:  # the master itself refused it (a hook): not a stale tip
                    raise
                log.info("dataset %s: merging again after a fetch: %s", self.name, exc.message)
            except _StaleTip:
                log.info("dataset %s: merging %s again after a fetch", self.name, branch)
        self.sync()
        return self._merge_and_push(branch, message, trailers, abort, commit, fetched=True)

    def _merge_and_push(
        self,
        branch: str,
        message: str,
        trailers: Mapping[str, str],
        abort: threading.Event | None,
        commit: str | None,
        fetched: bool,
    ) -> MergeResult:
        """``fetched``: ground-truth is the master's as of a fetch under the lock. Without one, only a
        push can tell whether it still is: a commit found contained in it or conflicting with it
        raises _StaleTip before anything is pushed (the master may have merged it meanwhile, or
        moved to where it merges cleanly)."""
        full_message = format_message(message, trailers)
        refs = self._refs()
        gt = refs.get(TRACKING + GROUND_TRUTH) or self.ensure_ground_truth()
        tip = self._node_tip(refs, branch)
        commit = commit or tip
        if commit is None:
            raise NotFound(f"dataset {self.name!r} has no local branch {branch!r}")
        commit = self._onto_tip(branch, tip, commit, trailers)
        pushed = refs.get(TRACKING + branch)
        contained = False  # a commit made here and never pushed: no master's ground-truth has it
        if not self.known.never_offered(commit):
            status, _ = self._git(
                "merge-base", "--is-ancestor", commit, gt, what="compare with ground-truth", ok=(0, 1)
            )
            contained = status == 0
        if contained:  # already contained: nothing to merge
            if not fetched:
                raise _StaleTip
            if pushed != commit:
                self.push_branch(branch, commit)
            elif tip != commit:
                self._advance(branch, commit)
            return MergeResult(merged=False, commit=gt, conflicts=[])
        known = self._merged_tree_known(gt, commit)
        if known is not None:
            status, tree, paths = 0, known, []
        else:
            # In-memory merge; exit 1 = conflicts. Output: tree NUL (conflicted path NUL)*.
            args = ["merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", gt, commit]
            status, out = self._git(*args, what="merge into ground-truth", ok=(0, 1))
            tree, *paths = out.split("\0")
        if status == 1:
            if not fetched:
                raise _StaleTip
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
        merge = self._commit_tree(tree.strip(), (gt, commit), full_message, "create the merge commit")
        self.known.made(merge, tree.strip(), (gt, commit))
        # Leased on the tip merged onto: a ground-truth the master moved back since (a force-push, a
        # restore) is not fast-forwarded over, undoing that; the merge is done again after a fetch.
        self._push(
            f"{commit}:{HEADS}{branch}",
            f"{merge}:{HEADS}{GROUND_TRUTH}",
            atomic=True,
            abort=abort,
            lease=(HEADS + GROUND_TRUTH, gt),
        )
        self._advance(branch, commit)
        return MergeResult(merged=True, commit=merge, conflicts=[])
