"""Running maoctl in tests: in-process through click's runner, or as a real process (``python maoctl.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from ctl.cli import cli
from tests import servers

REPO_ROOT = Path(__file__).resolve().parent.parent


# No token file of the person running the tests (~/.mao/data/api-token) may be found by accident.
NO_DATA_DIR = "/nonexistent/mao-tests-data"


def _token_env(url: str | None, env: dict[str, str] | None) -> dict[str, str]:
    """MAO_API_TOKEN of the test node at ``url`` (the harness knows every node's token), unless the
    test gives MAO_API_TOKEN itself ("" for none)."""
    token = servers.token_for(url) if url and "MAO_API_TOKEN" not in (env or {}) else None
    return {"MAO_API_TOKEN": token} if token else {}


def maoctl(url: str, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """``maoctl --url URL ARGS`` in-process, with the node's API token; asserts no exception escaped
    click (no traceback)."""
    # The caller's own MAO_URL / MAO_API_TOKEN / MAO_DATA_DIR must not leak into the test.
    full_env: dict[str, str | None] = {
        "MAO_URL": None,
        "MAO_API_TOKEN": None,
        "MAO_DATA_DIR": NO_DATA_DIR,
        **_token_env(url, env),
        **(env or {}),
    }
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
    """``python maoctl.py ARGS`` as the operator runs it (the worktree's packages first on sys.path),
    with the API token of the test node its ``--url`` or MAO_URL names (unless ``--token`` or a
    MAO_API_TOKEN of ``env`` is given)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAO_")}
    full_env["MAO_DATA_DIR"] = NO_DATA_DIR
    url = args[args.index("--url") + 1] if "--url" in args[:-1] else (env or {}).get("MAO_URL")
    if "--token" not in args:
        full_env.update(_token_env(url, env))
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "maoctl.py"), *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
