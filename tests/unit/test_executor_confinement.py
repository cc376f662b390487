"""What a holder of the executor token can make a tool do, with generated requests: run only as the
configured user, mount only resolved folders below the data root and outside the executor's own
(executor/hardening.py). Through the executor's HTTP API: tests/integration/test_executor.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.config import load_settings
from executor.errors import MountNotAllowed, UserNotAllowed
from executor.hardening import mount_source, tool_user
from executor.wire.models import RunRequest

MAX_ID = 2**32 - 2
TOOL_UID, TOOL_GID = 2000, 3000
ids = st.one_of(st.sampled_from([0, 1, TOOL_UID, TOOL_GID, 65534, MAX_ID]), st.integers(0, MAX_ID))


@given(uid=ids, gid=st.one_of(st.none(), ids))
def test_only_the_configured_user_runs(uid: int, gid: int | None) -> None:
    user = f"{uid}" if gid is None else f"{uid}:{gid}"
    request = RunRequest.model_validate({"image": "busybox", "output_dir": "/tmp", "user": user})
    try:
        chosen = tool_user(request, TOOL_UID, TOOL_GID)
    except UserNotAllowed as refused:
        assert refused.status == 403
        assert (uid, gid) != (TOOL_UID, TOOL_GID) and (uid, gid) != (TOOL_UID, None)
        assert ("never run as root" in refused.message) is (uid == 0 or gid == 0)
    else:
        assert chosen == f"{TOOL_UID}:{TOOL_GID}" and uid == TOOL_UID and gid in (None, TOOL_GID)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with folders, a link inside, links leading out, and the executor's own folder."""
    base = tmp_path_factory.mktemp("confinement")
    root = base / "root"
    for folder in ("a/b", "executor/inner", "work/x"):
        (root / folder).mkdir(parents=True)
    (base / "outside").mkdir()
    (root / "in-link").symlink_to(root / "a")
    (root / "out-link").symlink_to(base / "outside")
    (root / "a" / "up-link").symlink_to("../..")  # the root's parent
    (root / "etc-link").symlink_to("/etc")
    return root


SEGMENTS = ["a", "b", "work", "x", "executor", "inner", "..", ".", "in-link", "out-link", "up-link", "etc-link", "new"]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(parts=st.lists(st.sampled_from(SEGMENTS), max_size=6), absolute=st.booleans())
def test_only_folders_below_the_root_and_outside_the_executors_own_are_mounted(
    tree: Path, parts: list[str], absolute: bool
) -> None:
    config = load_settings({"MAO_EXECUTOR_TOKEN": "t", "MAO_EXECUTOR_DATA_ROOT": str(tree)})
    path = os.path.join(str(tree) if absolute else "/elsewhere", *parts)
    resolved = Path(os.path.realpath(path))
    root, own = config.data_root, config.data_root / "executor"
    allowed = (
        resolved != root
        and resolved.is_relative_to(root)
        and not resolved.is_relative_to(own)
    )
    try:
        source = mount_source(path, "output_dir", config)
    except MountNotAllowed as refused:
        assert refused.status == 403 and not allowed, (path, resolved)
    else:
        assert allowed, (path, resolved)
        # What the engine mounts is the resolved folder: a link swapped later changes nothing checked.
        assert source == str(resolved)
