"""A private single-node Slurm 22.05 cluster on loopback (Debian's munge, slurmctld, slurmd).

``start_slurm()`` writes everything into a temporary folder of its own (a munge key, munged's socket
folder, slurm.conf, the controller's state, slurmd's spool, logs) and starts three processes the
caller owns: ``munged``, ``slurmctld -D -i -f CONF`` and ``slurmd -D -N node1 -f CONF``, each on
private loopback ports; the node is idle within seconds. ``SlurmCluster.stop()`` stops them by pid
and removes the folder. Nothing outside the folder is touched: the machine's /etc/munge and
/etc/slurm stay as they are, and a Slurm command reaches this cluster only through ``env()``
(``SLURM_CONF``).

Settings from docs/ENGINES.md (what mattered on this kind of machine): listen on loopback only
(``NoInAddrAny,NoCtldInAddrAny``), ``select/cons_tres`` with ``CR_Core_Memory`` and a default memory
per CPU (else every job takes the node), ``EnforcePartLimits=ALL`` (else an impossible request pends
for ever), no cgroup plugins, jobcomp to a file (no slurmdbd), a short scheduling interval.

Two more nodes exist only in the configuration, both DOWN and never reachable (their slurmd port is
taken by nothing): ``gpunode`` with two GPUs as generic resources and ``ghost`` with the node feature
``nowhere``. A job asking for GPUs or for ``--constraint=nowhere`` is accepted and pends (as on a
cluster whose GPU nodes are down), which the tests of ``start_timeout`` and of GPU requests need.

slurmd must run as root (it starts the jobs as their users); ``start_slurm`` refuses otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .process import (
    LOCALHOST,
    ManagedProcess,
    ServerStartError,
    _free_ports,
    is_root,
    wait_until,
)

NODE = "node1"  # not "localhost": Slurm allows no other node beside a node of that name
GPU_NODE = "gpunode"
GHOST_NODE = "ghost"
GHOST_FEATURE = "nowhere"
PARTITION = "mao"
NODE_CPUS = 2
NODE_MEMORY_MB = 8000
GPU_NODE_GPUS = 2
# Seconds between SIGTERM and SIGKILL when a job is cancelled or hits its time limit.
KILL_WAIT = 5

_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")


def slurm_missing() -> str | None:
    """Why no cluster can be started here, or None."""
    if not is_root():
        return "slurmd must run as root (it starts jobs as their users); these tests run as root in CI"
    absent = [name for name in _BINARIES if _which(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed (scripts/bootstrap.sh installs slurmctld slurmd slurm-client munge)"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


@dataclass
class SlurmCluster:
    """The running cluster: ``conf`` (slurm.conf), ``jobcomp`` (one line per finished job),
    ``env()`` for Slurm commands, ``bin_dir`` (where sbatch and friends are)."""

    folder: Path
    conf: Path
    jobcomp: Path
    bin_dir: Path
    ctld_port: int
    slurmd_port: int
    munged: ManagedProcess
    slurmctld: ManagedProcess
    slurmd: ManagedProcess
    partition: str = PARTITION
    node: str = NODE
    stopped: bool = field(default=False)

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "SLURM_CONF": str(self.conf)}

    def command(
        self, *args: str, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one Slurm command (``scontrol``, ``squeue``...) against this cluster."""
        return subprocess.run(
            list(args), env=self.env(), capture_output=True, text=True, timeout=timeout, check=check
        )

    def node_state(self, node: str = NODE) -> str:
        out = self.command("sinfo", "-h", "-N", "-n", node, "-o", "%T").stdout.split()
        return out[0] if out else ""

    def wait_node_idle(self, timeout: float = 60.0) -> None:
        def idle() -> bool:
            self._check_alive()
            state = self.node_state()
            if state.startswith(("down", "drain", "fail")):
                # A node that was taken down (a test's node failure) comes back with resume.
                self.command("scontrol", "update", f"NodeName={NODE}", "State=RESUME", check=False)
            return state in ("idle", "mixed", "allocated")

        wait_until(idle, timeout=timeout, interval=0.2, what=f"Slurm node {NODE} to be up")

    def _check_alive(self) -> None:
        for process in (self.munged, self.slurmctld, self.slurmd):
            if not process.alive:
                raise ServerStartError(
                    f"{process.name} exited with code {process.returncode}{process.log_tail_block()}"
                )

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        # Jobs first (their containers die with them: the job's trap), then the daemons by pid.
        try:
            self.command("scancel", "--full", "-p", PARTITION, check=False, timeout=10)
            wait_until(
                lambda: not self.command("squeue", "-h", "-o", "%i", check=False, timeout=10).stdout.strip(),
                timeout=2 * KILL_WAIT + 10,
                interval=0.5,
                what="the test cluster's jobs to end",
            )
        except Exception:  # noqa: BLE001 - best effort: the daemons are stopped anyway
            pass
        for process in (self.slurmd, self.slurmctld, self.munged):
            process.stop(timeout=15)
        shutil.rmtree(self.folder, ignore_errors=True)


def _conf(folder: Path, socket: Path, ctld_port: int, slurmd_port: int, cpus: int) -> str:
    return f"""\
# Written by tests/servers/slurm.py for one test session; everything under {folder}.
ClusterName=mao-test
SlurmctldHost=localhost({LOCALHOST})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool/%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={folder}/jobcomp.txt
MinJobAge=300
KillWait={KILL_WAIT}
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
MailProg=/bin/true
GresTypes=gpu
NodeName={NODE} NodeAddr={LOCALHOST} CPUs={cpus} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
NodeName={GPU_NODE} NodeHostname={GPU_NODE} NodeAddr=127.0.0.2 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} Gres=gpu:{GPU_NODE_GPUS} State=DOWN
NodeName={GHOST_NODE} NodeHostname={GHOST_NODE} NodeAddr=127.0.0.3 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} Features={GHOST_FEATURE} State=DOWN
PartitionName={PARTITION} Nodes={NODE},{GPU_NODE},{GHOST_NODE} Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=500
"""


def start_slurm(timeout: float = 60.0, cpus: int = NODE_CPUS) -> SlurmCluster:
    """Start munged, slurmctld and slurmd in a new temporary folder; return once the node is idle.
    ``cpus``: the CPUs the node declares (a bench of sleeping jobs may declare more than it has)."""
    missing = slurm_missing()
    if missing:
        raise ServerStartError(f"cannot start Slurm: {missing}")
    # Short paths: munged's socket path must fit a unix socket address.
    folder = Path(tempfile.mkdtemp(prefix="mao-slurm-"))
    os.chmod(folder, 0o755)
    started: list[ManagedProcess] = []
    try:
        for sub in ("state", "spool", "munge"):
            (folder / sub).mkdir(mode=0o700)
        # munged refuses a socket folder others cannot enter (and one they can write).
        os.chmod(folder / "munge", 0o755)
        key = folder / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        socket = folder / "munge" / "munge.socket"
        ctld_port, slurmd_port = _free_ports(2)
        conf = folder / "slurm.conf"
        conf.write_text(_conf(folder, socket, ctld_port, slurmd_port, cpus))
        (folder / "gres.conf").write_text(f"NodeName={GPU_NODE} Name=gpu Count={GPU_NODE_GPUS}\n")
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "SLURM_CONF": str(conf)}

        munged = ManagedProcess(
            [
                _which("munged") or "munged",
                "--foreground",
                "--force",
                f"--socket={socket}",
                f"--key-file={key}",
                f"--pid-file={folder}/munge/munged.pid",
                f"--log-file={folder}/munged.log",
                f"--seed-file={folder}/munge/munged.seed",
            ],
            folder / "munged.out",
            env=env,
            name="munged",
        )
        started.append(munged)
        wait_until(
            lambda: _alive_or_raise(munged) and socket.exists(), timeout=timeout, what="munged's socket"
        )
        slurmctld = ManagedProcess(
            [_which("slurmctld") or "slurmctld", "-D", "-i", "-f", str(conf)],
            folder / "slurmctld.out",
            env=env,
            name="slurmctld",
        )
        started.append(slurmctld)
        slurmd = ManagedProcess(
            [_which("slurmd") or "slurmd", "-D", "-N", NODE, "-f", str(conf)],
            folder / "slurmd.out",
            env=env,
            name="slurmd",
        )
        started.append(slurmd)
        bin_dir = Path(_which("sbatch") or "/usr/bin/sbatch").parent
        cluster = SlurmCluster(
            folder=folder,
            conf=conf,
            jobcomp=folder / "jobcomp.txt",
            bin_dir=bin_dir,
            ctld_port=ctld_port,
            slurmd_port=slurmd_port,
            munged=munged,
            slurmctld=slurmctld,
            slurmd=slurmd,
        )
        began = time.monotonic()
        cluster.wait_node_idle(timeout=max(1.0, timeout - (time.monotonic() - began)))
        return cluster
    except BaseException:
        for process in reversed(started):
            process.stop(timeout=10)
        logs = "".join(
            _tail_of(folder / name) for name in ("munged.log", "slurmctld.log", f"slurmd-{NODE}.log")
        )
        shutil.rmtree(folder, ignore_errors=True)
        if logs:
            raise ServerStartError(f"Slurm did not come up{logs}") from None
        raise


def _alive_or_raise(process: ManagedProcess) -> bool:
    if not process.alive:
        raise ServerStartError(
            f"{process.name} exited with code {process.returncode}{process.log_tail_block()}"
        )
    return True


def _tail_of(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return f"\n--- last {lines} lines of {path.name} ---\n" + "\n".join(text.splitlines()[-lines:])
