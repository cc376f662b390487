"""Single files of a dataset's branches, without a work folder (synchronous; see ``Datasets.run``).

- ``commit_files`` adds files to a node branch: the parent's tree is read into a throw-away index,
  the new files are hashed into it, and the result is committed. Git's cost is the size of the
  batch plus reading one index, not a stat of every file the branch holds (the raw-entry listener
  adds a few files at a time to a branch that keeps growing). Adding a file that is already there
  with the same content changes nothing, so replaying a batch is a no-op.
- ``read_file`` reads one file of a commit byte for byte (audits compare copies by their SHA-256),
  in one ``git cat-file --batch`` that says the file's real size before its content: a file larger
  than asked for is hashed as it streams, never held in memory (``read_blob`` refuses it).

These are functions of a ``DatasetRepo`` rather than methods only to keep ``repo.py`` readable; they
use its git helpers, and ``Datasets.run`` serialises them with every other call on the dataset.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import BadRequest, GitError, NotFound, PayloadTooLarge

from ..domain.paths import plain_path_problem
from ._git import hardened_env, summarize
from .bare import HEADS, OID_RE, TRACKING
from .local import GROUND_TRUTH, checked_name, format_message
from .repo import DatasetRepo
from .trees import remove_tree

MAX_PATH_LENGTH = 1024
PATHS_PER_CALL = 500
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class FileCopy:
    commit: str
    path: str
    sha256: str
    size: int
    content: bytes | None  # None when larger than the limit asked for


def path_problem(path: object) -> str | None:
    """Why ``path`` is not a relative path inside a dataset, or None when it is."""
    if problem := plain_path_problem(path, "file", MAX_PATH_LENGTH):
        return problem
    assert isinstance(path, str)
    if path.startswith(("/", "-")):
        return f"file {path[:80]!r} must be a relative path inside the dataset (no leading '/' or '-')"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or any(part.lower() == ".git" for part in parts):
        return f"file {path[:80]!r} must not contain empty, '.', '..' or '.git' segments"
    return None


def commit_files(
    repo: DatasetRepo, branch: str, files: Mapping[str, bytes], message: str, trailers: Mapping[str, str]
) -> tuple[str, bool]:
    """Add ``files`` ({relative path: content}) to ``branch`` in one commit; returns (commit, changed).

    The branch starts from its local tip, else its pushed tip, else ground-truth. When nothing
    changes, no commit is made and the branch is set to its parent."""
    branch = checked_name(branch, "branch")
    for path in files:
        if problem := path_problem(path):
            raise BadRequest(problem)
    full_message = format_message(message, trailers)
    refs = repo._refs()
    current = refs.get(HEADS + branch)
    parent = current or refs.get(TRACKING + branch) or refs.get(TRACKING + GROUND_TRUTH)
    if parent is None:
        raise NotFound(f"dataset {repo.name!r} has no ground-truth branch yet")
    scratch = repo.git_dir / "mao-tmp" / uuid.uuid4().hex
    index = repo.git_dir / "mao-index" / f".files-{uuid.uuid4().hex}"
    index.parent.mkdir(exist_ok=True)
    try:
        for path, content in files.items():
            target = scratch / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        kwargs: dict[str, Any] = {"index": index, "work_tree": scratch}
        repo._git("read-tree", parent, what="read the branch's tree", index=index)
        paths = sorted(files)
        for start in range(0, len(paths), PATHS_PER_CALL):
            chunk = paths[start : start + PATHS_PER_CALL]
            # -C: paths are relative to the scratch folder, the work tree of this index.
            repo._git("-C", str(scratch), "update-index", "--add", "--", *chunk, what="add files", **kwargs)
        tree = repo._write_tree(index, "write the tree")
    finally:
        index.unlink(missing_ok=True)
        remove_tree(scratch)
    parent_tree = repo._out("rev-parse", f"{parent}^{{tree}}", what="resolve the parent")
    if tree == parent_tree:
        if current is None:
            repo._update_ref(HEADS + branch, parent, "")
        return parent, False
    commit = repo._commit_tree(tree, (parent,), full_message, "create the commit")
    repo._update_ref(HEADS + branch, commit, current or "")  # compare-and-swap
    return commit, True


def pushed_tip(repo: DatasetRepo, branch: str) -> str | None:
    """The branch's commit on the master as of the last fetch (what other instances can fetch)."""
    return repo._rev(TRACKING + checked_name(branch, "branch"))


def read_file(repo: DatasetRepo, commit: str, path: str, inline_limit: int) -> FileCopy | None:
    """The file ``path`` of ``commit`` (None when the commit has no such file); its content only when
    it is at most ``inline_limit`` bytes. A larger file is hashed as git streams it, never held."""
    return _read(repo, commit, path, keep=inline_limit)


def read_blob(repo: DatasetRepo, commit: str, path: str, max_bytes: int) -> bytes | None:
    """The whole content of ``path`` in ``commit`` (fetched from the master first by the caller).
    ``PayloadTooLarge`` (with ``size`` and ``limit``) when the file, as git stores it, is larger than
    ``max_bytes``: nothing of it is read."""
    copy = _read(repo, commit, path, keep=max_bytes, refuse_over=max_bytes)
    return copy.content if copy else None


def _read(
    repo: DatasetRepo, commit: str, path: str, *, keep: int, refuse_over: int | None = None
) -> FileCopy | None:
    """One ``git cat-file --batch`` for ``<commit>:<path>``: its header gives the object's type and
    real size, then the content is streamed into SHA-256, kept only up to ``keep`` bytes. The
    arguments are a list (no shell); the object name goes through stdin, and ``path_problem`` has
    ruled out the newline that would end it."""
    if not isinstance(commit, str) or not OID_RE.fullmatch(commit):
        raise BadRequest(f"commit must be a commit id, not {str(commit)[:80]!r}")
    if problem := path_problem(path):
        raise BadRequest(problem)
    runner = repo._runner()  # a GitError when there is no local repository
    command = [str(runner.GIT_PYTHON_GIT_EXECUTABLE), "cat-file", "--batch"]
    env = {**os.environ, **hardened_env({"GIT_DIR": str(repo.git_dir)})}
    failed = f"dataset {repo.name!r}: could not read {path!r} of {commit[:12]}"
    with tempfile.TemporaryFile() as stderr:
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=repo.git_dir,
            )
        except OSError as exc:
            raise GitError(f"{failed}: {exc}") from exc
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(f"{commit}:{path}\n".encode())
            process.stdin.close()
            # "<oid> <type> <size>", or "<commit>:<path> missing" (the path may hold spaces)
            line = process.stdout.readline()
            if not line:
                process.wait()
                stderr.seek(0)
                raise GitError(f"{failed}: {summarize(stderr.read().decode('utf-8', 'replace'))}")
            header = line.decode("ascii", "replace").split()
            found = len(header) == 3 and OID_RE.fullmatch(header[0]) and header[2].isdigit()
            if not found or header[1] != "blob":
                return None  # no such file, or a folder (tree) or a submodule (commit)
            size = int(header[2])
            if refuse_over is not None and size > refuse_over:
                raise PayloadTooLarge(
                    f"{path} in {commit[:12]} is {size} bytes, more than the {refuse_over} allowed",
                    size=size,
                    limit=refuse_over,
                )
            digest = hashlib.sha256()
            kept: list[bytes] = []
            left = size
            while left:
                chunk = process.stdout.read(min(left, CHUNK_BYTES))
                if not chunk:
                    raise GitError(f"{failed}: git stopped after {size - left} of {size} bytes")
                digest.update(chunk)
                if size <= keep:
                    kept.append(chunk)
                left -= len(chunk)
        except OSError as exc:  # a broken pipe: git died
            raise GitError(f"{failed}: {exc}") from exc
        finally:
            process.stdout.close()
            if process.poll() is None:
                process.kill()  # done with it (a file too large, or not a file): nothing else to read
            process.wait()
    return FileCopy(
        commit=commit,
        path=path,
        sha256=digest.hexdigest(),
        size=size,
        content=b"".join(kept) if size <= keep else None,
    )
