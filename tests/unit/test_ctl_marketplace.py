"""The marketplace: the shipped example is valid; broken or unreachable marketplaces say what is wrong."""

from __future__ import annotations

import functools
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ctl.marketplace import DEFAULT_FOLDER, Marketplace, MarketplaceError
from orchestrator.domain.pipeline import Pipeline, Tool
from tests.ctl_helpers import maoctl, maoctl_process


def test_the_shipped_marketplace_is_valid_for_the_orchestrator() -> None:
    market = Marketplace(str(DEFAULT_FOLDER))
    assert [f["name"] for f in market.federations] == ["mao-demo"]
    for tool in market.tools:
        Tool.model_validate(tool)
    for pipeline in market.pipelines:
        Pipeline.model_validate(
            {**pipeline, "steps": [{**s, "private_env": {"API_TOKEN": "x"}} for s in pipeline["steps"]]}
        )
    assert market.tool("demo-tool")["image"] == "mao-demo-tool:latest"
    assert market.pipeline("nope") is None


@contextmanager
def served(folder: Path) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/market"
    finally:
        server.shutdown()
        server.server_close()


def test_a_marketplace_over_http(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_FOLDER, tmp_path / "market")
    with served(tmp_path) as url:
        market = Marketplace(url + "/")
        assert [t["name"] for t in market.tools] == ["demo-tool"]
        (tmp_path / "market" / "pipelines.json").unlink()
        with pytest.raises(
            MarketplaceError, match=r"cannot fetch marketplace file http://.*/market/pipelines.json: HTTP 404"
        ):
            _ = market.pipelines


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("tools.json", "[{", "tools.json is not valid JSON: Expecting property name"),
        ("tools.json", '{"name": "x"}', "tools.json must hold a JSON list, not dict"),
        (
            "tools.json",
            '[{"name": "../x", "image": "i"}]',
            "tools.json: entry 1 ('../x'): invalid tool name '../x'",
        ),
        ("tools.json", '[{"name": "x"}]', "entry 1 ('x'): image is missing"),
        (
            "tools.json",
            '[{"name": "x", "image": "i"}, {"name": "x", "image": "j"}]',
            "entry 2 ('x'): its name is used by an earlier entry too",
        ),
        (
            "federations.json",
            '[{"name": "f", "contacts": "a@b"}]',
            "contacts must be a list of e-mail addresses",
        ),
        ("pipelines.json", '[{"name": "p", "steps": []}]', "steps must be a non-empty list"),
        (
            "pipelines.json",
            '[{"name": "p", "steps": [{"name": "s", "tool": "t"}]}]',
            "step 1: output dataset must be a string",
        ),
        (
            "pipelines.json",
            '[{"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "d", "cmd": "ls"}]}]',
            "step 1: cmd must be a list",
        ),
        ("pipelines.json", "[3]", "entry 1: not a JSON object"),
    ],
)
def test_malformed_files_name_the_file_and_entry(
    tmp_path: Path, filename: str, content: str, message: str
) -> None:
    shutil.copytree(DEFAULT_FOLDER, tmp_path, dirs_exist_ok=True)
    (tmp_path / filename).write_text(content)
    market = Marketplace(str(tmp_path))
    with pytest.raises(MarketplaceError) as caught:
        _ = getattr(market, filename.removesuffix(".json"))
    assert message in caught.value.message and str(tmp_path / filename) in caught.value.message


def test_unreachable_marketplaces_are_one_line(tmp_path: Path) -> None:
    assert (
        "no marketplace at /nonexistent"
        in maoctl(
            "http://127.0.0.1:9", "marketplace", "show", env={"MAO_MARKETPLACE": "/nonexistent/market"}
        ).stderr
    )
    (tmp_path / "tools.json").write_text("[]")
    missing = maoctl("http://127.0.0.1:9", "marketplace", "show", env={"MAO_MARKETPLACE": str(tmp_path)})
    assert missing.exit_code == 1 and "the marketplace has no federations.json" in missing.stderr
    done = maoctl_process("marketplace", "show", env={"MAO_MARKETPLACE": "http://127.0.0.1:9/market"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: cannot fetch marketplace file http://127.0.0.1:9/market/federations.json: ConnectionError "
        "(check MAO_MARKETPLACE and the network)"
    ]


def test_marketplace_show(tmp_path: Path) -> None:
    human = maoctl("http://127.0.0.1:9", "marketplace", "show", env={"MAO_MARKETPLACE": str(DEFAULT_FOLDER)})
    assert (
        human.exit_code == 0
        and "operator@mao-demo.example.org" in human.stdout
        and "demo-private" in human.stdout
    )
    as_json = json.loads(maoctl("http://127.0.0.1:9", "--json", "marketplace", "show").stdout)
    assert {t["name"] for t in as_json["tools"]} == {"demo-tool"}
