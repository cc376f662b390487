"""What the work-folder checks of docs/security.md#tools cost per step, against a bare directory walk.

Builds a folder of N small files in D directories, then times (median of R rounds):
- baseline: ``os.walk`` + ``os.lstat`` of every entry (what any inspection must at least do);
- hand over: ``hygiene.hand_over`` to uid 65534 (before the container; root only);
- inspect: ``hygiene.inspect_folder`` re-owning to the caller (after the container).

    .venv/bin/python bench/hygiene_bench.py [N] [D] [R]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.datasets.hygiene import hand_over, inspect_folder  # noqa: E402


def build(root: Path, files: int, dirs: int) -> None:
    for d in range(dirs):
        (root / f"d{d}").mkdir()
    for i in range(files):
        (root / f"d{i % dirs}" / f"f{i}.txt").write_bytes(b"x" * 100)


def baseline(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.lstat(os.path.join(dirpath, name))


def timed(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def main() -> None:
    files, dirs, rounds = (int(a) for a in (sys.argv[1:] + ["10000", "100", "5"][len(sys.argv) - 1 :])[:3])
    own = (os.getuid(), os.getgid())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, files, dirs)
        base = timed(lambda: baseline(root), rounds)
        print(f"{files} files in {dirs} dirs, median of {rounds}")
        print(f"  walk + lstat (baseline)  {base:8.1f} ms")
        if own[0] == 0:
            print(
                f"  hand_over to 65534       {timed(lambda: hand_over(root, (65534, 65534)), rounds):8.1f} ms"
            )

            # Alternate so each inspection has something to re-own, as after a real step.
            def cycle() -> None:
                hand_over(root, (65534, 65534))
                inspect_folder(root, own)

            both = timed(cycle, rounds)
            print(f"  hand_over + inspect      {both:8.1f} ms")
        print(f"  inspect (nothing to fix) {timed(lambda: inspect_folder(root, None), rounds):8.1f} ms")


if __name__ == "__main__":
    main()
