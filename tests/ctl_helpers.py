"""Running maoctl in tests: in-process through click's runner, or as a real process (``python maoctl.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from ctl.cli import cli

REPO_ROOT = Path(__file__).resolve().parent.parent


def maoctl(url: str, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """``maoctl --url URL ARGS`` in-process; asserts no exception escaped click (no traceback)."""
    # The caller's own MAO_URL / MAO_API_TOKEN must not leak into the test.
    full_env: dict[str, str | None] = {"MAO_URL": None, "MAO_API_TOKEN": None, **(env or {})}
    result = CliRunner().invoke(cli, ["--url", url, *args], input=input, env=full_env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"maoctl {' '.join(args)} raised {result.exception!r}\n{result.output}"
        ) from result.exception
    assert "Traceback" not in result.output
    return result


def maoctl_process(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python maoctl.py ARGS`` as the operator runs it (the worktree's packages first on sys.path)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAO_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "maoctl.py"), *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
