"""The style and type checks run with the tests, so `./scripts/test.sh` (and CI) keeps them green."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff() -> None:
    done = run("ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy() -> None:
    done = run("mypy")  # files and options in pyproject.toml
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_strict_on_every_package() -> None:
    # Issue 19: `mypy --strict` clean on the orchestrator, the executor and the CLI, checked with the tests.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    assert {"orchestrator", "executor", "ctl"} <= set(config["files"])
