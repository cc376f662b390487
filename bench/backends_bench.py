"""How close does the swarm backend come to the same replicated jobs run by hand?

Level ``backend`` (the seam alone, no orchestrator): N one-second shards through ``SwarmBackend``
as the run engine drives it (submit, follow the log, wait, cancel; input and output staged through
the shared root and the output brought back), P at a time, against the same N replicated-job
services (the same service body, from ``swarm_service.service_body``) created by hand at the same
parallelism: P threads with the Docker SDK, each creating its service, polling its task every 0.1 s,
reading its log and removing the service and its container (moby#42789), nothing else. The two
alternate (--rounds), so noise and drift hit both alike. The figure is the ratio of wall times, hand /
backend (1.0: the backend costs nothing; target >= 0.85).

Then one attempt's overhead: a trivial container (``true``) through the backend, one at a time
(--single times), against the same container run on the local engine with the Docker SDK (create,
start, wait, remove): what choosing a swarm costs a short step.

The engine is this machine's Docker, made a single-node swarm on loopback for the run (and left as
found). --write appends the result to bench/README.md.

``--engine slurm`` measures the Slurm backend instead, against the same batch jobs submitted by hand
(bench/backends_slurm.py: a private single-node Slurm whose node declares --slurm-cpus CPUs).

    .venv/bin/python bench/backends_bench.py [--engine swarm|slurm] [--shards 200] [--parallel 8] [--sleep 1] [--rounds 2] [--single 20] [--slurm-cpus 8] [--write]

``--engine node`` (first) measures a level up, a pipeline through a node on every backend against each
engine used directly (bench/backends_pipeline.py, whose options follow).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
from harness import IMAGE, all_attempts, docker_scratch, one_attempt, publish

from orchestrator.executors.seam import ContainerSpec, Identity, InputData, Limits, OutputData
from orchestrator.executors.staging import StagedPaths
from orchestrator.executors.swarm import SwarmBackend, SwarmSettings
from orchestrator.executors.swarm_objects import SERVICE_NAME_LABEL
from orchestrator.executors.swarm_service import ServiceOptions, service_body
from tests import servers

APP = "/usr/src/app"
TOOL = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())
LIMITS = Limits(memory=64 * 1024**2, pids=128)
ENDED = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}


def engine_pids() -> list[int]:
    """dockerd and containerd: the engine's own CPU, which both sides spend."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(entry.path, "comm").read_text().strip() in ("dockerd", "containerd"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def cpu_seconds() -> tuple[float, float]:
    """(this process, the engine) CPU seconds so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    engine = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in engine_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            engine += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return own.ru_utime + own.ru_stime, engine


def script(sleep: float) -> list[str]:
    return ["sh", "-c", f"sleep {sleep:g}; cp {APP}/input/* {APP}/data/"]


def shard_spec(root: Path, instance: str, run: str, i: int, image_id: str, cmd: list[str]) -> ContainerSpec:
    base = root / run / str(i)
    (base / "in").mkdir(parents=True)
    (base / "out").mkdir()
    (base / "in" / f"{i}.txt").write_text(f"{i}\n")
    return ContainerSpec(
        identity=Identity(
            instance=instance, pipeline="bench", run=run, step="s", position=0, attempt=1, shard=i
        ),
        image=IMAGE,
        image_id=image_id,
        cmd=cmd,
        input=InputData(commit="0" * 40, folder=base / "in"),
        output=OutputData(folder=base / "out"),
        user=TOOL,
        limits=LIMITS,
        timeout=600,
    )


async def through_backend(
    args: argparse.Namespace, backend: SwarmBackend, root: Path, run: str, image_id: str
) -> float:
    specs = [shard_spec(root, "bench", run, i, image_id, script(args.sleep)) for i in range(args.shards)]
    return await all_attempts(backend, specs, args.parallel)


def by_hand(args: argparse.Namespace, root: Path, run: str, image_id: str) -> float:
    client = docker.from_env(timeout=120, max_pool_size=args.parallel + 4)
    specs = [shard_spec(root, "bench-hand", run, i, image_id, script(args.sleep)) for i in range(args.shards)]
    for spec in specs:
        for folder in (spec.input.folder, spec.output.folder):  # type: ignore[union-attr]
            os.chown(folder, *TOOL) if os.getuid() == 0 else None

    def one(spec: ContainerSpec) -> None:
        staged = StagedPaths(spec.output.folder.parent, spec.input.folder, spec.output.folder)  # type: ignore[union-attr]
        body = service_body(spec, image_id, staged, ServiceOptions())
        # The same body as the backend's, posted as the SDK posts its own (its typed helpers lack Pids).
        created = client.api._result(
            client.api._post_json(client.api._url("/services/create"), data=body), True
        )
        while True:
            tasks = client.api.tasks(filters={"service": created["ID"]})
            if tasks and tasks[0]["Status"]["State"] in ENDED:
                break
            time.sleep(0.1)
        b"".join(client.api.service_logs(created["ID"], stdout=True, stderr=True))
        client.api.remove_service(created["ID"])
        for container in client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"{SERVICE_NAME_LABEL}={spec.name}"}
        ):
            container.remove(force=True)

    started = time.monotonic()
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(one, specs))
    took = time.monotonic() - started
    client.close()
    return took


async def single_overhead(
    args: argparse.Namespace, backend: SwarmBackend, root: Path, image_id: str
) -> tuple[list[float], list[float]]:
    swarm, local = [], []
    client = docker.from_env(timeout=120)
    for i in range(args.single):
        spec = shard_spec(root, "bench", f"single{i}", 0, image_id, ["true"])
        started = time.monotonic()
        await one_attempt(backend, spec)
        swarm.append(time.monotonic() - started)

        def local_run() -> float:
            started = time.monotonic()
            container = client.containers.create(
                image_id,
                ["true"],
                user=f"{TOOL[0]}:{TOOL[1]}",
                cap_drop=["ALL"],
                pids_limit=128,
                mem_limit=LIMITS.memory,
            )
            container.start()
            container.wait()
            container.logs()
            container.remove(force=True)
            return time.monotonic() - started

        local.append(await asyncio.to_thread(local_run))
    client.close()
    return swarm, local


async def main_async(args: argparse.Namespace, root: Path, hold: servers.SwarmHold) -> dict[str, Any]:
    shared = root / "shared"
    shared.mkdir(mode=0o711)
    settings = SwarmSettings(
        shared_root=shared, accept_without_no_new_privileges=True, output_settle_seconds=0
    )
    backend = SwarmBackend("bench", settings)
    await backend.start()
    image_id = await backend.resolve_image(IMAGE)
    assert image_id is not None
    results: dict[str, Any] = {
        "backend": [],
        "hand": [],
        "backend_cpu": [],
        "hand_cpu": [],
        "settings": settings,
    }
    renewed = True
    try:
        for round_ in range(args.rounds):
            order = ["backend", "hand"] if round_ % 2 == 0 else ["hand", "backend"]
            for side in order:
                run = f"r{round_}{side[0]}"
                # Each side from an empty swarm store: Docker 20.10 keeps every finished job's task
                # record (moby#44312) and slows down as they pile up, which would favour whoever ran first.
                renewed = await asyncio.to_thread(servers.renew_swarm, hold) and renewed
                own, engine = cpu_seconds()
                if side == "backend":
                    took = await through_backend(args, backend, root, run, image_id)
                else:
                    took = await asyncio.to_thread(by_hand, args, root, run, image_id)
                own_after, engine_after = cpu_seconds()
                results[side].append(took)
                results[f"{side}_cpu"].append((own_after - own, engine_after - engine))
                print(
                    f"round {round_ + 1}: {side}: {took:.1f} s, CPU {own_after - own:.1f} s here, "
                    f"{engine_after - engine:.1f} s in dockerd+containerd, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                shutil.rmtree(root / run, ignore_errors=True)
        if args.single:
            await asyncio.to_thread(servers.renew_swarm, hold)
            results["single"] = await single_overhead(args, backend, root, image_id)
    finally:
        await backend.close()
    results["renewed"] = renewed
    return results


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    hand, backend = statistics.median(results["hand"]), statistics.median(results["backend"])
    pairs = [h / b for h, b in zip(results["hand"], results["backend"], strict=True)]
    ratio = statistics.median(pairs)
    settings: SwarmSettings = results["settings"]

    def cpu(side: str) -> str:
        own = statistics.median(c[0] for c in results[f"{side}_cpu"])
        engine = statistics.median(c[1] for c in results[f"{side}_cpu"])
        return f"{own:.1f} | {engine:.1f}"

    store = (
        "each side from a new swarm (an empty store)"
        if results["renewed"]
        else "one swarm throughout (shared with another session: not renewed, so later sides ran slower)"
    )
    lines = [
        "| | rounds | median s | min s | max s | CPU s here | CPU s engine |",
        "|---|---|---|---|---|---|---|",
        f"| swarm backend (submit, follow log, wait, cancel; shared-root staging) | {args.rounds} | {backend:.1f} "
        f"| {min(results['backend']):.1f} | {max(results['backend']):.1f} | {cpu('backend')} |",
        f"| by hand ({args.parallel} threads, same service bodies, Docker SDK, task polled every 0.1 s) "
        f"| {args.rounds} | {hand:.1f} | {min(results['hand']):.1f} | {max(results['hand']):.1f} | {cpu('hand')} |",
        "",
        f"Ratio of wall times, hand / backend, the median of the rounds' "
        f"({', '.join(f'{p:.2f}' for p in pairs)}): **{ratio:.3f}** "
        f"({'meets' if ratio >= 0.85 else 'BELOW'} the 0.85 target); {store}; "
        f"{args.shards} shards of {args.sleep:g} s, {args.parallel} at a time; backend POLL_INTERVAL "
        f"{settings.poll_interval:g} s, LOG_SETTLE_SECONDS {settings.log_settle_seconds:g}, OUTPUT_SETTLE_SECONDS "
        f"{settings.output_settle_seconds:g} (local disk); load average {os.getloadavg()[0]:.1f} at the end.",
    ]
    if "single" in results:
        swarm, local = results["single"]
        lines += [
            "",
            f"One attempt of `true`, one at a time ({args.single} times), median: swarm backend "
            f"**{statistics.median(swarm):.2f} s** (min {min(swarm):.2f}), local engine via the Docker SDK "
            f"**{statistics.median(local):.2f} s** (min {min(local):.2f}).",
        ]
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:3] == ["--engine", "node"]:  # the pipeline level: bench/backends_pipeline.py, its own options
        from backends_pipeline import main as main_node

        main_node(sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--engine", choices=("swarm", "slurm"), default="swarm")
    parser.add_argument("--slurm-cpus", type=int, default=8)
    args = parser.parse_args()
    if args.engine == "slurm":
        main_slurm(args)
        return
    with docker_scratch("mao-backends-bench-") as root, servers.single_node_swarm() as hold:
        results = asyncio.run(main_async(args, root, hold))
    command = (
        f".venv/bin/python bench/backends_bench.py --shards {args.shards} --parallel {args.parallel} "
        f"--sleep {args.sleep:g} --rounds {args.rounds} --single {args.single} --write"
    )
    publish(report(args, results), args.write, "Swarm backend against replicated jobs by hand", command)


def main_slurm(args: argparse.Namespace) -> None:
    from backends_slurm import report_slurm, slurm_results

    with docker_scratch("mao-backends-bench-") as root:
        image_id = docker.from_env().images.get(IMAGE).id

        def make_specs(run: str, instance: str) -> list[ContainerSpec]:
            return [shard_spec(root, instance, run, i, image_id, script(args.sleep)) for i in range(args.shards)]

        results = asyncio.run(slurm_results(args, root, make_specs, image_id))
    command = (
        f".venv/bin/python bench/backends_bench.py --engine slurm --shards {args.shards} --parallel "
        f"{args.parallel} --sleep {args.sleep:g} --rounds {args.rounds} --slurm-cpus {args.slurm_cpus} --write"
    )
    publish(report_slurm(args, results), args.write, "Slurm backend against the same batch jobs by hand", command)


if __name__ == "__main__":
    main()
