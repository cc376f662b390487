"""ctl/stack.py and ``maoctl instance up|down|status --dir``: the parts that need no running stack
(the stack itself is exercised by tests/integration/test_compose_deploy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctl import stack
from tests.ctl_helpers import maoctl


def test_a_forced_compose_that_does_not_work_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAO_COMPOSE", "no-such-compose-binary")
    with pytest.raises(stack.StackError, match="MAO_COMPOSE=no-such-compose-binary"):
        stack.compose_command()
    # The hint still gives a command to paste (v2's form) and the quoted directory.
    assert stack.start_hint(Path("/srv/my mao")) == "cd '/srv/my mao' && docker compose up -d"


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_commands_on_a_folder_without_an_install(tmp_path: Path, command: str) -> None:
    result = maoctl("http://127.0.0.1:9", "instance", command, "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert (
        f"{tmp_path} has no docker-compose.yaml" in result.stderr
        and "maoctl instance install" in result.stderr
    )
