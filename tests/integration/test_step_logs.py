"""Full step logs against real servers (Docker, etcd, git): a 5,000-line log served whole, a followed
log that streams while its step runs and closes when it ends, secrets masked in both, fan-out
shards addressed by ``shard=``, retention removing a run's log, and ``maoctl pipeline logs``."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from orchestrator.retention import Retention
from orchestrator.runs.step_logs import StepLogs
from orchestrator.store import Store
from orchestrator.store.retention import existing_runs
from tests import servers
from tests.api import Api, assert_error, one_step_pipeline, unique
from tests.ctl_helpers import NO_DATA_DIR, REPO_ROOT, maoctl
from tests.integration.conftest import Node, orchestrator_env

SECRET = "s3cr3t-token-9f8e7d"
FIVE_THOUSAND = 'i=1; while [ $i -le 5000 ]; do echo "line $i of the step"; i=$((i+1)); done'


@pytest.fixture(scope="module")
def log_node(servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Node]:
    """A node of its own: the retention test deletes every run it has."""
    name = "node-logs"
    data_dir = servers_tmp / name
    env = orchestrator_env(name, data_dir, etcd.endpoint, executor)
    node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), data_dir)
    yield node
    node.service.stop()


def stored_logs(node: Node, run_id: str) -> list[Path]:
    return sorted((node.data_dir / "logs" / run_id).glob("*.log.gz"))


def test_a_5000_line_log_is_served_whole(log_node: Node) -> None:
    api = log_node.api
    pipeline, _ = one_step_pipeline(api, FIVE_THOUSAND)
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    response = api.get(f"/runs/{run['id']}/log", step="only")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["X-Mao-Attempt"] == "1"
    assert response.text.splitlines() == [f"line {i} of the step" for i in range(1, 5001)]
    # The tail in the run record is still the last 200 lines.
    assert run["steps"][0]["log_tail"].splitlines()[-1] == "line 5000 of the step"
    # Kept gzipped, private: 0700 folders, 0600 file.
    [path] = stored_logs(log_node, run["id"])
    assert gzip.decompress(path.read_bytes()).decode() == response.text
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.parent.parent.stat().st_mode & 0o777 == 0o700


def test_bad_log_requests_are_json_errors(log_node: Node) -> None:
    api = log_node.api
    pipeline, _ = one_step_pipeline(api, "echo one")
    run_id = api.run(pipeline)["id"]
    assert_error(api.get("/runs/0123abcd/log", step="only"), 404)
    assert_error(api.get(f"/runs/{run_id}/log", step="nope"), 404, "unknown_step")
    assert_error(api.get(f"/runs/{run_id}/log", step="only", attempt="2"), 404)
    assert_error(api.get(f"/runs/{run_id}/log", step="only", shard="1"), 404)
    assert_error(api.get(f"/runs/{run_id}/log"), 400)
    assert_error(api.get(f"/runs/{run_id}/log", step="only", attempt="x"), 400)
    assert_error(api.get(f"/runs/{run_id}/log", step="only", attempt="0"), 400)
    assert_error(api.get(f"/runs/{run_id}/log", step="only", follow="maybe"), 400)
    # Unknown query parameters are ignored, as on every route (docs/security.md#bad-input).
    assert api.get(f"/runs/{run_id}/log", step="only", unknown="1").status_code == 200
    assert_error(api.get(f"/runs/{run_id}/log", step="../x"), 400)
    assert_error(requests.get(f"{log_node.service.url}/runs/{run_id}/log?step=only", timeout=30), 401)


def test_a_followed_log_streams_while_the_step_runs_and_secrets_stay_masked(log_node: Node) -> None:
    api = log_node.api
    # The step prints, splits its secret across two writes (two chunks of the stream), then waits
    # for the test to drop a file into its output folder before it prints its last line.
    cmd = (
        'echo "before 1"; echo "key=$API_KEY"; printf "half=s3cr3t-"; sleep 0.3; printf "token-9f8e7d\\n"; '
        'echo "before 2"; until [ -e /usr/src/app/data/go ]; do sleep 0.2; done; echo "after"; rm /usr/src/app/data/go'
    )
    pipeline, dataset = one_step_pipeline(
        api,
        cmd,
        env={"API_KEY": "{{ MAO_PRIVATE_VARIABLE }}"},
        private_env={"API_KEY": SECRET},
        timeout=300,
    )
    run_id = api.ok(api.post("/pipeline/run", {"name": pipeline, "wait": False}))["id"]
    wait_for(lambda: attempts(api, run_id) and attempts(api, run_id)[0]["status"] == "running")

    url = f"{log_node.service.url}/runs/{run_id}/log"
    headers = {"Authorization": f"Bearer {log_node.service.token}"}
    with requests.get(
        url, params={"step": "only", "follow": "1"}, headers=headers, stream=True, timeout=120
    ) as got:
        assert got.status_code == 200 and got.headers["X-Mao-Attempt-Status"] == "running"
        received = b""
        chunks = got.iter_content(chunk_size=None)
        while b"before 2\n" not in received:
            received += next(chunks)
        # Lines arrived while the step is still running (it waits for us).
        assert attempts(api, run_id)[0]["status"] == "running"
        workdir = log_node.data_dir / "work" / dataset / f"only-{log_node.name}"
        (workdir / "go").write_text("")
        for chunk in chunks:  # ends when the attempt ends
            received += chunk
    text = received.decode()
    assert text == "before 1\nkey=***\nhalf=***\nbefore 2\nafter\n", text
    wait_for(lambda: api.get(f"/runs/{run_id}").json()["status"] == "succeeded")
    stored = api.get(f"/runs/{run_id}/log", step="only")
    assert stored.text == text and SECRET not in stored.text
    [path] = stored_logs(log_node, run_id)
    assert SECRET.encode() not in gzip.decompress(path.read_bytes())


def test_each_shard_of_a_fan_out_step_has_its_log(log_node: Node) -> None:
    api = log_node.api
    tool, raw, out, pipeline = unique("tool"), unique("raw"), unique("fanout"), unique("fanlog")
    api.tool(tool)
    api.local_dataset(raw)
    api.local_dataset(out)
    make = "echo A > /usr/src/app/data/a.txt; echo B > /usr/src/app/data/b.txt"
    steps = [
        {"name": "make", "tool": tool, "output_dataset": raw, "cmd": ["sh", "-c", make]},
        {
            "name": "fan",
            "tool": tool,
            "input_dataset": raw,
            "output_dataset": out,
            "cmd": ["sh", "-c", 'echo "shard $MAO_SHARD of $MAO_SHARD_COUNT"; ls /usr/src/app/input'],
            "fan_out": {"glob": "*.txt", "split_size": 1, "max_parallel": 2},
        },
    ]
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps}))
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    assert_error(api.get(f"/runs/{run['id']}/log", step="fan"), 400, "shard_required")
    for shard, name in ((1, "a.txt"), (2, "b.txt")):
        text = api.get(f"/runs/{run['id']}/log", step="fan", shard=str(shard)).text
        assert text == f"shard {shard} of 2\n{name}\n"
    assert_error(api.get(f"/runs/{run['id']}/log", step="fan", shard="3"), 404)


def test_maoctl_pipeline_logs(log_node: Node) -> None:
    api = log_node.api
    pipeline, _ = one_step_pipeline(
        api, 'echo "from maoctl"; [ "$MAO_ATTEMPT" -ge 2 ]', retries=1, retry_delay=0.1
    )
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    url = log_node.service.url
    latest = maoctl(url, "pipeline", "logs", "--id", run["id"], "--step", "only")
    assert latest.exit_code == 0 and latest.stdout == "from maoctl\n"
    first = maoctl(url, "pipeline", "logs", "--id", run["id"], "--step", "only", "--attempt", "1")
    assert first.exit_code == 0 and first.stdout == "from maoctl\n"
    followed = maoctl(url, "pipeline", "logs", "--id", run["id"], "--step", "only", "--follow")
    assert followed.exit_code == 0 and followed.stdout == "from maoctl\n"
    missing = maoctl(url, "pipeline", "logs", "--id", run["id"], "--step", "only", "--attempt", "9")
    assert missing.exit_code == 1 and "no attempt 9" in missing.stderr
    unknown = maoctl(url, "pipeline", "logs", "--id", "0123abcd", "--step", "only")
    assert unknown.exit_code == 1 and "no run '0123abcd'" in unknown.stderr


def test_maoctl_never_passes_a_tools_control_sequences_to_the_terminal(log_node: Node) -> None:
    """A tool that prints a window title, a hyperlink, a screen clear, 8-bit CSI and a BEL: maoctl's
    log, its run view (log tail) and --raw into a pipe."""
    api = log_node.api
    # printf in busybox sh: \033 is ESC, \007 BEL, \302\233 the 8-bit CSI (U+009B in UTF-8).
    evil = r"printf '\033]0;pwned\007\033[31mred\033[0m \033]8;;http://evil.example\033\\link\033]8;;\033\\\n\033[2Jclear\302\233Hx\007end\r\n'"
    pipeline, _ = one_step_pipeline(api, evil)
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    url = log_node.service.url
    for args in ((), ("--follow",)):
        shown = maoctl(url, "pipeline", "logs", "--id", run["id"], "--step", "only", *args)
        assert shown.exit_code == 0
        assert shown.stdout == "red link\nclearx\\x07end\n", repr(shown.stdout)
    view = maoctl(url, "pipeline", "run-show", "--id", run["id"])
    assert view.exit_code == 0 and "red link" in view.stdout
    assert not re.search("[\x1b\x07\x9b]", view.stdout + view.stderr), repr(view.stdout)
    # --raw: the bytes as the tool wrote them, into a pipe (refused on a terminal).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAO_")}
    env.update({"MAO_DATA_DIR": NO_DATA_DIR, "MAO_API_TOKEN": log_node.service.token or ""})
    raw = subprocess.run(
        [sys.executable, str(REPO_ROOT / "maoctl.py"), "--url", url, "pipeline", "logs", "--id", run["id"],
         "--step", "only", "--raw"],
        cwd=REPO_ROOT, env=env, capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert raw.stdout.startswith(b"\x1b]0;pwned\x07\x1b[31mred") and b"\xc2\x9bHx\x07" in raw.stdout


def test_maoctl_pipeline_run_shows_plain_progress_when_piped(log_node: Node) -> None:
    """Piped (no terminal): one plain line per change of a step on stderr; stdout keeps the run
    summary it always had. The step waits for the test, so its running state is seen for sure."""
    api = log_node.api
    # The tool says it runs (a file in its folder) before it waits: its folder is prepared by then.
    data = "/usr/src/app/data"
    wait_cmd = f"touch {data}/started; until [ -e {data}/go ]; do sleep 0.2; done; rm {data}/go {data}/started"
    pipeline, dataset = one_step_pipeline(api, wait_cmd, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAO_")}
    env.update({"MAO_DATA_DIR": NO_DATA_DIR, "MAO_API_TOKEN": log_node.service.token or ""})
    command = [sys.executable, str(REPO_ROOT / "maoctl.py"), "--url", log_node.service.url]
    with subprocess.Popen(
        [*command, "pipeline", "run", "--name", pipeline],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None and process.stdout is not None
        assert process.stderr.readline().startswith(f"Running {pipeline}")
        # A poll may find the step running before its attempt is recorded (a line of its own): wait
        # for the attempt's line, and nothing else may come before it.
        before = []
        while (line := process.stderr.readline()) != "step only: running (attempt 1)\n":
            assert line == "step only: running\n", (before, line)
            before.append(line)
        # The attempt is recorded before its output folder is prepared: wait for the tool to run.
        workdir = log_node.data_dir / "work" / dataset / f"only-{log_node.name}"
        wait_for((workdir / "started").exists)
        (workdir / "go").write_text("")
        rest = process.stderr.read()
        summary = process.stdout.read()
        assert process.wait(timeout=120) == 0
    assert re.fullmatch(r"step only: succeeded in \d+\.\d s\n", rest), rest
    assert "succeeded" in summary and "only" in summary and "step only:" not in summary
    # --json: the run record alone on stdout, as before.
    quick, _ = one_step_pipeline(api, "echo quick")
    record = subprocess.run(
        [*command, "--json", "pipeline", "run", "--name", quick],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(record.stdout)["status"] == "succeeded" and "step only" not in record.stderr


def test_retention_removes_a_runs_log(log_node: Node) -> None:
    """The retention pass (as the node runs it hourly) on the node's own database and data dir,
    at a time when the run has grown old."""
    api = log_node.api
    pipeline, _ = one_step_pipeline(api, "echo kept for now")
    run_id = api.run(pipeline)["id"]
    assert api.get(f"/runs/{run_id}/log", step="only").status_code == 200  # waits for its keep
    assert stored_logs(log_node, run_id)

    async def clean() -> None:
        store = Store(f"sqlite+aiosqlite:///{log_node.data_dir / 'mao.db'}")
        await store.start()
        try:
            logs = StepLogs(log_node.data_dir, existing_runs=lambda ids: existing_runs(store, ids))
            retention = Retention(store, days=1, extras=[logs.forget])
            runs, _ = await retention.clean(now=datetime.now(UTC) + timedelta(days=2))
            assert runs >= 1
        finally:
            await store.close()

    asyncio.run(clean())
    assert not (log_node.data_dir / "logs" / run_id).exists()
    assert_error(api.get(f"/runs/{run_id}/log", step="only"), 404)


# -- helpers ---------------------------------------------------------------------------------------


def attempts(api: Api, run_id: str) -> list[dict[str, Any]]:
    run = api.get(f"/runs/{run_id}").json()
    return run["steps"][0]["attempts"]


def wait_for(condition: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_the_executor_keeps_the_head_and_tail_of_an_overlong_log(
    executor, busybox_image, tmp_path: Path
) -> None:
    """The executor's side alone: ``log_max_bytes`` bounds what it keeps (head, marker, tail),
    ``GET /logs/{container}`` serves it, ``DELETE`` forgets it."""
    name = f"mao-logs-test-{unique('c')}"
    # 40,000 numbered lines (about 430 KB) against a 64 KiB bound.
    script = 'i=1; while [ $i -le 40000 ]; do echo "row $i"; i=$((i+1)); done'
    body = {
        "image": busybox_image,
        "cmd": ["sh", "-c", script],
        "output_dir": str(tmp_path),
        "name": name,
        "log_max_bytes": 65536,
        "timeout": 300,
    }
    answer = executor.request("POST", "/run", json=body, headers=executor.headers, timeout=600)
    assert answer.status_code == 200 and answer.json()["exit_code"] == 0, answer.text
    got = executor.request("GET", f"/logs/{name}", headers=executor.headers)
    assert got.status_code == 200 and got.headers["Content-Type"].startswith("text/plain")
    head, marker, tail = re.split(r"\n(\[mao: \d+ bytes of output omitted here[^\]]*\])\n", got.text)
    lines = [f"row {i}" for i in range(1, 40001)]
    full = "\n".join(lines) + "\n"
    assert full.startswith(head) and full.endswith(tail)
    assert int(marker.split()[1]) == len(full) - len(head) - len(tail)
    assert (
        len(head) + len(tail) <= 65536 and head.startswith("row 1\nrow 2\n") and tail.endswith("row 40000\n")
    )
    assert head.endswith("\n") and tail.startswith("row ")  # whole lines on both sides
    gone = executor.request("DELETE", f"/logs/{name}", headers=executor.headers)
    assert gone.json() == {"deleted": True}
    assert_error(executor.request("GET", f"/logs/{name}", headers=executor.headers), 404)
    assert_error(executor.request("GET", f"/logs/{name}"), 401)
