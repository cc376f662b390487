"""The Slurm part of bench/backends_bench.py (``--engine slurm``): how close does the Slurm backend
come to the same batch jobs submitted by hand?

Level ``backend`` (the seam alone, no orchestrator): N one-second shards through ``SlurmBackend`` as
the run engine drives it (submit, follow the log, wait, cancel; input and output staged through the
shared root and the output brought back), P in flight, against the same N jobs (the same sbatch
arguments, from ``slurm_command.sbatch_arguments``, the same job script and container) submitted by
hand at the same parallelism: P threads, each running ``sbatch``, polling its job with ``squeue -j``
every POLL_INTERVAL, reading its output file and removing its files; nothing else (no staging: the
jobs bind the folders where they are). The two alternate (--rounds). The figure is the ratio of wall
times, hand / backend (target >= 0.85).

The cluster is a private single-node Slurm (tests/servers/slurm.py) whose node declares --slurm-cpus
CPUs (jobs mostly sleep: more CPUs than cores lets more of them run at once), running the containers
on this machine's Docker engine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import all_attempts

from orchestrator.executors.seam import ContainerSpec
from orchestrator.executors.slurm import SlurmBackend, SlurmSettings
from orchestrator.executors.slurm_answers import ENDED
from orchestrator.executors.slurm_command import env_file, run_arguments, sbatch_arguments
from orchestrator.executors.slurm_ends import SCRIPT
from orchestrator.executors.slurm_files import job_files, unlink, write_job_files
from tests import servers

POLL_INTERVAL = 0.25


async def through_backend(
    args: argparse.Namespace, backend: SlurmBackend, specs: list[ContainerSpec]
) -> float:
    return await all_attempts(backend, specs, args.parallel)


def by_hand(
    args: argparse.Namespace,
    cluster: servers.SlurmCluster,
    settings: SlurmSettings,
    specs: list[ContainerSpec],
) -> float:
    env = {**cluster.env(), "SLURM_TIME_FORMAT": "%s"}

    def one(spec: ContainerSpec) -> None:
        assert spec.input is not None
        files = job_files(settings.shared_root, spec.name)
        files.env.parent.mkdir()
        write_job_files(files, env_file(spec.env), spec.all_labels())
        image = str(spec.image_id)
        run = run_arguments(
            spec, settings, image=image, input_folder=spec.input.folder, output_folder=spec.output.folder,
            env=files.env, cpus=1,
        )  # fmt: skip
        args = sbatch_arguments(spec, settings, script=SCRIPT, files=files, run=run, image=image, cpus=1)
        done = subprocess.run(["sbatch", *args], env=env, capture_output=True, text=True, check=True)
        job = done.stdout.strip().split(";")[0]
        while True:
            state = subprocess.run(
                ["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"], env=env, capture_output=True, text=True
            ).stdout.strip()
            if state in ENDED:
                break
            time.sleep(POLL_INTERVAL)
        if state != "COMPLETED":
            raise RuntimeError(f"{spec.name}: job {job} {state}")
        files.out.read_bytes()
        unlink(files.out, files.err, files.env, files.labels)
        files.env.parent.rmdir()

    started = time.monotonic()
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(one, specs))
    took = time.monotonic() - started
    for spec in specs:
        assert (spec.output.folder / f"{spec.identity.shard}.txt").exists(), spec.name
    return took


async def slurm_results(
    args: argparse.Namespace, root: Path, make_specs: Any, image_id: str
) -> dict[str, Any]:
    """``make_specs(run, instance) -> list[ContainerSpec]`` (the swarm part's shards)."""
    cluster = servers.start_slurm(cpus=args.slurm_cpus)
    try:
        shared = root / "slurm-shared"
        shared.mkdir(mode=0o711)
        settings = SlurmSettings(
            shared_root=shared,
            slurm_conf=cluster.conf,
            slurm_bin=cluster.bin_dir,
            partition=cluster.partition,
            output_settle_seconds=0,
            poll_interval=POLL_INTERVAL,
        )
        backend = SlurmBackend("bench", settings)
        await backend.start()
        results: dict[str, Any] = {"backend": [], "hand": [], "settings": settings}
        try:
            for round_ in range(args.rounds):
                order = ["backend", "hand"] if round_ % 2 == 0 else ["hand", "backend"]
                for side in order:
                    run = f"s{round_}{side[0]}"
                    specs = make_specs(run, "bench" if side == "backend" else "bench-hand")
                    for spec in specs:  # the tool's uid writes the output where the job binds it by hand
                        if side == "hand":
                            shutil.chown(spec.output.folder, *spec.user)
                    if side == "backend":
                        took = await through_backend(args, backend, specs)
                    else:
                        took = await asyncio.to_thread(by_hand, args, cluster, settings, specs)
                    results[side].append(took)
                    print(f"slurm round {round_ + 1}: {side}: {took:.1f} s", flush=True)
                    shutil.rmtree(root / run, ignore_errors=True)
        finally:
            await backend.close()
        return results
    finally:
        cluster.stop()


def report_slurm(args: argparse.Namespace, results: dict[str, Any]) -> str:
    hand, backend = statistics.median(results["hand"]), statistics.median(results["backend"])
    ratio = hand / backend
    rounds = ", ".join(f"{h / b:.3f}" for h, b in zip(results["hand"], results["backend"], strict=True))
    settings: SlurmSettings = results["settings"]
    return "\n".join(
        [
            "| | rounds | median s | min s | max s |",
            "|---|---|---|---|---|",
            f"| slurm backend (submit, follow log, wait, cancel; shared-root staging) | {args.rounds} | {backend:.1f} | {min(results['backend']):.1f} | {max(results['backend']):.1f} |",
            f"| by hand ({args.parallel} threads, same sbatch arguments and job script, squeue -j every {POLL_INTERVAL:g} s) | {args.rounds} | {hand:.1f} | {min(results['hand']):.1f} | {max(results['hand']):.1f} |",
            "",
            f"Ratio of wall times, hand / backend: **{ratio:.3f}** ({'meets' if ratio >= 0.85 else 'BELOW'} the 0.85 target); "
            f"{args.shards} shards of {args.sleep:g} s, {args.parallel} in flight, on a private single-node Slurm whose "
            f"node declares {args.slurm_cpus} CPUs (one a job), containers through docker; backend POLL_INTERVAL "
            f"{settings.poll_interval:g} s, OUTPUT_SETTLE_SECONDS {settings.output_settle_seconds:g} (local disk). "
            f"Per-round ratios: {rounds}; load average {os.getloadavg()[0]:.1f} at the end.",
        ]
    )
