"""Whatever is in etcd, no route answers 500 and no watch wedges (issue 18, "etcd cannot be wedged").

hypothesis generates values (JSON of every type, nested up to thousands of levels, up to 1.4 MiB,
bytes that are not JSON or not UTF-8, and records shaped like each kind MAO writes with fields of the
wrong type or out of range) and puts one under every prefix an instance reads: registrations,
members, locks, schedules and their ticks and catch-ups, ground-truth advances, trigger fires, raw
entries and insights, audits, their answers and results. After each example every route that reads
them answers; after all of them, each of the instance's watches still does its work: a federation
schedule created afterwards is armed, a real ground-truth advance fires its data trigger, an audit
is answered and decided, a raw entry reaches git.

Its own etcd and orchestrator (module-scoped), so that nothing of this reaches the other tests.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aetcd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.federation import keys
from tests import gitutil, servers
from tests.api import Api

from .conftest import orchestrator_env

APP = "/usr/src/app"
RAW_DATASET = "fuzz-raw"
# Fixed names (this etcd is the module's own), so that the generated keys hit them too.
TOOL, DATA, DOWN, UPSTREAM, DOWNSTREAM = "fuzz-tool", "fuzz-data", "fuzz-down", "fuzz-up", "fuzz-downstream"


class Fuzzed:
    def __init__(self, etcd: servers.EtcdServer, service: servers.ServiceProcess) -> None:
        self.etcd = etcd
        self.service = service
        self.api = Api(service.url, service.token)
        self.saved: dict[str, bytes] = {}  # the registrations as registered, to put back at the end


@pytest.fixture(scope="module")
def fuzzed(servers_tmp: Path, executor, busybox_image) -> Iterator[Fuzzed]:
    etcd = servers.start_etcd(servers_tmp / "fuzz-etcd", name="fuzz-etcd")
    env = orchestrator_env(
        "fuzz-node",
        servers_tmp / "fuzz-node",
        etcd.endpoint,
        executor,
        MAO_RAW_DATASET=RAW_DATASET,
        MAO_RAW_BATCH_SECONDS="1",
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="fuzz-node")
    node = Fuzzed(etcd, service)
    api = node.api
    try:
        api.tool(TOOL)
        api.local_dataset(DATA)
        api.local_dataset(DOWN)
        api.local_dataset(RAW_DATASET)
        script = f'echo "$MAO_RUN_ID" > {APP}/data/x.txt'
        up = {"name": "s", "tool": TOOL, "output_dataset": DATA, "cmd": ["sh", "-c", script]}
        api.ok(api.post("/pipeline/init", {"name": UPSTREAM, "steps": [up]}))
        down = {
            "name": "s",
            "tool": TOOL,
            "input_dataset": DATA,
            "output_dataset": DOWN,
            "cmd": ["sh", "-c", f"cp {APP}/input/x.txt {APP}/data/y.txt"],
        }
        api.ok(api.post("/pipeline/init", {"name": DOWNSTREAM, "steps": [down]}))
        api.ok(api.post("/pipeline/run", {"name": DOWNSTREAM, "trigger": {"dataset": DATA}}))
        node.saved = asyncio.run(read_raw(etcd, [keys.tool(TOOL), keys.dataset(DATA), keys.dataset(DOWN)]))
        yield node
    finally:
        service.stop()
        etcd.destroy()


async def read_raw(etcd: servers.EtcdServer, wanted: list[str]) -> dict[str, bytes]:
    async with aetcd.Client(etcd.host, etcd.client_port, timeout=30) as client:
        return {key: (await client.get(key.encode())).value for key in wanted}


async def restore(etcd: servers.EtcdServer, saved: dict[str, bytes]) -> None:
    """What an operator restores after an attack: the registrations as registered, no stray locks."""
    async with aetcd.Client(etcd.host, etcd.client_port, timeout=30) as client:
        for key, value in saved.items():
            await client.put(key.encode(), value)
        await client.delete_prefix(keys.LOCKS.encode())


# -- what a hostile member can put into etcd ----------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)


def deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


FIELDS = {
    "tool": ["name", "image", "owner", "revision", "signed_by", "signed_at", "certificate", "signature"],
    "dataset": ["name", "master", "nodes", "owner", "revision", "signed_by"],
    "pipeline": ["name", "steps", "instances", "owner", "revision", "signed_by"],
    "member": ["name", "api_url", "version", "labels", "started_at", "signed_by"],
    "lock": ["instance", "purpose", "acquired_at", "lease"],
    "schedule": [
        "id",
        "pipeline",
        "cron",
        "timezone",
        "placement",
        "overlap",
        "catchup",
        "catchup_window",
        "priority",
        "trigger",
        "created_by",
        "created_at",
    ],  # fmt: skip
    "tick": ["outcome", "instance", "run_id", "reason", "run_status", "recorded_at"],
    "advance": ["commit", "instance", "pipeline", "run", "merged_at"],
    "audit": ["id", "dataset", "file", "auditor", "wait", "deadline", "created_at", "signed_by"],
    "answer": ["instance", "branch", "commit", "sha256", "size", "content", "content_base64", "fetch"],
    "raw": ["value", "written_at", "instance", "by", "mac"],
}
# Values that get past a type check and test the bounds.
edgy = st.sampled_from(
    [
        10**30,
        -(10**30),
        2**63,
        -1,
        0,
        1e308,
        "",
        "fuzz-node",
        "x" * 5000,
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00+00:00",
        "9999-12-31T23:59:59+00:00",
        "* * * * *",
        "a" * 32,
        "ab" * 20,
        {"dataset": "x"},
        {"labels": {"a": "b"}},
        [],
        {},
        True,
    ]  # fmt: skip
)


def shaped(kind: str) -> st.SearchStrategy[bytes]:
    fields = FIELDS[kind]
    return st.dictionaries(st.sampled_from(fields), json_values | edgy, max_size=len(fields)).map(
        lambda value: json.dumps(value).encode()
    )


def values(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        shaped(kind),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.tuples(st.integers(90, 3000), st.sampled_from(["list", "dict"])).map(lambda t: deep(*t)),
        st.integers(1, 1400).map(lambda kib: json.dumps({"name": "x", "image": "x" * (kib * 1024)}).encode()),
        st.sampled_from([b'{"a": NaN}', b'"\\ud800"', b"{'repr': 1}", b"\xff\xfe", b"1" * 5000, b""]),
    )


segments = st.sampled_from(
    ["fz", "a.b", "..", "x/y", "é", "-x", " ", "a" * 200, "%2F", "fuzz-node", TOOL, DATA, UPSTREAM]
) | st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)
hex32 = st.uuids().map(lambda u: u.hex)
PREFIXES = {
    "tool": lambda s, _h: keys.TOOLS + s,
    "dataset": lambda s, _h: keys.DATASETS + s,
    "pipeline": lambda s, _h: keys.PIPELINES + s,
    "member": lambda s, _h: keys.MEMBERS + s,
    "lock": lambda s, _h: keys.LOCKS + "datasets/" + s,
    "schedule": lambda s, h: keys.SCHEDULES + (h if len(s) % 2 else s),
    "tick": lambda s, h: f"{keys.TICKS}{h}/{s}",
    "advance": lambda s, _h: keys.GROUND_TRUTH + s,
    "audit": lambda s, h: keys.AUDITS + (h if len(s) % 2 else s),
    "answer": lambda s, h: f"{keys.AUDIT_ANSWERS}{h}/{s}/{s}",
    "raw": lambda s, _h: keys.RAW + s,
}
EXTRA_KEYS = {  # readers outside the list above; their values are any of the generated ones
    "catchup": lambda s, h: keys.CATCHUPS + h,
    "fire": lambda s, h: f"{keys.TRIGGER_FIRES}{h}/{s}",
    "insight": lambda s, _h: keys.INSIGHTS + s,
    "result": lambda s, h: keys.AUDIT_RESULTS + h,
}

examples = st.fixed_dictionaries(
    {kind: st.tuples(segments, hex32, values(kind), st.booleans()) for kind in PREFIXES}
    | {kind: st.tuples(segments, hex32, values("tick"), st.booleans()) for kind in EXTRA_KEYS}
)


async def put_all(etcd: servers.EtcdServer, example: dict[str, tuple[str, str, bytes, bool]]) -> list[str]:
    written = []
    async with aetcd.Client(etcd.host, etcd.client_port, timeout=30) as client:
        lease = await client.lease(300)
        for kind, (segment, hex_id, value, on_lease) in example.items():
            key = {**PREFIXES, **EXTRA_KEYS}[kind](segment, hex_id)
            await client.put(key.encode(), value, lease=lease if on_lease else None)
            written.append(key)
    return written


def routes(example: dict[str, tuple[str, str, bytes, bool]]) -> list[tuple[str, str, Any]]:
    """Every route that reads what was written (a path segment that is no name: a 400, never more)."""
    found: list[tuple[str, str, Any]] = [
        ("GET", path, None)
        for path in (
            "/registry/tools",
            "/registry/datasets",
            "/registry/pipelines",
            "/federation/members",
            "/federation/schedules",
            "/locks",
            "/jobs",
            "/schedules",
            "/health",
            "/metrics",
            "/runs",
            "/queue",
            f"/pipeline/{DOWNSTREAM}/pins",
            f"/registry/datasets/{DATA}/history",
        )  # fmt: skip
    ]
    for kind in ("tool", "dataset", "pipeline"):
        name = quote(example[kind][0], safe="")
        found += [
            ("GET", f"/registry/{kind}s/{name}", None),
            ("GET", f"/registry/{kind}s/{name}/owner", None),
        ]
    for kind in ("audit", "result"):
        found.append(("GET", f"/audits/{example[kind][1]}", None))
    found += [
        ("POST", "/read", {"key": "raw/" + example["raw"][0]}),
        ("POST", "/read", {"key": example["insight"][0]}),
        ("POST", "/inspect", {"key": "raw"}),
        ("POST", "/inspect", {"key": "insights"}),
        ("POST", f"/pipeline/{DOWNSTREAM}/accept", {"dry_run": True}),
        ("POST", f"/registry/tools/{TOOL}/accept", {"dry_run": True}),
    ]
    return found


FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible, never flaky
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@FUZZ
@given(example=examples)
def test_no_route_answers_500_whatever_etcd_holds(fuzzed: Fuzzed, example: dict) -> None:
    asyncio.run(put_all(fuzzed.etcd, example))
    for method, path, body in routes(example):
        response = fuzzed.api.get(path) if method == "GET" else fuzzed.api.post(path, body)
        assert response.status_code < 500 or response.status_code in (502, 503), (
            method, path, response.status_code, response.text[:500],
        )  # fmt: skip
        assert "Traceback" not in response.text
        if path != "/metrics":
            response.json()  # JSON, whatever etcd held (a raw entry may be any JSON value, null too)
        if response.status_code >= 400:
            assert set(response.json()) >= {"error", "message"}, (path, response.text[:200])


def test_no_watch_is_wedged_after_the_fuzz(fuzzed: Fuzzed) -> None:
    """Runs after the examples (same module, defined after them): every watch still does its work."""
    api = fuzzed.api
    asyncio.run(restore(fuzzed.etcd, fuzzed.saved))
    # The schedules watch: a federation schedule created now is armed.
    job = api.ok(api.post("/pipeline/run", {"name": UPSTREAM, "cron": "0 0 1 1 *", "scope": "federation"}))
    servers.wait_until(
        lambda: job["job_id"] in api.ok(api.get("/jobs")), timeout=60, what="the schedule armed"
    )
    api.ok(api.delete(f"/jobs/{job['job_id']}"))
    # The advances watch: a real merge fires the data trigger (and no fuzzed advance ever did).
    merged = api.run(UPSTREAM)
    assert merged["status"] == "succeeded", merged
    commit = merged["steps"][0]["merge_commit"]

    def triggered() -> list[dict]:
        return [r for r in api.ok(api.get("/runs", pipeline=DOWNSTREAM)) if r["trigger"] == "dataset"]

    servers.wait_until(
        lambda: any(r["trigger_commit"] == commit for r in triggered()), timeout=60, what="the trigger"
    )
    assert {r["trigger_commit"] for r in triggered()} == {commit}
    # The audits watch: an audit started now is answered and decided.
    audit = api.ok(api.post("/audits", {"dataset": DATA, "file": "x.txt", "wait": 5}))

    def decided() -> dict | None:
        found = api.ok(api.get(f"/audits/{audit['id']}"))
        return found if found["status"] == "decided" else None

    result = servers.wait_until(decided, timeout=90, what="the audit decided")
    assert result["outcome"] == "winner" and len(result["candidates"]) == 1, result
    # The raw listener's watch: an entry written now reaches git.
    key = f"raw/after-fuzz/{uuid.uuid4().hex[:8]}"
    api.ok(api.post("/write", {"key": key, "value": {"ok": True}}))
    master = api.ok(api.get("/registry/datasets/" + RAW_DATASET))["master"]

    def committed() -> bool:
        return any(
            key.removeprefix("raw/") in line
            for line in gitutil.git(master, "ls-tree", "-r", "--name-only", "ground-truth").splitlines()
        )

    servers.wait_until(committed, timeout=60, what="the raw entry in git")
    assert "Traceback" not in fuzzed.service.log_text()
