"""What this process already knows of a dataset repository, so a step's path does not ask git again.

A step's commit becomes, once its vote lands, the parent of the branch's next step, and its work
folder still holds exactly that commit's tree (``git add -A`` wrote the index from it a moment
before). Asking git for the parent's tree, whether the branch's tip is the commit's parent, whether
ground-truth already holds a commit nobody has seen yet, and resetting a folder to the tree it holds
cost a git process each (about 5 ms apiece on the step's path). ``Known`` remembers those facts for
the commits this process made, in memory only: a restarted process knows nothing, so after a kill
every answer comes from git again (recovery never rests on this).

What it records, and why each is safe to rely on:

- a commit made here: its tree and parents (a commit is immutable: these never change);
- whether that commit was ever offered to a master (pushed, or tried): one that never was cannot be
  in any master's ground-truth (the object exists in this repository only);
- which commit a work folder holds, with its index: set after a commit from the folder, taken (and
  so forgotten) by whatever hands the folder out or changes it next, so a folder a tool touched
  since is never taken for clean.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

# Commits remembered per repository: the last few steps' outputs and merges are what is asked about.
_KEEP = 256


@dataclass(frozen=True)
class KnownCommit:
    tree: str
    parents: tuple[str, ...]


class Known:
    """One repository's remembered facts (a ``DatasetRepo`` holds one; its dataset lock guards it)."""

    def __init__(self) -> None:
        self._commits: OrderedDict[str, KnownCommit] = OrderedDict()
        self._unoffered: set[str] = set()
        self._folders: dict[str, str] = {}

    def made(self, commit: str, tree: str, parents: tuple[str, ...]) -> None:
        """``commit`` was just created here from ``tree`` on ``parents``; no master has it yet."""
        self._commits[commit] = KnownCommit(tree, parents)
        self._commits.move_to_end(commit)
        self._unoffered.add(commit)
        while len(self._commits) > _KEEP:
            old, _ = self._commits.popitem(last=False)
            self._unoffered.discard(old)

    def tree(self, commit: str) -> str | None:
        known = self._commits.get(commit)
        return known.tree if known is not None else None

    def parents(self, commit: str) -> tuple[str, ...] | None:
        known = self._commits.get(commit)
        return known.parents if known is not None else None

    def is_parent(self, parent: str, commit: str) -> bool:
        """True when ``parent`` is known to be one of ``commit``'s parents (False: not known)."""
        known = self._commits.get(commit)
        return known is not None and parent in known.parents

    def offered(self, commits: list[str]) -> None:
        """A push of these commits was started: a master may have them from now on (even if the push
        seemed to fail: it may have landed before the error)."""
        self._unoffered.difference_update(commits)

    def never_offered(self, commit: str) -> bool:
        """True when ``commit`` was made here and never pushed anywhere: no ground-truth contains it."""
        return commit in self._unoffered

    def folder_holds(self, folder: str, commit: str) -> None:
        """The work folder (and its index) holds exactly ``commit``'s tree, nothing else."""
        self._folders[folder] = commit

    def take_folder(self, folder: str) -> str | None:
        """The commit the folder was known to hold, forgotten from now on (it is about to change)."""
        return self._folders.pop(folder, None)
