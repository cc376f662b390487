"""The ``fetch`` data mode, the orchestrator's side (docs/backends.md#fetch): for engines without a
shared file system (Kubernetes). The design is staging.py's ``FetchStaging``; this is its build.

Per attempt, a private folder ``<root>/<attempt>/`` (0700) holds everything, so that a restarted
orchestrator (SIGKILL included) serves and accepts exactly what the one before it issued:

- ``ticket.json``: the SHA-256 of each single-use token (never the token), when each expires, the
  output's limits;
- ``input.tar``: the tarball the stage-in fetches, written at submission: ``input/`` (the snapshot,
  read-only for the tool) and ``data/`` (the work folder's current content, which tools may read);
- ``input.spent`` / ``output.spent``: created with ``O_EXCL`` when a token is used: once, across
  processes too;
- ``upload.tar`` then ``output/``: the uploaded tarball and what ``unpack_output`` made of it under
  the local output's rules (no link out, no device, no FIFO, special bits cleared, size and
  file-count limits); ``refused``: why an upload was refused.

The tokens travel to the stage-in and stage-out containers only (a Kubernetes Secret mounted into those
two, never into the tool's): the tool never holds one. After the engine says the tool succeeded,
``bring_back`` makes the work folder hold exactly the accepted upload; success is the engine's state,
never the upload alone (a failed tool uploads nothing, and nothing of it would be committed anyway).

The file work runs in worker threads; every method here that touches disk is a coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import secrets
import tarfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from executor.wire.names import name_problem

from ..datasets.hygiene import OutputRefused, check_output, inspect_folder
from ..datasets.trees import remove_tree
from ..errors import BadRequest, Conflict, NotFound, PayloadTooLarge, Unauthorized
from .seam import ContainerSpec
from .staging import copy_tree, unpack_output

Direction = Literal["input", "output"]
TAR_OVERHEAD = 1024 * 1024  # headers and padding an output tarball may add to its content's bytes
DEFAULT_MAX_FILES = 100_000
_CHUNK = 1 << 16


class FetchPlan(BaseModel):
    """What the stage-in and stage-out containers are given (never the tool's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_url: str
    output_url: str
    input_token: SecretStr
    output_token: SecretStr


class _Ticket(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    attempt: str
    input_sha256: str
    output_sha256: str
    input_expires: float  # wall clock (time.time): it must hold across a restart
    output_expires: float
    max_output_bytes: int | None
    max_files: int


class UploadMissing(Exception):
    """The engine says the tool succeeded, but no accepted upload is here (the stage-out failed, or
    its upload was refused: ``refused`` says why, when it was)."""

    def __init__(self, message: str, refused: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.refused = refused


@dataclass(frozen=True)
class _Paths:
    folder: Path

    @property
    def ticket(self) -> Path:
        return self.folder / "ticket.json"

    @property
    def input(self) -> Path:
        return self.folder / "input.tar"

    @property
    def upload(self) -> Path:
        return self.folder / "upload.tar"

    @property
    def output(self) -> Path:
        return self.folder / "output"

    @property
    def refused(self) -> Path:
        return self.folder / "refused"

    def spent(self, direction: Direction) -> Path:
        return self.folder / f"{direction}.spent"


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _locked(folder: Path) -> threading.Lock:
    """One operation at a time on an attempt's folder, across every FetchExchange object and event
    loop of the process (the disk work runs in worker threads): a cancel's discard and the end's bring
    back, or an upload and a discard, never interleave."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(folder, threading.Lock())


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class FetchExchange:
    """The tickets and tarballs of every fetch-mode attempt of this instance, kept under ``root``.

    Holds nothing in memory: two objects over the same root (the backend's and the routes') agree.
    """

    def __init__(
        self, root: Path, *, max_output_bytes: int | None = None, max_files: int = DEFAULT_MAX_FILES
    ) -> None:
        self.root = root
        self.max_output_bytes = max_output_bytes
        self.max_files = max_files

    def _paths(self, attempt: str) -> _Paths:
        if name_problem(attempt, "attempt") or attempt.startswith("."):
            raise BadRequest(f"{attempt[:80]!r} is not an attempt name", code="invalid_name")
        return _Paths(self.root / attempt)

    # -- the backend's side ------------------------------------------------------------------------

    async def issue(self, spec: ContainerSpec, base_url: str, *, input_seconds: float, output_seconds: float) -> FetchPlan:
        """Write the attempt's input tarball and fresh tickets (replacing an earlier issue of the same
        attempt: a submission repeated after a crash); the input ticket is good for ``input_seconds``,
        the output ticket for ``output_seconds``, from now."""
        input_token, output_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.time()
        ticket = _Ticket(
            attempt=spec.name,
            input_sha256=_sha256(input_token),
            output_sha256=_sha256(output_token),
            input_expires=now + input_seconds,
            output_expires=now + output_seconds,
            max_output_bytes=self.max_output_bytes,
            max_files=self.max_files,
        )
        await asyncio.to_thread(self._issue, spec, ticket)
        base = base_url.rstrip("/") + f"/staging/{spec.name}"
        return FetchPlan(
            input_url=f"{base}/input",
            output_url=f"{base}/output",
            input_token=SecretStr(input_token),
            output_token=SecretStr(output_token),
        )

    def _issue(self, spec: ContainerSpec, ticket: _Ticket) -> None:
        paths = self._paths(spec.name)
        with _locked(paths.folder):
            self._issue_locked(spec, ticket, paths)

    def _issue_locked(self, spec: ContainerSpec, ticket: _Ticket, paths: _Paths) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove(paths.folder)
        paths.folder.mkdir(mode=0o700)
        with tarfile.open(paths.input, "w", format=tarfile.PAX_FORMAT) as tar:
            for arcname, folder in (("input", spec.input.folder if spec.input else None), ("data", spec.output.folder)):
                _add_tree(tar, arcname, folder, spec.user)
        os.chmod(paths.input, 0o600)
        _write_private(paths.ticket, ticket.model_dump_json())

    async def bring_back(self, spec: ContainerSpec) -> int:
        """Make ``spec.output.folder`` hold exactly the accepted upload; its bytes. UploadMissing when
        there is none; OutputRefused when it may not be committed (the work folder is untouched)."""
        return await asyncio.to_thread(self._bring_back, spec)

    def _bring_back(self, spec: ContainerSpec) -> int:
        paths = self._paths(spec.name)
        with _locked(paths.folder):
            return self._bring_back_locked(spec, paths)

    def _bring_back_locked(self, spec: ContainerSpec, paths: _Paths) -> int:
        if not paths.output.is_dir():
            refused = paths.refused.read_text() if paths.refused.is_file() else None
            if refused is not None:
                raise UploadMissing(f"the output upload was refused: {refused}", refused)
            raise UploadMissing("no output was uploaded (the stage-out container did not finish its upload)")
        ticket = self._ticket(paths)
        inspection = inspect_folder(paths.output)
        check_output(inspection, ticket.max_output_bytes if ticket else self.max_output_bytes, f"the output of {spec.name}")
        work = spec.output.folder
        work.mkdir(parents=True, exist_ok=True)
        inspect_folder(work, None, remove_bad=True)
        for entry in os.scandir(work):
            _remove(Path(entry.path))
        copy_tree(paths.output, work, max_bytes=self.max_output_bytes)
        return inspection.total_bytes

    async def refusal(self, attempt: str) -> str | None:
        """Why the attempt's upload was refused, or None (none came, or it was accepted)."""
        path = self._paths(attempt).refused
        try:
            return await asyncio.to_thread(path.read_text)
        except FileNotFoundError:
            return None

    async def discard(self, attempt: str) -> None:
        """Drop the attempt's tickets and files (end, cancel, sweep); safe to repeat."""
        await asyncio.to_thread(self._discard, self._paths(attempt).folder)

    @staticmethod
    def _discard(folder: Path) -> None:
        with _locked(folder):
            _remove(folder)
        with _LOCKS_LOCK:
            _LOCKS.pop(folder, None)

    async def sweep(self, grace: float = 3600.0) -> list[str]:
        """Remove the folders of attempts whose tickets both expired more than ``grace`` seconds ago
        (an orchestrator that died before the attempt's end left them); the names removed."""
        return await asyncio.to_thread(self._sweep, grace)

    def _sweep(self, grace: float) -> list[str]:
        removed, now = [], time.time()
        for attempt in self.attempts():
            paths = self._paths(attempt)
            ticket = self._ticket(paths)
            expired = ticket is None or max(ticket.input_expires, ticket.output_expires) + grace < now
            if expired and (ticket is not None or paths.folder.stat().st_mtime + grace < now):
                self._discard(paths.folder)
                removed.append(attempt)
        return removed

    def attempts(self) -> list[str]:
        """The attempts that have a folder here (for a sweep)."""
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    # -- the routes' side (orchestrator/api/staging.py) -----------------------------------------------

    async def open_input(self, attempt: str, token: str) -> Path:
        """Spend the input ticket: the tarball to send. Unauthorized (unknown attempt, wrong or
        expired token), Conflict (already spent)."""
        paths = await asyncio.to_thread(self._spend, attempt, token, "input")
        return paths.input

    async def accept_output(self, attempt: str, token: str, body: AsyncIterator[bytes], length: int | None) -> int:
        """Spend the output ticket, store ``body`` (bounded) and unpack it under the output rules;
        the bytes of content. PayloadTooLarge past the limit, OutputRefused for what may not be
        committed (``refused`` keeps why, for the attempt's end)."""
        paths = await asyncio.to_thread(self._spend, attempt, token, "output")
        ticket = self._ticket(paths)
        max_bytes = ticket.max_output_bytes if ticket else self.max_output_bytes
        limit = None if max_bytes is None else max_bytes + TAR_OVERHEAD + max_bytes // 8
        try:
            if limit is not None and length is not None and length > limit:
                raise PayloadTooLarge(f"the output tarball has {length} bytes, more than the {limit} allowed")
            received = 0
            with open(paths.upload, "xb") as upload:
                os.chmod(paths.upload, 0o600)
                async for chunk in body:
                    received += len(chunk)
                    if limit is not None and received > limit:
                        raise PayloadTooLarge(f"the output tarball is larger than the {limit} bytes allowed")
                    await asyncio.to_thread(upload.write, chunk)
            if length is not None and received != length:
                raise BadRequest(f"the upload ended after {received} of {length} bytes", code="upload_incomplete")
            return await asyncio.to_thread(self._unpack_locked, paths, ticket)
        except (OutputRefused, PayloadTooLarge, BadRequest) as exc:
            await asyncio.to_thread(_write_private, paths.refused, exc.message)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(paths.upload.unlink)

    def _unpack_locked(self, paths: _Paths, ticket: _Ticket | None) -> int:
        with _locked(paths.folder):
            if not paths.folder.is_dir():
                raise NotFound(f"attempt {paths.folder.name} has been cleared", code="staging_gone")
            return self._unpack(paths, ticket)

    def _unpack(self, paths: _Paths, ticket: _Ticket | None) -> int:
        staging = paths.folder / "output.partial"
        _remove(staging)
        staging.mkdir(mode=0o700)
        try:
            total = unpack_output(
                paths.upload,
                staging,
                max_bytes=ticket.max_output_bytes if ticket else self.max_output_bytes,
                max_files=ticket.max_files if ticket else self.max_files,
            )
            check_output(inspect_folder(staging), None, "the uploaded output")
        except tarfile.TarError as exc:
            _remove(staging)
            raise OutputRefused(f"the upload is not a readable tar archive: {exc}; nothing was committed") from exc
        except BaseException:
            _remove(staging)
            raise
        staging.rename(paths.output)
        return total

    def _ticket(self, paths: _Paths) -> _Ticket | None:
        try:
            return _Ticket.model_validate_json(paths.ticket.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _spend(self, attempt: str, token: str, direction: Direction) -> _Paths:
        paths = self._paths(attempt)
        ticket = self._ticket(paths)
        wanted = None if ticket is None else (ticket.input_sha256 if direction == "input" else ticket.output_sha256)
        # The same answer for an unknown attempt and a wrong token: a guesser learns nothing.
        if wanted is None or not token or not hmac.compare_digest(_sha256(token), wanted):
            raise Unauthorized(f"no valid staging ticket for {direction} of {attempt}", code="staging_ticket")
        assert ticket is not None
        expires = ticket.input_expires if direction == "input" else ticket.output_expires
        if time.time() > expires:
            raise Unauthorized(f"the {direction} ticket of {attempt} has expired", code="staging_ticket_expired")
        try:
            fd = os.open(paths.spent(direction), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            raise Conflict(f"the {direction} ticket of {attempt} was used already", code="staging_ticket_spent") from None
        except FileNotFoundError:
            raise NotFound(f"attempt {attempt} has been cleared", code="staging_gone") from None
        os.close(fd)
        return paths


def _add_tree(tar: tarfile.TarFile, arcname: str, folder: Path | None, owner: tuple[int, int]) -> None:
    """``folder`` as ``arcname/`` owned by the tool's uid (the stage-in runs as it and cannot chown),
    links as links, anything but files, folders and links left out (a git export holds none)."""

    def own(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isfile() or info.isdir() or info.issym()):
            return None
        info.uid, info.gid = owner
        info.uname = info.gname = ""
        info.mode |= 0o700 if info.isdir() else 0o600
        return info

    root = tarfile.TarInfo(arcname)
    root.type, root.mode = tarfile.DIRTYPE, 0o755
    root.uid, root.gid = owner
    tar.addfile(root)
    if folder is None:
        return
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        tar.add(entry.path, arcname=f"{arcname}/{entry.name}", recursive=True, filter=own)


def _write_private(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600), "w") as file:
        file.write(text)
    os.replace(partial, path)


def _remove(path: Path) -> None:
    # Iterative, whatever a tool left (folders without write permission, a tree a thousand folders
    # deep, which shutil.rmtree dies on): datasets/trees.py.
    if not remove_tree(path):
        raise OSError(f"{path} could not be removed (see the log)")


async def read_file(path: Path) -> AsyncIterator[bytes]:
    """``path``'s bytes in chunks, read in a worker thread."""
    with open(path, "rb") as file:
        while chunk := await asyncio.to_thread(file.read, _CHUNK):
            yield chunk
