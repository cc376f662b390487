"""What does watching a thousand Kubernetes attempts cost the orchestrator's side?

Level ``backend`` (the seam and the fetch routes, no run engine): N attempts submitted to the fake
Kubernetes API (tests/servers/kube_fake.py, a separate process in ``--simulate`` mode: its kubelet
runs no containers but plays the staging containers' HTTP against the staging routes, and a tool
that prints one line) and watched to their end as the run engine drives a backend (submit, follow
the log, wait, cancel), P at a time. Measured in this process, which holds everything that is the
orchestrator's: the backend (one watch of Jobs and one of pods for all attempts, a log copy per
attempt) and the staging routes (serving each input tarball, unpacking each upload). The fake's CPU
is its own process's and is not counted. Reported: CPU seconds per attempt (user + system, every
thread of this process), wall time, and the attempts' ends.

    .venv/bin/python bench/backends_kubernetes.py [--attempts 1000] [--parallel 200] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import publish

from orchestrator.executors.fetch import FetchExchange
from orchestrator.executors.kubernetes import KubernetesBackend, KubernetesSettings
from orchestrator.executors.seam import ContainerSpec, EndKind, Identity, InputData, Limits, OutputData
from tests import servers

TOOL = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def attempt_spec(root: Path, i: int) -> ContainerSpec:
    base = root / "attempts" / str(i)
    (base / "in").mkdir(parents=True)
    (base / "out").mkdir()
    (base / "in" / "in.txt").write_text(f"{i}\n")
    return ContainerSpec(
        identity=Identity(instance="bench", pipeline="p", run="bench", step="s", position=0, attempt=1, shard=i),
        image="busybox",
        cmd=["true"],
        input=InputData(commit="0" * 40, folder=base / "in"),
        output=OutputData(folder=base / "out"),
        user=TOOL,
        limits=Limits(memory=64 * 1024**2),
        timeout=600,
        start_timeout=600,
    )


async def one(backend: KubernetesBackend, spec: ContainerSpec, gate: asyncio.Semaphore) -> EndKind:
    async with gate:
        handle = await backend.submit(spec)
        follow = asyncio.create_task(_drain(backend.logs(handle, follow=True)))
        end = await backend.wait(handle, spec)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(follow, 30)
        await backend.cancel(handle)
        return end.kind


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def main_async(args: argparse.Namespace, root: Path, fake: servers.KubeFake, staging: Any) -> dict[str, Any]:
    settings = KubernetesSettings(
        kubeconfig=fake.kubeconfig,
        namespace="bench",
        staging_image="mao-staging:bench",
        staging_url=staging.url,
        cancel_grace_seconds=0,
    )
    backend = KubernetesBackend("bench", settings, exchange=FetchExchange(staging.root), state_dir=root / "state")
    await backend.start()
    specs = await asyncio.to_thread(lambda: [attempt_spec(root, i) for i in range(args.attempts)])
    gate = asyncio.Semaphore(args.parallel)
    try:
        before, started = cpu_seconds(), time.monotonic()
        kinds = await asyncio.gather(*(one(backend, spec, gate) for spec in specs))
        wall, cpu = time.monotonic() - started, cpu_seconds() - before
    finally:
        await backend.close()
    return {"wall": wall, "cpu": cpu, "ends": Counter(k.value for k in kinds)}


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    per = results["cpu"] / args.attempts * 1000
    ends = ", ".join(f"{kind} {count}" for kind, count in sorted(results["ends"].items()))
    return "\n".join(
        [
            "| attempts | at a time | wall s | orchestrator-side CPU s | CPU ms per attempt | ends |",
            "|---|---|---|---|---|---|",
            f"| {args.attempts} | {args.parallel} | {results['wall']:.1f} | {results['cpu']:.1f} | **{per:.1f}** | {ends} |",
            "",
            "Each attempt: a Job and a Secret created, the input tarball written and served, its pod "
            "watched (one watch of Jobs and one of pods for all), its log followed and copied, the upload "
            "unpacked and brought back, the Job deleted and checked gone. CPU of this process only (backend "
            f"and staging routes); the fake API ran in its own process. Load average {os.getloadavg()[0]:.1f} at the end.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=200)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mao-kube-bench-"))
    fake = servers.start_kube_fake(root / "fake", simulate=True)
    (root / "staging").mkdir(mode=0o700)
    staging = servers.start_staging_server(root / "staging")
    try:
        results = asyncio.run(main_async(args, root, fake, staging))
    finally:
        staging.stop()
        fake.stop()
        shutil.rmtree(root, ignore_errors=True)
    command = f".venv/bin/python bench/backends_kubernetes.py --attempts {args.attempts} --parallel {args.parallel} --write"
    title = "Kubernetes backend on the fake API: the orchestrator's side of 1,000 attempts"
    publish(report(args, results), args.write, title, command)


if __name__ == "__main__":
    main()
