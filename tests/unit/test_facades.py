"""API handlers reach the node only through their area's facade (api/facades.py), never the whole Node."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from aiohttp import web

from orchestrator.api import facades
from orchestrator.api.common import NODE
from orchestrator.app import create_app
from orchestrator.config import load_settings

API = Path(facades.__file__).parent
AREAS = [key for key in vars(facades).values() if isinstance(key, web.AppKey)]


def test_every_area_is_served_by_the_app(tmp_path: Path) -> None:
    settings = load_settings(
        {"MAO_EXECUTOR_TOKEN": "x" * 16, "MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1"}
    )
    app = create_app(settings)  # never started: nothing connects
    assert len(AREAS) >= 15
    for area in AREAS:
        assert app[area] is app[NODE]


@pytest.mark.parametrize("module", sorted(p.name for p in API.glob("*.py")), ids=str)
def test_no_handler_module_reaches_for_the_node(module: str) -> None:
    if module in ("common.py", "facades.py"):
        return
    tree = ast.parse((API / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = {alias.name for alias in node.names}
            assert not names & {"NODE", "Node", "node"}, (
                f"{module} imports {names & {'NODE', 'Node', 'node'}}"
            )
