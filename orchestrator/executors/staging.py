"""How a step's data reaches a container on another machine and comes back (docs/backends.md#data).

A backend that runs containers elsewhere than the orchestrator's host cannot bind the orchestrator's
folders. Two modes cover every cluster:

``shared`` (``SharedStaging``, Swarm and Slurm): the cluster has a folder mounted at the same path on
the orchestrator's host and on every node (NFS, CephFS, the HPC scratch). Before submit, the attempt
gets a folder of its own there, ``<root>/<object name>/``, holding a copy of the input snapshot and of
the output work folder (the node branch's current content, which tools may read), both handed to the
tool's uid; the backend binds them at INPUT_MOUNT (read-only) and OUTPUT_MOUNT. After the end, a
short settle time (a network file system shows another host's writes late), then the output is
brought back into the orchestrator's work folder under the same hygiene as a local output
(orchestrator/datasets/hygiene.py: no link out, no device, no FIFO, special bits cleared, the size
limit) and the attempt folder is removed. Whether the attempt succeeded is the engine's state and exit
code, never a file in the folder.

``fetch`` (``FetchStaging``, designed here for Kubernetes): no shared file system. See the class.

Everything in ``SharedStaging`` is a coroutine; the file work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, SecretStr

from ..datasets.hygiene import OutputRefused, check_output, give_to_tool, inspect_folder, reclaim_owner
from ..datasets.trees import remove_tree
from .seam import ContainerSpec, EndKind

log = logging.getLogger(__name__)

_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class StagedPaths:
    """An attempt's folder on the shared root and the two folders the engine binds."""

    folder: Path
    input: Path
    output: Path


class StagedOutputMissing(Exception):
    """The attempt's output folder is not on the shared root (removed, or the root is not mounted)."""


class SharedStaging:
    """The ``shared`` data mode on ``root`` (an absolute folder mounted at the same path everywhere).

    ``max_output_bytes`` is MAO_STEP_MAX_OUTPUT: an output past it is refused before it is copied
    back. ``settle_seconds`` is waited after the end before the output is read.
    """

    def __init__(
        self, root: Path, *, settle_seconds: float = 2.0, max_output_bytes: int | None = None
    ) -> None:
        self.root = root
        self.settle_seconds = settle_seconds
        self.max_output_bytes = max_output_bytes
        # One operation at a time on an attempt's folder: a cancel's discard and the end's bring-back
        # (or a second discard) may come together.
        self._busy: dict[str, tuple[asyncio.Lock, int]] = {}

    def paths(self, name: str) -> StagedPaths:
        folder = self.root / name
        return StagedPaths(folder, folder / "input", folder / "output")

    def problem(self, spec: ContainerSpec) -> str | None:
        """Why ``spec``'s data cannot be staged for its uid, or None (a non-root orchestrator can only
        hand folders to its own uid)."""
        own = (os.getuid(), os.getgid())
        if os.getuid() != 0 and tuple(spec.user) != own:
            return (
                f"the orchestrator runs as {own[0]}:{own[1]}, not root, so it cannot give the staged "
                f"folders to uid {spec.user[0]}:{spec.user[1]}; tools run as the orchestrator's own uid then"
            )
        return None

    @contextlib.asynccontextmanager
    async def _alone(self, name: str) -> AsyncIterator[None]:
        lock, users = self._busy.get(name) or (asyncio.Lock(), 0)
        self._busy[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._busy[name]
            if users <= 1:
                del self._busy[name]
            else:
                self._busy[name] = (lock, users - 1)

    async def stage_in(self, spec: ContainerSpec) -> StagedPaths:
        """Write the attempt's folder (replacing one a crashed submit left) and return its paths."""
        async with self._alone(spec.name):
            return await asyncio.to_thread(self._stage_in, spec)

    async def bring_back(self, spec: ContainerSpec) -> int:
        """After the settle time, make ``spec.output.folder`` hold exactly what the tool left in the
        staged output; returns its bytes. Raises OutputRefused (nothing copied: the work folder is as
        before) or StagedOutputMissing."""
        if self.settle_seconds > 0:
            await asyncio.sleep(self.settle_seconds)
        async with self._alone(spec.name):
            return await asyncio.to_thread(self._bring_back, spec)

    async def end_with_output(self, spec: ContainerSpec, kind: EndKind, message: str) -> tuple[EndKind, str]:
        """An attempt's end once a completed tool's output is brought back: ``failed`` when the
        output is refused, ``lost`` when it cannot be read; any other end as it is."""
        if kind is EndKind.COMPLETED:
            try:
                await self.bring_back(spec)
            except OutputRefused as exc:
                return EndKind.FAILED, f"the tool exited 0 but its output was refused: {exc.message}"
            except (StagedOutputMissing, OSError) as exc:
                return EndKind.LOST, f"the tool exited 0 but its staged output cannot be read: {exc}"
        return kind, message

    async def discard(self, name: str) -> None:
        """Remove the attempt's folder (safe to repeat, and to call while another discard runs)."""
        async with self._alone(name):
            await asyncio.to_thread(self._discard, name)

    def root_problem(self) -> str | None:
        """Why the root cannot hold attempts now (not mounted, read-only, full), or None: a folder is
        made and removed there, as staging will."""
        probe = self.root / f".mao-probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            probe.mkdir(mode=0o700)
            probe.rmdir()
        except OSError as exc:
            return f"the shared root {self.root} cannot hold attempts: {exc.strerror or exc}"
        return None

    def staged_names(self) -> list[str]:
        """The attempt folders on the root (for a sweep)."""
        try:
            return sorted(
                entry.name for entry in os.scandir(self.root) if entry.is_dir(follow_symlinks=False)
            )
        except FileNotFoundError:
            return []

    # -- blocking work (worker threads) -------------------------------------------------------------

    def _stage_in(self, spec: ContainerSpec) -> StagedPaths:
        paths = self.paths(spec.name)
        self._discard(spec.name)
        # 0711: nobody else on a node lists the attempts; the engine (root, or squashed to nobody on
        # NFS) can still reach the two folders it binds.
        paths.folder.mkdir(mode=0o711, parents=False)
        os.chmod(paths.folder, 0o711)
        if spec.input is not None:
            copy_tree(spec.input.folder, paths.input)
        else:
            paths.input.mkdir()
        copy_tree(spec.output.folder, paths.output)
        give_to_tool(paths.input, spec.user)
        give_to_tool(paths.output, spec.user)
        return paths

    def _bring_back(self, spec: ContainerSpec) -> int:
        staged = self.paths(spec.name).output
        if not staged.is_dir():
            raise StagedOutputMissing(f"{staged} is gone (removed, or the shared root is not mounted here)")
        inspection = inspect_folder(staged, reclaim_owner(spec.user))
        check_output(inspection, self.max_output_bytes, f"the output of {spec.name}")
        work = spec.output.folder
        work.mkdir(parents=True, exist_ok=True)
        inspect_folder(work, reclaim_owner(spec.user), remove_bad=True)
        for entry in os.scandir(work):
            _remove(Path(entry.path))
        copy_tree(staged, work, max_bytes=self.max_output_bytes)
        return inspection.total_bytes

    def _discard(self, name: str) -> None:
        folder = self.paths(name).folder
        if not folder.exists() and not folder.is_symlink():
            return
        if folder.is_symlink() or not folder.is_dir():
            folder.unlink()
            return
        # Iterative, whatever the tool left (a tree a thousand folders deep, folders without write
        # permission): shutil.rmtree recurses and dies of RecursionError (datasets/trees.py).
        if not remove_tree(folder):
            raise OSError(f"{folder} could not be removed (see the log)")


def _remove(path: Path) -> None:
    if not remove_tree(path):
        raise OSError(f"{path} could not be removed (see the log)")


def copy_tree(source: Path, dest: Path, *, max_bytes: int | None = None) -> int:
    """Copy ``source`` into ``dest`` (created; may exist empty), never following a link: links are
    copied as links, regular files by content and mode, anything else is refused. Returns the bytes
    copied; OutputRefused past ``max_bytes`` (a folder that grew after it was inspected)."""
    copied = 0

    def copy_file(src: str, dst: str) -> str:
        nonlocal copied
        # O_NOFOLLOW and O_NONBLOCK: a path swapped for a link or a FIFO since the walk is refused,
        # not followed or waited on.
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OutputRefused(f"{src} is not a regular file; nothing was copied back")
            with open(fd, "rb", closefd=False) as reader, open(dst, "xb") as writer:
                while chunk := reader.read(_COPY_CHUNK):
                    copied += len(chunk)
                    if max_bytes is not None and copied > max_bytes:
                        raise OutputRefused(
                            f"the output holds more than MAO_STEP_MAX_OUTPUT={max_bytes} bytes; nothing was committed"
                        )
                    writer.write(chunk)
            os.chmod(dst, stat.S_IMODE(info.st_mode) & 0o777)
        finally:
            os.close(fd)
        return dst

    shutil.copytree(source, dest, symlinks=True, copy_function=copy_file, dirs_exist_ok=True)
    return copied


# ---------------------------------------------------------------------------------------------------
# fetch: the design for engines without a shared file system (Kubernetes, issue 17)
# ---------------------------------------------------------------------------------------------------


class FetchTicket(BaseModel):
    """One single-use permission to move one attempt's data, as the orchestrator keeps it: the token
    itself is never stored, only its SHA-256. ``direction`` ``input``: the stage-in container may GET
    the input tarball once; ``output``: the stage-out container may PUT the output tarball once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempt: str  # Identity.object_name()
    direction: Literal["input", "output"]
    token_sha256: str
    expires_at: datetime
    max_bytes: int  # of the tarball (input: its size; output: MAO_STEP_MAX_OUTPUT plus headers)


class FetchPlan(BaseModel):
    """What a fetch-mode backend gives its stage-in and stage-out containers, never the tool's: the
    tokens travel in a Kubernetes Secret mounted only into those two containers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_url: str | None  # None: the step has no input
    output_url: str
    input_token: SecretStr | None
    output_token: SecretStr


class FetchStaging(Protocol):
    """The ``fetch`` data mode. The Pod: an init container (a small image of MAO's, stage-in) GETs
    ``input_url`` with its token and unpacks the tarball into an ``emptyDir`` the tool container mounts
    read-only at INPUT_MOUNT; the tool writes OUTPUT_MOUNT (another ``emptyDir``, pre-filled by the
    stage-in with the node branch's content); a stage-out container, started only when the tool exited
    0, tars OUTPUT_MOUNT and PUTs it to ``output_url``. The two routes (``GET /staging/{attempt}/input``,
    ``PUT /staging/{attempt}/output``) take the ticket's token as a bearer token, accept it once and
    only until ``expires_at``, and are in the OpenAPI document. A failed tool uploads nothing; an
    attempt whose upload never came ends ``lost`` (the engine's state says the tool exited 0).
    """

    async def issue(self, spec: ContainerSpec, base_url: str) -> FetchPlan:
        """Tickets for the attempt (replacing earlier ones of the same attempt)."""
        ...

    def input_tarball(self, attempt: str, token: str) -> AsyncIterator[bytes]:
        """The input snapshot as an uncompressed tarball; spends the input ticket."""
        ...

    async def accept_output(self, attempt: str, token: str, body: AsyncIterator[bytes]) -> int:
        """Spend the output ticket and unpack ``body`` into the work folder (``unpack_output``)."""
        ...

    async def revoke(self, attempt: str) -> None:
        """Drop the attempt's tickets (cancel, end, sweep)."""
        ...


def unpack_output(archive: Path, dest: Path, *, max_bytes: int | None, max_files: int) -> int:
    """Unpack an uploaded output tarball into the empty folder ``dest`` under the local output's rules:
    only regular files, folders and links that stay inside (tarfile's ``data`` filter also refuses
    absolute paths, ``..``, devices and FIFOs, and clears special bits), at most ``max_files`` members
    and ``max_bytes`` of content. Raises OutputRefused naming the first offending member; ``dest`` may
    then hold part of the archive, and the caller removes it."""
    total = 0
    with tarfile.open(archive, mode="r:") as tar:
        for count, member in enumerate(tar, start=1):
            if count > max_files:
                raise OutputRefused(f"the output holds more than {max_files} entries; nothing was committed")
            total += member.size if member.isfile() else 0
            if max_bytes is not None and total > max_bytes:
                raise OutputRefused(
                    f"the output holds more than MAO_STEP_MAX_OUTPUT={max_bytes} bytes; nothing was committed"
                )
            parts = PurePosixPath(member.name).parts
            if member.name.startswith("/") or ".." in parts:
                raise OutputRefused(
                    f"the output's entry {member.name!r} leads outside its folder; nothing was committed"
                )
            try:
                tar.extract(member, dest, filter="data")
            except tarfile.FilterError as exc:
                raise OutputRefused(f"the output's entry {member.name!r} is not allowed: {exc}") from exc
    return total
