"""Under load the instance's own database never loses a run (issue 18): 200 runs started at once on
one instance, each one step writing its own dataset, every one waited for by its own POST
/pipeline/run. Before, SQLite ended one or two of them ``failed`` with "database is locked"; now
writes wait their turn (one writer on SQLite, a queue for the pool on PostgreSQL). Both backends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.api import Api, unique
from tests.integration.conftest import Node

RUNS = 200
APP = "/usr/src/app"

pytestmark = pytest.mark.slow  # a few minutes on 2 shared cores: 200 containers, commits and merges


def test_200_runs_at_once_all_succeed(node: Node) -> None:
    api = node.api
    tool = unique("load-tool")
    api.tool(tool)
    names: list[str] = []

    def prepare(_: int) -> str:
        client = Api(api.url)
        data, pipeline = unique("load-data"), unique("load")
        client.local_dataset(data)
        step = {"name": "s", "tool": tool, "output_dataset": data, "cmd": ["sh", "-c", f"echo $MAO_RUN_ID > {APP}/data/run"]}  # fmt: skip
        client.ok(client.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
        return pipeline

    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(prepare, range(RUNS)))

    def run(pipeline: str) -> tuple[int, dict]:
        client = Api(api.url, timeout=1800)  # every POST waits for its run's end
        response = client.post("/pipeline/run", {"name": pipeline})
        return response.status_code, response.json()

    with ThreadPoolExecutor(RUNS) as pool:
        answers = list(pool.map(run, names))

    statuses = [status for status, _ in answers]
    assert statuses == [200] * RUNS, [a for a in answers if a[0] != 200][:3]
    failed = [
        (body["id"], body["status"], body.get("error"))
        for _, body in answers
        if body["status"] != "succeeded"
    ]
    assert not failed, failed[:5]
    for _, body in answers:
        assert body["steps"][0]["status"] == "succeeded" and body["ended_at"], body
