"""Asking Slurm: its commands as asyncio subprocesses (argument lists, a private environment, a bound
on how many run at once), one shared look at the queue for every attempt, and what the cluster is.

The event loop never waits on a command: each is ``asyncio.create_subprocess_exec`` with a timeout.
A command that cannot reach the controller raises ``BackendUnavailable`` (the job, if any, is still
there: ask again); a command the controller answered with a refusal returns its exit code and
message to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..config.backends.slurm import SlurmSettings
from .seam import BackendUnavailable
from .slurm_answers import SQUEUE_FORMAT, JobView, parse_squeue

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 60.0
# What a Slurm command prints when the controller (or munge) cannot be asked, rather than refusing.
_UNREACHABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|Communication connection failure|"
    r"Zero Bytes were transmitted|Munge encode failed|Slurm backup controller in standby mode|"
    r"slurm_load_\w+ error|Unable to establish controller",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Answer:
    returncode: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).replace("\n", "; ")
        return text[:500] or f"exit code {self.returncode}"


class SlurmCommands:
    """The Slurm commands of one backend (``settings.slurm_bin``, ``settings.slurm_conf``)."""

    def __init__(self, backend: str, settings: SlurmSettings) -> None:
        self.backend = backend
        self.settings = settings
        self._limit = asyncio.Semaphore(settings.max_commands)
        # Only what the commands need: nothing of the orchestrator's environment (tokens) reaches them,
        # nor, through sbatch, a job.
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
            "LANG": "C",
            "LC_ALL": "C",
            "SLURM_TIME_FORMAT": "%s",
        }
        conf = settings.slurm_conf or os.environ.get("SLURM_CONF")
        if conf:
            env["SLURM_CONF"] = str(conf)
        self.env = env

    def binary(self, name: str) -> str:
        return str(self.settings.slurm_bin / name) if self.settings.slurm_bin else name

    async def run(self, name: str, args: list[str], *, what: str, timeout: float = COMMAND_TIMEOUT) -> Answer:
        """Run Slurm command ``name`` (or any program given by path) with ``args``."""
        program = name if name.startswith("/") else self.binary(name)
        async with self._limit:
            try:
                process = await asyncio.create_subprocess_exec(
                    program,
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=self.env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise BackendUnavailable(
                    f"backend {self.backend}: cannot run {program} ({exc.strerror}): is the Slurm client "
                    "installed here (MAO_BACKEND_<NAME>_SLURM_BIN)?"
                ) from None
            try:
                out, err = await asyncio.wait_for(process.communicate(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                raise BackendUnavailable(
                    f"backend {self.backend}: {what}: {name} did not answer within {timeout:g}s"
                ) from None
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await asyncio.shield(process.wait())
                raise
        answer = Answer(process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
        if answer.returncode != 0 and _UNREACHABLE.search(answer.stderr + answer.stdout):
            raise BackendUnavailable(f"backend {self.backend}: {what}: {answer.message}")
        return answer

    async def squeue(self, *, name: str | None = None) -> list[JobView]:
        """This user's jobs (``--me``), ended ones too while the controller keeps them (MinJobAge)."""
        args = ["--me", "--noheader", "--states=all", f"--Format={SQUEUE_FORMAT}"]
        if name is not None:
            args.append(f"--name={name}")
        answer = await self.run("squeue", args, what="reading the queue")
        if answer.returncode != 0:
            raise BackendUnavailable(f"backend {self.backend}: reading the queue: {answer.message}")
        return parse_squeue(answer.stdout)


# -- one look at the queue for everyone ----------------------------------------------------------------


@dataclass(frozen=True)
class Look:
    """The queue at ``at`` (monotonic, when the squeue began)."""

    at: float
    jobs: dict[str, JobView]  # by job id
    names: dict[str, JobView]  # by job name: the newest job of that name
    error: BackendUnavailable | None = None

    def find(self, name: str, job_id: str | None) -> JobView | None:
        if job_id is not None:
            return self.jobs.get(job_id)
        return self.names.get(name)


def _look(at: float, jobs: list[JobView]) -> Look:
    by_id = {job.job_id: job for job in jobs}
    names: dict[str, JobView] = {}
    for job in sorted(jobs, key=lambda j: int(j.job_id)):
        names[job.name] = job
    return Look(at, by_id, names)


class QueueWatch:
    """One squeue every ``interval`` seconds while anyone waits, shared by every attempt's wait and
    log follower (a fan-out of 200 shards is 1 squeue a second, not 200)."""

    def __init__(self, commands: SlurmCommands, interval: float) -> None:
        self._commands = commands
        self._interval = interval
        self._changed = asyncio.Condition()
        self._last: Look | None = None
        self._interested = 0
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def interest(self) -> Iterator[None]:
        self._interested += 1
        try:
            yield
        finally:
            self._interested -= 1

    async def after(self, since: float) -> Look:
        """The first look that began at or after ``since`` (monotonic); raises BackendUnavailable
        when that look could not be taken."""
        with self.interest():
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(
                    self._loop(), name=f"slurm queue watch {self._commands.backend}"
                )
            async with self._changed:
                await self._changed.wait_for(lambda: self._last is not None and self._last.at >= since)
                look = self._last
        assert look is not None
        if look.error is not None:
            raise look.error
        return look

    async def _loop(self) -> None:
        while self._interested > 0:
            began = time.monotonic()
            try:
                look = _look(began, await self._commands.squeue())
            except BackendUnavailable as exc:
                look = Look(began, {}, {}, exc)
            except Exception as exc:  # noqa: BLE001 - a waiter must hear of it, not hang
                log.exception("backend %s: reading the queue failed", self._commands.backend)
                look = Look(began, {}, {}, BackendUnavailable(f"reading the queue failed: {exc}"))
            async with self._changed:
                self._last = look
                self._changed.notify_all()
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - began)))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# -- what the cluster is ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeFacts:
    name: str
    state: str
    cpus: int
    memory_mb: int
    gpus: int
    features: frozenset[str]


@dataclass(frozen=True)
class PartitionFacts:
    name: str
    up: bool
    time_limit: float | None  # seconds; None: no limit
    default: bool
    nodes: tuple[NodeFacts, ...] = field(default=())

    @property
    def max_gpus(self) -> int:
        return max((node.gpus for node in self.nodes), default=0)

    @property
    def max_cpus(self) -> int:
        return max((node.cpus for node in self.nodes), default=0)

    @property
    def max_memory_mb(self) -> int:
        return max((node.memory_mb for node in self.nodes), default=0)

    @property
    def usable(self) -> list[NodeFacts]:
        return [
            n for n in self.nodes if not n.state.startswith(("down", "drain", "fail", "unknown", "future"))
        ]


@dataclass(frozen=True)
class ClusterFacts:
    at: float  # monotonic
    partitions: dict[str, PartitionFacts]

    def partition(self, name: str | None) -> PartitionFacts | None:
        if name is None:
            return next((p for p in self.partitions.values() if p.default), None)
        return self.partitions.get(name)


SINFO_FORMAT = "%R|%P|%a|%l|%N|%T|%c|%m|%G|%f"
_GPU = re.compile(r"^gpu(?::[^:(]+)?:(\d+)")


def gres_gpus(gres: str) -> int:
    """GPUs in a node's Gres (``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:1,shard:4``, ``(null)``)."""
    total = 0
    for part in gres.split(","):
        match = _GPU.match(part.strip())
        if match:
            total += int(match.group(1))
    return total


def slurm_duration(text: str) -> float | None:
    """Seconds of a Slurm time limit (``infinite``, ``1-00:00:00``, ``2:00:00``, ``30:00``, ``30``)."""
    text = text.strip().lower()
    if text in ("infinite", "unlimited", "n/a", ""):
        return None
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        days = int(head)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        seconds = parts[0] * 60  # minutes
    elif len(parts) == 2:
        seconds = parts[0] * 60 + parts[1]
    else:
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return float(days * 86400 + seconds)


def parse_sinfo(stdout: str, at: float) -> ClusterFacts:
    nodes: dict[str, list[NodeFacts]] = {}
    meta: dict[str, tuple[bool, float | None, bool]] = {}
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) != 10:
            continue
        name, marked, avail, limit, node, state, cpus, memory, gres, features = parts
        try:
            meta[name] = (avail.strip() == "up", slurm_duration(limit), marked.endswith("*"))
            nodes.setdefault(name, []).append(
                NodeFacts(
                    name=node,
                    state=state.strip().lower(),
                    cpus=int(cpus) if cpus.isdigit() else 0,
                    memory_mb=int(memory) if memory.isdigit() else 0,
                    gpus=gres_gpus(gres),
                    features=frozenset(f for f in features.split(",") if f and f != "(null)"),
                )
            )
        except ValueError:
            continue
    partitions = {
        name: PartitionFacts(name, up, limit, default, tuple(nodes.get(name, ())))
        for name, (up, limit, default) in meta.items()
    }
    return ClusterFacts(at, partitions)


async def cluster_facts(commands: SlurmCommands) -> ClusterFacts:
    answer = await commands.run(
        "sinfo", ["--noheader", "--Node", f"--format={SINFO_FORMAT}"], what="reading the nodes"
    )
    if answer.returncode != 0:
        raise BackendUnavailable(f"backend {commands.backend}: reading the nodes: {answer.message}")
    return parse_sinfo(answer.stdout, time.monotonic())
