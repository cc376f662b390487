"""What a Slurm job of MAO keeps on the shared root besides staging.py's folders, and the reading of
the cluster's jobcomp file: blocking file work, called through ``asyncio.to_thread``.

Per attempt (``name`` = ``Identity.object_name()``):
- ``<root>/<name>/`` the attempt folder (staging.py: ``input/``, ``output/``), plus ``env`` (the
  tool's environment, given to the runtime as its env file) and ``labels.json`` (the identity, so
  that a folder whose job never started or was forgotten is still found and removed);
- ``<root>/<name>.out`` the job's stdout: the tool's output, the log MAO follows;
- ``<root>/<name>.err`` the job's stderr: the job script's report and Slurm's own messages.
All are created by the orchestrator before sbatch, private to its user (0600), which the job runs as.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

LABELS_FILE = "labels.json"
# Output files of attempts whose end was never collected (an orchestrator that died between a job's
# end and its removal) are removed once they are this old.
ORPHAN_LOG_AGE = 3600.0


@dataclass(frozen=True)
class JobFiles:
    env: Path
    labels: Path
    out: Path
    err: Path


def job_files(root: Path, name: str) -> JobFiles:
    return JobFiles(
        env=root / name / "env",
        labels=root / name / LABELS_FILE,
        out=root / f"{name}.out",
        err=root / f"{name}.err",
    )


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def write_job_files(files: JobFiles, env: str, labels: dict[str, str]) -> None:
    """Into an attempt folder that exists: the env file and the labels; and the empty output files."""
    write_private(files.env, env)
    write_private(files.labels, json.dumps(labels, sort_keys=True))
    for path in (files.out, files.err):
        write_private(path, "")


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def unlink(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def attempt_folders(root: Path, names: list[str]) -> dict[str, dict[str, str]]:
    """The attempt folders among ``names`` (staging's) with the labels written at submission."""
    found = {}
    for name in names:
        if not name.startswith("mao-"):
            continue
        try:
            labels = json.loads((root / name / LABELS_FILE).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(labels, dict):
            found[name] = {str(k): str(v) for k, v in labels.items()}
    return found


def drop_orphan_logs(root: Path, prefixes: set[str], keep: set[str], now: float | None = None) -> list[str]:
    """Remove the ``.out``/``.err`` files of names starting with one of ``prefixes`` (an instance's),
    not in ``keep``, unchanged for ORPHAN_LOG_AGE; returns the names of the files removed."""
    removed: list[str] = []
    if not prefixes:
        return removed
    cutoff = (time.time() if now is None else now) - ORPHAN_LOG_AGE
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        for entry in entries:
            stem, dot, suffix = entry.name.rpartition(".")
            if not dot or suffix not in ("out", "err") or stem in keep:
                continue
            if not any(stem.startswith(prefix) for prefix in prefixes):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return removed


def jobcomp_line(path: Path, job_id: str) -> str | None:
    """The last line of the jobcomp file about ``job_id`` (searched from the end: the file only grows
    and may be large)."""
    needle = f"JobId={job_id} ".encode()
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            at = data.rfind(needle)
            while at > 0 and data[at - 1 : at] != b"\n":
                at = data.rfind(needle, 0, at)
            if at < 0:
                return None
            end = data.find(b"\n", at)
            return data[at : end if end >= 0 else len(data)].decode(errors="replace")
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None
