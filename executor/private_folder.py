"""Folders only this user may enter, made without ever taking over a folder that others share.

Every place that keeps secrets, sockets or logs makes its folder 0700. When a setting names an
existing folder instead of one of its own (``MAO_DATA_DIR=/tmp``, a socket at ``/tmp/mao.sock``), a
plain ``chmod 0700`` of that folder locks every other user and service of the host out of it (``/tmp``
once lost its sticky 1777 that way on a test machine). A folder anyone may write in (world-writable,
or sticky like ``/tmp`` and ``/var/tmp``) is shared by definition: it is refused with a sentence that
says what to choose instead, and never changed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class SharedFolder(OSError):
    """The folder is shared with other users: making it private would take it from them."""


def shared_problem(mode: int, folder: Path) -> str | None:
    """Why a folder of this ``mode`` cannot be made private, or None when it can."""
    if mode & (stat.S_ISVTX | stat.S_IWOTH):
        return (
            f"{folder} is a folder every user may write in (mode {stat.S_IMODE(mode):04o}): it is "
            f"shared, so it is not made private; name a folder of its own, such as {folder / 'mao'}"
        )
    return None


def make_private(folder: Path) -> None:
    """``folder`` exists, is a folder, and only its owner may enter it (0700): created so, or
    tightened when it is ours to tighten. SharedFolder (an OSError) for a folder others share;
    OSError for what is not a folder."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{folder} is not a folder")
    if problem := shared_problem(info.st_mode, folder):
        raise SharedFolder(problem)
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)
