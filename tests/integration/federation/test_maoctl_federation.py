"""maoctl's federation commands against the live three-instance federation."""

from __future__ import annotations

import json
import time

from tests.api import unique
from tests.ctl_helpers import maoctl

from .conftest import Federation


def as_json(url: str, *args: str) -> object:
    result = maoctl(url, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_members_and_locks(federation: Federation) -> None:
    url = federation.a.service.url
    members = as_json(url, "federation", "members")
    assert isinstance(members, dict)
    assert {i["name"] for i in members["instances"]} == {"fed-a", "fed-b", "fed-c"}
    assert next(i for i in members["instances"] if i["name"] == "fed-c")["labels"] == {
        "role": "edge",
        "site": "c",
    }
    assert len(members["etcd"]) == 3 and all(m["healthy"] for m in members["etcd"])
    human = maoctl(url, "federation", "members")
    assert human.exit_code == 0 and all(name in human.stdout for name in ("fed-a", "fed-b", "fed-c"))
    assert isinstance(as_json(url, "lock", "list"), list)
    assert maoctl(url, "lock", "list").exit_code == 0


def test_federation_schedule_from_the_cli(federation: Federation) -> None:
    a = federation.a.api
    url = federation.a.service.url
    tool, data, pipeline = unique("tool"), unique("data"), unique("fedcli")
    a.tool(tool)
    a.local_dataset(data)
    step = {"name": "s", "tool": tool, "output_dataset": data, "cmd": ["true"]}
    a.ok(a.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    job = as_json(
        url,
        "pipeline",
        "run",
        "--name",
        pipeline,
        "--cron",
        "0 4 * * *",
        "--scope",
        "federation",
        "--label",
        "role=central",
    )
    assert isinstance(job, dict)
    assert job["scope"] == "federation" and job["placement"] == {"labels": {"role": "central"}}
    # Any instance lists and can stop it.
    b_url = federation.b.service.url
    assert job["job_id"] in {s["id"] for s in as_json(b_url, "tool", "list-scheduled")}  # type: ignore[union-attr]
    assert maoctl(b_url, "tool", "stop", "--id", job["job_id"], "--yes").exit_code == 0
    # fed-a learns of the deletion through its etcd watch: a moment later, not necessarily at once.
    deadline = time.monotonic() + 15
    while job["job_id"] in a.ok(a.get("/jobs")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job["job_id"] not in a.ok(a.get("/jobs"))
    a.ok(a.delete(f"/pipeline/{pipeline}"))


def test_add_and_remove_an_etcd_member_from_the_cli(federation: Federation) -> None:
    url = federation.a.service.url
    refused = maoctl(
        url, "federation", "add-member", "--name", "bad name", "--peer-url", "http://127.0.0.1:1"
    )
    assert refused.exit_code == 2 and "bad name" in refused.stderr  # refused by maoctl itself, as a bad flag
    deadline = time.monotonic() + 30
    while True:  # etcd refuses new members for a few seconds after one of its members restarted
        added = maoctl(
            url,
            "--json",
            "federation",
            "add-member",
            "--name",
            "cli-newcomer",
            "--peer-url",
            "http://127.0.0.1:1",
        )
        if (
            added.exit_code == 0
            or time.monotonic() > deadline
            or "unhealthy" not in added.stderr
        ):
            break
        time.sleep(1)
    assert added.exit_code == 0, added.output
    answer = json.loads(added.stdout)
    assert answer["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    assert "cli-newcomer=http://127.0.0.1:1" in answer["ETCD_INITIAL_CLUSTER"]
    # The newcomer never starts, so etcd knows it only by id until then.
    removed = maoctl(url, "federation", "remove-member", "--name", answer["member"]["id"], "--yes")
    assert removed.exit_code == 0, removed.output
    assert len(as_json(url, "federation", "members")["etcd"]) == 3  # type: ignore[index]
