"""Shared-root staging and the fetch mode's unpacking (orchestrator/executors/staging.py), on local
folders: what reaches the tool, what comes back, and what is refused on the way."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from orchestrator.datasets.hygiene import OutputRefused
from orchestrator.executors.seam import ContainerSpec, Identity, InputData, OutputData
from orchestrator.executors.staging import SharedStaging, StagedOutputMissing, copy_tree, unpack_output
from tests.unit import trees

ROOT = os.getuid() == 0
TOOL = (65534, 65534) if ROOT else (os.getuid(), os.getgid())


def spec_for(base: Path, name_run: str = "r1") -> ContainerSpec:
    (base / "in").mkdir(parents=True)
    (base / "work").mkdir()
    (base / "in" / "a.txt").write_text("input")
    (base / "work" / "old.txt").write_text("old")
    return ContainerSpec(
        identity=Identity(instance="i", pipeline="p", run=name_run, step="s", position=0, attempt=1),
        image="busybox",
        input=InputData(commit="0" * 40, folder=base / "in"),
        output=OutputData(folder=base / "work"),
        user=TOOL,
        timeout=10,
    )


def staging(tmp_path: Path, max_output: int | None = None) -> SharedStaging:
    root = tmp_path / "shared"
    root.mkdir()
    return SharedStaging(root, settle_seconds=0, max_output_bytes=max_output)


def test_stage_in_then_bring_back(tmp_path: Path) -> None:
    shared = staging(tmp_path)
    spec = spec_for(tmp_path)
    paths = asyncio.run(shared.stage_in(spec))
    assert paths.folder == shared.root / spec.name
    assert stat.S_IMODE(paths.folder.stat().st_mode) == 0o711
    assert (paths.input / "a.txt").read_text() == "input" and (paths.output / "old.txt").read_text() == "old"
    assert {p.lstat().st_uid for p in [paths.output, *paths.output.iterdir()]} == {TOOL[0]}
    # The tool's work: one file changed, one removed, a folder and a link inside added.
    (paths.output / "old.txt").unlink()
    (paths.output / "sub").mkdir()
    (paths.output / "sub" / "new").write_text("new")
    (paths.output / "link").symlink_to("sub/new")
    assert asyncio.run(shared.bring_back(spec)) == 3
    work = spec.output.folder
    assert trees.listing(work) == {
        "sub": ("dir", None, 0),
        "sub/new": ("file", b"new", 0o644),
        "link": ("link", "sub/new", 0),
    }
    assert {p.lstat().st_uid for p in work.rglob("*")} == {os.getuid()}
    asyncio.run(shared.discard(spec.name))
    asyncio.run(shared.discard(spec.name))  # again: nothing to do
    assert shared.staged_names() == []


def test_stage_in_replaces_what_a_crashed_submit_left(tmp_path: Path) -> None:
    shared = staging(tmp_path)
    spec = spec_for(tmp_path)
    stale = shared.paths(spec.name).output
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    paths = asyncio.run(shared.stage_in(spec))
    assert sorted(p.name for p in paths.output.iterdir()) == ["old.txt"]


@pytest.mark.parametrize("bad", ["out", "big", "fifo"])
def test_a_refused_output_leaves_the_work_folder_as_it_was(tmp_path: Path, bad: str) -> None:
    shared = staging(tmp_path, max_output=10)
    spec = spec_for(tmp_path)
    paths = asyncio.run(shared.stage_in(spec))
    if bad == "out":
        (paths.output / "passwd").symlink_to("/etc/passwd")
    elif bad == "big":
        (paths.output / "big").write_bytes(b"x" * 11)
    else:
        os.mkfifo(paths.output / "pipe")
    if bad == "fifo":  # removed, as locally, and the rest comes back
        asyncio.run(shared.bring_back(spec))
        assert sorted(p.name for p in spec.output.folder.iterdir()) == ["old.txt"]
        return
    with pytest.raises(OutputRefused):
        asyncio.run(shared.bring_back(spec))
    assert trees.listing(spec.output.folder) == {"old.txt": ("file", b"old", 0o644)}


def test_a_missing_staged_output_is_said(tmp_path: Path) -> None:
    shared = staging(tmp_path)
    spec = spec_for(tmp_path)
    with pytest.raises(StagedOutputMissing):
        asyncio.run(shared.bring_back(spec))


@pytest.mark.skipif(not ROOT, reason="only root can give folders to another uid")
def test_a_non_root_orchestrator_can_stage_only_for_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = staging(tmp_path)
    spec = spec_for(tmp_path)
    assert shared.problem(spec) is None
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 1000)
    assert "cannot give the staged folders to uid 65534" in (shared.problem(spec) or "")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees.trees)
def test_copy_tree_copies_exactly_and_never_follows_a_link(
    tmp_path_factory: pytest.TempPathFactory, tree
) -> None:
    base = tmp_path_factory.mktemp("copy")
    source, dest = base / "s", base / "d"
    source.mkdir()
    trees.build(source, tree)
    copied = copy_tree(source, dest)
    expected = trees.listing(source)
    assert trees.listing(dest) == expected
    assert copied == sum(len(value) for kind, value, _ in expected.values() if kind == "file")  # type: ignore[arg-type]


def test_copy_tree_refuses_what_is_not_a_file_and_stops_at_the_bound(tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.mkdir()
    os.mkfifo(source / "pipe")
    with pytest.raises(OutputRefused, match="not a regular file"):
        copy_tree(source, tmp_path / "d1")
    (source / "pipe").unlink()
    (source / "f").write_bytes(b"x" * 100)
    with pytest.raises(OutputRefused, match="MAO_STEP_MAX_OUTPUT=99"):
        copy_tree(source, tmp_path / "d2", max_bytes=99)


def _tar(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    path = tmp_path / "out.tar"
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("../escape"),
        _member("/abs"),
        _member("ln", tarfile.SYMTYPE, "/etc/passwd"),
        _member("ln", tarfile.SYMTYPE, "../../x"),
        _member("hard", tarfile.LNKTYPE, "/etc/passwd"),
        _member("dev", tarfile.CHRTYPE),
        _member("fifo", tarfile.FIFOTYPE),
    ],
    ids=lambda m: f"{m.name}-{m.type!r}",
)
def test_unpack_output_refuses_what_a_local_output_may_not_hold(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    archive = _tar(tmp_path, [(_member("ok.txt"), b"fine"), (member, b"data")])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(OutputRefused):
        unpack_output(archive, dest, max_bytes=None, max_files=10)
    assert not (tmp_path / "escape").exists()


def test_unpack_output_bounds_and_unpacks(tmp_path: Path) -> None:
    good = [
        (_member("d", tarfile.DIRTYPE), b""),
        (_member("d/f"), b"12345"),
        (_member("l", tarfile.SYMTYPE, "d/f"), b""),
    ]
    archive = _tar(tmp_path, good)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert unpack_output(archive, dest, max_bytes=5, max_files=3) == 5
    assert (dest / "l").read_text() == "12345"
    for max_bytes, max_files, why in [(4, 3, "MAO_STEP_MAX_OUTPUT=4"), (None, 2, "more than 2 entries")]:
        again = tmp_path / f"again-{max_files}"
        again.mkdir()
        with pytest.raises(OutputRefused, match=why):
            unpack_output(archive, again, max_bytes=max_bytes, max_files=max_files)


def test_the_root_is_probed(tmp_path: Path) -> None:
    shared = staging(tmp_path)
    assert shared.root_problem() is None and list(shared.root.iterdir()) == []
    shared.root.rmdir()  # as an unmounted share looks from here
    assert "cannot hold attempts" in (shared.root_problem() or "")


def test_discards_and_a_bring_back_of_one_attempt_at_once_do_not_trip_over_each_other(tmp_path: Path) -> None:
    shared = staging(tmp_path)
    spec = spec_for(tmp_path)

    async def at_once() -> list[object]:
        await shared.stage_in(spec)
        for i in range(200):
            (shared.paths(spec.name).output / f"f{i}").write_text("x")
        return await asyncio.gather(
            shared.bring_back(spec), *(shared.discard(spec.name) for _ in range(4)), return_exceptions=True
        )

    results = asyncio.run(at_once())
    assert [r for r in results if isinstance(r, BaseException) and not isinstance(r, StagedOutputMissing)] == []
    assert not shared.paths(spec.name).folder.exists() and shared._busy == {}
