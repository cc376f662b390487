"""maoctl against a live orchestrator (real etcd, executor, Docker, git): every command, --json, and
every error path (orchestrator down, HTTP errors, bad flags, a missing token), never a traceback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.api import unique
from tests.ctl_helpers import maoctl, maoctl_process

from .conftest import orchestrator_env


@pytest.fixture
def url(sqlite_node) -> str:
    return sqlite_node.service.url


def ok(url: str, *args: str, input: str | None = None) -> str:
    result = maoctl(url, *args, input=input)
    assert result.exit_code == 0, f"maoctl {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.stdout


def as_json(url: str, *args: str, input: str | None = None):
    return json.loads(ok(url, "--json", *args, input=input))


def add_tool_and_local_dataset(url: str, tool: str, data: str) -> None:
    """What most tests here need first, done the way an operator would: through maoctl."""
    ok(url, "tool", "add", "--name", tool, "--image", "busybox:latest")
    ok(
        url,
        "dataset",
        "add",
        "--name",
        data,
        "--git-url",
        as_json(url, "repo", "add", "--name", data)["path"],
    )


def test_tools_round_trip_with_both_flag_spellings(url: str, sqlite_node) -> None:
    name = unique("tool")
    added = as_json(
        url,
        "tool",
        "add",
        "--name",
        name,
        "--image",
        "busybox:latest",
        "--author",
        "me",
        "--data_repo",
        "d",
        "--code-repo",
        "c",
        "--artefact",
        "a",
    )
    assert added == {
        "name": name,
        "image": "busybox:latest",
        "author": "me",
        "data_repo": "d",
        "code_repo": "c",
        "artefact": "a",
        "description": "",
    }
    assert as_json(url, "tool", "get", "--name", name) == sqlite_node.api.ok(
        sqlite_node.api.get(f"/registry/tools/{name}")
    )
    assert name in [t["name"] for t in as_json(url, "tool", "get")]
    assert name in ok(url, "tool", "get") and f"Registered tool {name}" in ok(
        url, "tool", "add", "--name", name, "--image", "busybox:latest"
    )

    declined = maoctl(url, "tool", "remove", "--name", name, input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.stderr
    assert as_json(url, "tool", "get", "--name", name)["name"] == name
    assert f"Removed tool {name}" in ok(url, "tool", "remove", "--name", name, input="y\n")
    gone = maoctl(url, "tool", "get", "--name", name)
    assert gone.exit_code == 1 and gone.stderr.strip() == f"Error: tool '{name}' is not registered"


def test_datasets_and_repos(url: str) -> None:
    name = unique("ds")
    created = as_json(url, "repo", "add", "--name", name)
    assert created["created"] is True and Path(created["path"]).is_dir()
    assert "Already there" in ok(url, "repo", "add", "--name", name)
    assert as_json(url, "dataset", "add", "--name", name, "--git_url", created["path"]) == {
        "name": name,
        "master": created["path"],
        "nodes": [],
    }
    assert as_json(url, "dataset", "get", "--name", name)["master"] == created["path"]
    assert name in ok(url, "dataset", "get")
    assert as_json(url, "dataset", "remove", "--name", name, "--yes") == {"name": name, "deleted": True}


def wait_for_end(url: str, run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = as_json(url, "pipeline", "run-show", "--id", run_id)
        if run["status"] in ("succeeded", "failed"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not end within {timeout} s")


def write_pipeline(tmp_path: Path, name: str, tool: str, dataset: str, script: str) -> Path:
    step = {
        "name": "work",
        "tool": tool,
        "input_dataset": None,
        "output_dataset": dataset,
        "env": {"API_KEY": "{{ MAO_PRIVATE_VARIABLE }}", "GREETING": "hello"},
        "cmd": ["sh", "-c", script],
        "docker_socket": False,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "description": "from a file", "steps": [step]}))
    return path


def test_pipeline_from_file_runs_and_shows_its_history(url: str, tmp_path: Path, sqlite_node) -> None:
    tool, data, name = unique("tool"), unique("data"), unique("pipe")
    secret = "s3cr3t-" + unique("v")
    ok(url, "tool", "add", "--name", tool, "--image", "busybox:latest")
    path = write_pipeline(
        tmp_path, name, tool, data, 'echo "$GREETING key=$API_KEY" | tee /usr/src/app/data/out.txt'
    )

    missing = maoctl(url, "pipeline", "add", "--file", str(path), input=f"{secret}\n")
    assert missing.exit_code == 1 and f"datasets not registered: {data}" in missing.stderr
    assert "maoctl dataset add" in missing.stderr

    ok(
        url,
        "dataset",
        "add",
        "--name",
        data,
        "--git-url",
        as_json(url, "repo", "add", "--name", data)["path"],
    )
    added = maoctl(url, "pipeline", "add", "--file", str(path), input=f"{secret}\n")
    assert added.exit_code == 0, added.output
    assert f"Initialised pipeline {name}" in added.stdout and secret not in added.output

    shown = as_json(url, "pipeline", "get", "--name", name)
    assert shown["steps"][0]["env"]["API_KEY"] == "{{ MAO_PRIVATE_VARIABLE }}"
    assert name in [p["name"] for p in as_json(url, "pipeline", "get")]
    assert name in as_json(url, "pipeline", "get", "--federation")
    assert sqlite_node.name in as_json(url, "pipeline", "get", "--federation", "--name", name)["instances"]

    run = maoctl(url, "pipeline", "run", "--name", name)
    assert run.exit_code == 0, run.output
    assert "succeeded" in run.stdout and "hello key=***" in run.stdout
    run_json = as_json(url, "pipeline", "run", "--name", name)
    assert run_json["status"] == "succeeded" and run_json["steps"][0]["exit_code"] == 0

    runs = as_json(url, "pipeline", "runs", "--name", name, "--limit", "5")
    assert [r["id"] for r in runs][:1] == [run_json["id"]] and len(runs) == 2
    assert as_json(url, "pipeline", "runs", "--name", name, "--status", "failed") == []
    details = ok(url, "pipeline", "run-show", "--id", run_json["id"])
    step = run_json["steps"][0]
    for text in (
        run_json["id"],
        "succeeded",
        step["output_commit"][:12],
        step["merge_commit"][:12],
        "log of step work",
        "hello key=***",
    ):
        assert text in details
    assert as_json(url, "pipeline", "run-show", "--id", run_json["id"]) == sqlite_node.api.ok(
        sqlite_node.api.get(f"/runs/{run_json['id']}")
    )
    for output in (shown, run_json, runs, details, ok(url, "pipeline", "get", "--name", name)):
        assert secret not in str(output)

    started = as_json(url, "pipeline", "run", "--name", name, "--no-wait")
    assert wait_for_end(url, started["id"])["status"] == "succeeded"


def test_failed_run_exits_1_and_no_wait(url: str, tmp_path: Path) -> None:
    tool, data, name = unique("tool"), unique("data"), unique("fails")
    add_tool_and_local_dataset(url, tool, data)
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: {name}\nsteps:\n  - name: broken\n    tool: {tool}\n    output_dataset: {data}\n"
        "    cmd: [sh, -c, 'echo oops >&2; exit 3']\n"
    )
    ok(url, "pipeline", "add", "--file", str(path))
    failed = maoctl(url, "pipeline", "run", "--name", name)
    assert failed.exit_code == 1 and "failed" in failed.stdout and "oops" in failed.stdout
    assert "exited with code 3" in failed.stdout
    started = maoctl(url, "pipeline", "run", "--name", name, "--no-wait")
    assert (
        started.exit_code == 0
        and "Started run" in started.stdout
        and "maoctl pipeline run-show --id" in started.stdout
    )
    run_id = started.stdout.split()[2]
    assert wait_for_end(url, run_id)["status"] == "failed"
    assert f"Deleted pipeline {name}" in ok(url, "pipeline", "remove", "--name", name, "--yes")
    assert name not in [p["name"] for p in as_json(url, "pipeline", "get")]


def test_pipeline_add_asks_step_by_step(url: str) -> None:
    tool, data, name = unique("tool"), unique("data"), unique("asked")
    add_tool_and_local_dataset(url, tool, data)
    answers = [
        "../bad",  # refused by the name rule, asked again
        name,
        "asked interactively",
        "first",
        tool,
        "",
        data,
        "sh -c 'echo \"$WHO\" > /usr/src/app/data/who'",
        "WHO=maoctl",
        "",
        "n",
        "y",  # add another step
        "second",
        tool,
        data,
        data,
        "",
        "",
        "n",
        "n",
    ]
    result = maoctl(url, "pipeline", "add", input="\n".join(answers) + "\n")
    assert result.exit_code == 0, result.output
    assert "invalid pipeline name '../bad'" in result.output
    shown = as_json(url, "pipeline", "get", "--name", name)
    first, second = shown["steps"]
    assert first["cmd"] == ["sh", "-c", 'echo "$WHO" > /usr/src/app/data/who'] and first["env"] == {
        "WHO": "maoctl"
    }
    assert first["input_dataset"] is None and second["input_dataset"] == data and second["cmd"] is None
    assert as_json(url, "pipeline", "run", "--name", name)["status"] == "succeeded"


def test_schedules_list_and_stop(url: str, tmp_path: Path) -> None:
    tool, data, name = unique("tool"), unique("data"), unique("cron")
    add_tool_and_local_dataset(url, tool, data)
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps({"name": name, "steps": [{"name": "s", "tool": tool, "output_dataset": data}]})
    )
    ok(url, "pipeline", "add", "--file", str(path))

    bad = maoctl(url, "pipeline", "run", "--name", name, "--cron", "61 * * * *")
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: invalid cron expression '61 * * * *'")
    job = as_json(
        url, "pipeline", "run", "--name", name, "--cron", "30 4 * * 1", "--timezone", "Europe/Zurich"
    )
    assert job["pipeline"] == name and job["timezone"] == "Europe/Zurich"
    scheduled = {s["id"]: s for s in as_json(url, "tool", "list-scheduled")}
    assert scheduled[job["job_id"]]["cron"] == "30 4 * * 1" and scheduled[job["job_id"]]["next_run_time"]
    assert job["job_id"] in ok(url, "tool", "list-scheduled")
    assert maoctl(url, "tool", "stop", "--id", job["job_id"], input="n\n").exit_code == 1
    assert f"Stopped scheduled job {job['job_id']}" in ok(url, "tool", "stop", "--id", job["job_id"], "--yes")
    assert job["job_id"] not in {s["id"] for s in as_json(url, "tool", "list-scheduled")}
    again = maoctl(url, "tool", "stop", "--id", job["job_id"], "--yes")
    assert again.exit_code == 1 and again.stderr.startswith(f"Error: no scheduled job {job['job_id']!r}")
    assert len(again.stderr.strip().splitlines()) == 1


def test_instance_status(url: str, sqlite_node) -> None:
    human = ok(url, "instance", "status")
    assert sqlite_node.name in human and "ok" in human
    status = as_json(url, "instance", "status")
    backends = status.pop("backends")  # each backend's health (GET /health): the default one here
    assert status == {
        "status": "ok",
        "instance": sqlite_node.name,
        "etcd": "ok",
        "database": "ok",
        "executor": "ok",
    }
    assert list(backends) == ["local"] and backends["local"]["details"]["docker"] == "ok", backends


def test_errors_are_one_line_and_exit_codes_are_right(url: str) -> None:
    port = servers.free_port()
    down = maoctl_process("--url", f"http://127.0.0.1:{port}", "tool", "get")
    assert down.returncode == 1 and down.stdout == ""
    assert down.stderr.strip().splitlines() == [
        f"Error: cannot reach the orchestrator at http://127.0.0.1:{port} (connection refused); is the orchestrator "
        "running? start it with `mao-orchestrator` (or `maoctl instance up --dir DIR` for an installed instance), or check --url / MAO_URL"
    ]
    down_json = maoctl_process("--json", "instance", "status", env={"MAO_URL": f"http://127.0.0.1:{port}"})
    assert down_json.returncode == 1 and down_json.stdout == "" and "cannot reach" in down_json.stderr

    not_found = maoctl_process("--url", url, "pipeline", "run-show", "--id", "0123abcd")
    assert (
        not_found.returncode == 1 and not_found.stderr.strip() == "Error: no run '0123abcd' on this instance"
    )
    bad_request = maoctl(
        url, "pipeline", "run", "--name", unique("nope"), "--cron", "* * * * *", "--timezone", "Mars/Olympus"
    )
    assert bad_request.exit_code == 1 and "Mars/Olympus" in bad_request.stderr and bad_request.stdout == ""

    for args in (
        ["tool", "get", "--bogus"],
        ["tool", "add", "--name", "x"],
        ["tool", "add", "--name", "-rf", "--image", "busybox"],
        ["pipeline", "runs", "--status", "weird"],
        ["pipeline", "runs", "--limit", "0"],
        ["pipeline", "run", "--name", "x", "--no-wait", "--cron", "* * * * *"],
        ["--url", "nope", "tool", "get"],
        ["nonsense"],
    ):
        done = maoctl_process("--url", url, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Usage:" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def guarded(servers_tmp: Path, etcd, executor) -> Iterator[servers.ServiceProcess]:
    env = orchestrator_env(
        "node-ctl-guarded",
        servers_tmp / "node-ctl-guarded",
        etcd.endpoint,
        executor,
        MAO_API_TOKEN="ctl-t0ken",
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-ctl-guarded")
    yield service
    service.stop()


def test_the_api_token(guarded: servers.ServiceProcess) -> None:
    refused = maoctl_process("--url", guarded.url, "tool", "get", env={"MAO_API_TOKEN": ""})
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: missing or wrong API token") and "--token" in refused.stderr
    assert maoctl_process("--url", guarded.url, "--token", "ctl-t0ken", "tool", "get").returncode == 0
    with_env = maoctl_process(
        "--json", "instance", "status", env={"MAO_URL": guarded.url, "MAO_API_TOKEN": "ctl-t0ken"}
    )
    assert with_env.returncode == 0 and json.loads(with_env.stdout)["instance"] == "node-ctl-guarded"
