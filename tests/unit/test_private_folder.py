"""Folders made private never take over a shared one (executor/private_folder.py): every maker of a
0700 folder (the data dir, the API and executor sockets' folders, the executor's log folder, the
installer's certificate folders) refuses a folder that anyone may write in and leaves it as it was."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctl.pki import create_authority, save_authority
from executor.output_log import LogBook
from executor.private_folder import SharedFolder, make_private
from executor.transport import listen_private
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.private_files import tighten

SHARED_BITS = stat.S_ISVTX | stat.S_IWOTH


def _folder(root: Path, mode: int) -> Path:
    folder = Path(os.path.join(root, f"f{mode:o}"))
    folder.mkdir()
    os.chmod(folder, mode)
    return folder


@settings(max_examples=200, deadline=None)
@given(mode=st.integers(min_value=0, max_value=0o1777))
def test_a_shared_folder_is_refused_and_left_as_it_was(tmp_path_factory: pytest.TempPathFactory, mode: int) -> None:
    folder = _folder(tmp_path_factory.mktemp("modes"), mode)
    if mode & SHARED_BITS:
        with pytest.raises(SharedFolder, match="every user may write in"):
            make_private(folder)
        assert stat.S_IMODE(os.lstat(folder).st_mode) == mode
    else:
        make_private(folder)
        expected = mode if not mode & 0o077 else 0o700
        assert stat.S_IMODE(os.lstat(folder).st_mode) == expected


def test_a_missing_folder_is_made_0700(tmp_path: Path) -> None:
    make_private(tmp_path / "a" / "b")
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_every_maker_of_a_private_folder_refuses_a_shared_one(tmp_path: Path) -> None:
    shared = _folder(tmp_path, 0o1777)
    (shared / "someone-elses-file").write_text("keep me")
    with pytest.raises(SharedFolder):
        listen_private(shared / "api.sock")
    with pytest.raises(SharedFolder):
        LogBook(str(shared))
    with pytest.raises(SharedFolder):
        tighten(shared)
    with pytest.raises(SharedFolder):
        save_authority(create_authority("fed"), shared)
    with pytest.raises(ConfigError) as caught:
        load_settings({"MAO_DATA_DIR": str(shared), "MAO_ETCD_INSECURE": "1", "MAO_EXECUTOR_TOKEN": "t0k"})
    assert any("every user may write in" in problem for problem in caught.value.problems)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert (shared / "someone-elses-file").read_text() == "keep me"
    assert sorted(p.name for p in shared.iterdir()) == ["someone-elses-file"]
