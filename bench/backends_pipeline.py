"""What does a pipeline step cost on each backend, through a node, against the same tool run directly
on that engine? (``bench/backends_bench.py --engine node``, or this script.)

Level ``node``: one orchestrator (SQLite, etcd, the executor, a bare git remote per dataset) with four
backends at once, configured as the node-level contract configures them
(tests/integration/node_backends.py): ``local`` (this host's executor), ``cluster`` (this machine's
Docker made a single-node swarm on loopback), ``hpc`` (a private single-node Slurm whose jobs run
their containers on this Docker) and ``kube`` (the fake Kubernetes API, whose kubelet runs each pod's
stage-in, tool and stage-out containers on this Docker, the data fetched from the node's own staging
routes). The same small pipeline runs on each: --steps steps in a line, each appending a line to its
output dataset (``date +%s%N >> /usr/src/app/data/samples-$MAO_STEP.txt``), through ``POST /pipeline/run``;
the figure is the run's wall time divided by its steps: everything a step costs (input snapshot,
staging, submit, watching, the log kept, the output checked, commit, ground-truth vote).

Against, in the same round, the same tool run --steps times, one after the other, directly on the
engine with its own command-line tools and nothing else (no git, no staging, no log kept):
- local: ``docker run --rm`` (tool uid, capabilities dropped, memory and process limits, the folder bound);
- cluster: ``docker service create --mode replicated-job --restart-condition none --no-resolve-image
  --detach`` (same user, limits and bind), ``docker service ps`` polled every 0.25 s (the backend's
  POLL_INTERVAL), ``docker service logs``, ``docker service rm`` and its exited container;
- hpc: ``sbatch`` of a two-line job script running the same ``docker run --rm --init``, ``squeue -j``
  polled every 0.25 s (the backend's POLL_INTERVAL), the job's output file read;
- kube: no engine to run the tool directly (the API is a fake): reported without a ratio.
Node and direct alternate (the order flips every round) so noise and drift hit both alike. Reported:
median seconds per step on each side, their ratio (node / direct) and difference, and the load average.

    .venv/bin/python bench/backends_pipeline.py [--steps 3] [--rounds 5] [--backends local,cluster,hpc,kube] [--write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness import IMAGE, bench_node, publish

from orchestrator.executors.slurm_answers import ENDED as SLURM_ENDED
from tests import servers
from tests.api import Api

APP = "/usr/src/app"
# Each step its own file: steps of one dataset appending to one file would conflict in ground-truth.
SCRIPT = f"date +%s%N >> {APP}/data/samples-$MAO_STEP.txt"
TOOL = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())
KINDS = {"local": "docker", "cluster": "swarm", "hpc": "slurm", "kube": "kubernetes"}
POLL = 0.25  # seconds between looks, by hand as the swarm and Slurm backends are configured here
SWARM_ENDED = ("complete", "failed", "rejected", "shutdown", "orphaned")
STAGING_IMAGE = "mao-staging:bench"
# The tool's limits on every side (the step's memory; the backends' default process limit).
MEMORY, PIDS = "64m", "512"


def run(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, env=env, timeout=300).stdout


def tool_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, *TOOL) if os.getuid() == 0 else None
    return folder


def docker_run_args(folder: Path) -> list[str]:
    return [
        "--user", f"{TOOL[0]}:{TOOL[1]}", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--memory", MEMORY, "--pids-limit", PIDS, "--network", "none",
        "-v", f"{folder}:{APP}/data", IMAGE, "sh", "-c", SCRIPT,
    ]  # fmt: skip


def direct_local(root: Path, steps: int) -> float:
    folder = tool_folder(root, "local")
    started = time.monotonic()
    for _ in range(steps):
        run("docker", "run", "--rm", *docker_run_args(folder))
    return time.monotonic() - started


def direct_swarm(root: Path, steps: int) -> float:
    folder = tool_folder(root, "swarm")
    started = time.monotonic()
    for i in range(steps):
        name = f"bench-direct-{os.getpid()}-{time.monotonic_ns()}-{i}"
        run(
            "docker", "service", "create", "--quiet", "--detach", "--no-resolve-image", "--name", name,
            "--mode", "replicated-job", "--restart-condition", "none",
            "--user", f"{TOOL[0]}:{TOOL[1]}", "--cap-drop", "ALL", "--limit-memory", MEMORY, "--limit-pids", PIDS,
            "--mount", f"type=bind,source={folder},target={APP}/data", IMAGE, "sh", "-c", SCRIPT,
        )  # fmt: skip
        while True:
            state = run("docker", "service", "ps", "--format", "{{.CurrentState}}", name).strip().lower()
            if state.startswith(SWARM_ENDED):
                break
            time.sleep(POLL)
        if not state.startswith("complete"):
            raise RuntimeError(f"service {name}: {state}")
        run("docker", "service", "logs", "--raw", name)
        run("docker", "service", "rm", name)
        # docker service rm leaves the job's exited container behind on 20.10 (moby#42789).
        left = run("docker", "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={name}").split()
        if left:
            run("docker", "rm", "-f", *left)
    return time.monotonic() - started


def direct_slurm(root: Path, steps: int, cluster: servers.SlurmCluster) -> float:
    folder = tool_folder(root, "slurm")
    job = root / "job.sh"
    # The container's arguments are the script's own ("$@"): no shell string is built from them.
    job.write_text(f'#!/bin/sh\nexec {shutil.which("docker")} run --rm --init "$@"\n')
    env = cluster.env()
    started = time.monotonic()
    for i in range(steps):
        out = root / f"slurm-{i}.out"
        submitted = run(
            "sbatch", "--parsable", f"--partition={cluster.partition}", "--no-requeue", "--export=NONE",
            "--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--mem=192M", "--time=5",
            f"--output={out}", f"--chdir={root}", str(job), *docker_run_args(folder), env=env,
        )  # fmt: skip
        job_id = submitted.strip().split(";")[0]
        while True:
            state = run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T", env=env).strip()
            if state in SLURM_ENDED:
                break
            time.sleep(POLL)
        if state != "COMPLETED":
            raise RuntimeError(f"job {job_id}: {state}: {out.read_text() if out.exists() else ''}")
        out.read_bytes()
        out.unlink()
    return time.monotonic() - started


def node_run(api: Api, pipeline: str) -> float:
    started = time.monotonic()
    run_ = api.ok(api.post("/pipeline/run", {"name": pipeline}))
    took = time.monotonic() - started
    if run_["status"] != "succeeded":
        raise RuntimeError(f"{pipeline}: {run_['status']}: {run_.get('error')}")
    return took


@contextmanager
def engines(root: Path, names: list[str]) -> Iterator[tuple[dict[str, str], servers.SlurmCluster | None]]:
    """The engines the node's backends use, started for the bench (and stopped, or left as found),
    and the node's settings for them."""
    with ExitStack() as stack:
        settings: dict[str, str] = {"MAO_BACKENDS": ",".join(f"{n}={KINDS[n]}" for n in names)}
        cluster = None
        if "cluster" in names:
            stack.enter_context(servers.single_node_swarm())
            shared = root / "swarm-shared"
            shared.mkdir(mode=0o711)
            settings |= {
                "MAO_BACKEND_CLUSTER_SHARED_ROOT": str(shared),
                "MAO_BACKEND_CLUSTER_ACCEPT_WITHOUT_NO_NEW_PRIVILEGES": "1",  # this dockerd lacks the daemon flag
                "MAO_BACKEND_CLUSTER_OUTPUT_SETTLE_SECONDS": "0",  # one host: no network file system
            }
        if "hpc" in names:
            cluster = servers.start_slurm()
            stack.callback(cluster.stop)
            shared = root / "slurm-shared"
            shared.mkdir(mode=0o711)
            settings |= {
                "MAO_BACKEND_HPC_SHARED_ROOT": str(shared),
                "MAO_BACKEND_HPC_SLURM_CONF": str(cluster.conf),
                "MAO_BACKEND_HPC_SLURM_BIN": str(cluster.bin_dir),
                "MAO_BACKEND_HPC_JOBCOMP_FILE": str(cluster.jobcomp),
                "MAO_BACKEND_HPC_PARTITION": cluster.partition,
                "MAO_BACKEND_HPC_OUTPUT_SETTLE_SECONDS": "0",
                "MAO_BACKEND_HPC_POLL_INTERVAL": str(POLL),
            }
        if "kube" in names:
            run("bash", str(servers.REPO_ROOT / "scripts" / "staging-image.sh"), STAGING_IMAGE)
            fake = servers.start_kube_fake(root / "kube-fake")
            stack.callback(fake.stop)
            port = servers.free_port()
            settings |= {
                "MAO_API_PORT": str(port),
                "MAO_BACKEND_KUBE_KUBECONFIG": str(fake.kubeconfig),
                "MAO_BACKEND_KUBE_NAMESPACE": "mao-bench",
                "MAO_BACKEND_KUBE_STAGING_IMAGE": STAGING_IMAGE,
                "MAO_BACKEND_KUBE_STAGING_URL": f"http://127.0.0.1:{port}",
                "MAO_BACKEND_KUBE_POD_PIDS_LIMIT": PIDS,  # the fake kubelet's
                "MAO_BACKEND_KUBE_POLL_INTERVAL": "0.5",
            }
        yield settings, cluster


def measure(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, list[float]], list[str]]:
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = sorted(set(names) - set(KINDS))
    if unknown:
        raise SystemExit(f"--backends: unknown {unknown}; choose from {', '.join(KINDS)}")
    root = Path(tempfile.mkdtemp(prefix="mao-backends-pipeline-"))
    os.chmod(root, 0o755)
    loads = [f"{os.getloadavg()[0]:.1f}"]
    print(f"uptime at the start: {run('uptime').strip()}", flush=True)
    node_times: dict[str, list[float]] = {n: [] for n in names}
    direct_times: dict[str, list[float]] = {n: [] for n in names if n != "kube"}
    try:
        servers.ensure_docker(root / "dockerd")
        servers.build_busybox_image(IMAGE)
        with engines(root, names) as (settings, cluster), bench_node("backends-pipeline", orchestrator_env=settings) as node:
            api = node.api
            api.tool("bench-tool", IMAGE)
            for name in names:
                api.local_dataset(f"bench-{name}")
                steps = [
                    {"name": f"s{i}", "tool": "bench-tool", "output_dataset": f"bench-{name}", "backend": name,
                     "memory": MEMORY, "cmd": ["sh", "-c", SCRIPT]}
                    for i in range(args.steps)
                ]  # fmt: skip
                api.ok(api.post("/pipeline/init", {"name": f"bench-{name}", "steps": steps}))
            direct: dict[str, Callable[[], float]] = {
                "local": lambda: direct_local(root, args.steps),
                "cluster": lambda: direct_swarm(root, args.steps),
                "hpc": lambda: direct_slurm(root, args.steps, cluster) if cluster else 0.0,
            }
            for name in names:  # warm-up: images, first connections
                node_run(api, f"bench-{name}")
                if name in direct:
                    direct[name]()
            for round_ in range(args.rounds):
                for name in names:
                    sides = ["node", "direct"] if round_ % 2 == 0 else ["direct", "node"]
                    for side in sides:
                        if side == "node":
                            node_times[name].append(node_run(api, f"bench-{name}") / args.steps)
                        elif name in direct:
                            direct_times[name].append(direct[name]() / args.steps)
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(
                        f"{n} node {node_times[n][-1]:.2f} s/step"
                        + (f" direct {direct_times[n][-1]:.2f}" if n in direct_times else "")
                        for n in names
                    )
                    + f"; load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                loads.append(f"{os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"uptime at the end: {run('uptime').strip()}", flush=True)
    return node_times, direct_times, loads


DIRECT = {
    "local": "`docker run --rm`",
    "cluster": "`docker service create` (replicated-job), `service ps` polled, `service logs`, `service rm`",
    "hpc": "`sbatch` of `docker run --rm --init`, `squeue -j` polled, output file read",
    "kube": "none (a fake API: no engine to run it on directly)",
}


def report(args: argparse.Namespace, node: dict[str, list[float]], direct: dict[str, list[float]], loads: list[str]) -> str:
    lines = [
        "| backend | node s/step (median, min-max) | direct s/step (median, min-max) | node / direct | overhead s/step |",
        "|---|---|---|---|---|",
    ]
    for name, samples in node.items():
        mine = statistics.median(samples)
        cell = f"{mine:.2f} ({min(samples):.2f}-{max(samples):.2f})"
        if name in direct:
            theirs = statistics.median(direct[name])
            lines.append(
                f"| {name} ({KINDS[name]}) | {cell} | {theirs:.2f} ({min(direct[name]):.2f}-{max(direct[name]):.2f}) "
                f"| **{mine / theirs:.2f}** | {mine - theirs:+.2f} |"
            )
        else:
            lines.append(f"| {name} ({KINDS[name]}) | {cell} | - | - | - |")
    lines += [
        "",
        "Direct runs: " + "; ".join(f"{n}: {DIRECT[n]}" for n in node) + ".",
        "",
        f"{args.rounds} rounds of a {args.steps}-step pipeline per backend (after one warm-up each), node and "
        f"direct alternating; load average (1 min) at the start and after each round: {', '.join(loads)} "
        f"on {os.cpu_count()} cores (the machine is shared).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="local,cluster,hpc,kube")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    node, direct, loads = measure(args)
    command = (
        f".venv/bin/python bench/backends_pipeline.py --steps {args.steps} --rounds {args.rounds} "
        f"--backends {args.backends} --write"
    )
    title = "A pipeline's step on each backend through a node, against the engine used directly"
    publish(report(args, node, direct, loads), args.write, title, command)


if __name__ == "__main__":
    main()
