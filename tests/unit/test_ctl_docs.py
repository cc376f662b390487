"""docs/maoctl.md documents every maoctl command (in the manner of datasette's test_docs)."""

from __future__ import annotations

import click

from ctl.cli import cli
from tests.ctl_helpers import REPO_ROOT


def command_paths(group: click.Group, prefix: str = "maoctl") -> list[str]:
    paths = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            paths += command_paths(command, f"{prefix} {name}")
        else:
            paths.append(f"{prefix} {name}")
    return paths


def test_every_command_is_documented() -> None:
    docs = (REPO_ROOT / "docs" / "maoctl.md").read_text()
    paths = command_paths(cli)
    assert len(paths) >= 23
    undocumented = [path for path in paths if path not in docs]
    assert not undocumented, f"add these to docs/maoctl.md: {undocumented}"


def test_every_install_flag_is_documented() -> None:
    docs = (REPO_ROOT / "docs" / "maoctl.md").read_text()
    install = cli.commands["instance"].commands["install"]  # type: ignore[attr-defined]
    flags = [opt for param in install.params for opt in param.opts if opt.startswith("--") and "_" not in opt]
    missing = [flag for flag in flags if flag not in docs and flag not in ("--directory", "--help")]
    assert not missing, f"add these install flags to docs/maoctl.md: {missing}"
