"""schemathesis over the live node's own OpenAPI document: for every operation, a bounded number of
generated requests, valid ones and invalid ones (schemathesis's strategies, driven by hypothesis).
No answer may be a 500, a traceback, or an error that is not the documented ``{"error", "message"}``;
the node may log no error meanwhile.

A 503 is not a failure: it is the documented answer while a backing service (etcd, a git remote, the
executor) is unreachable, and generated data reaches such states (a dataset registered with a master
that does not exist, then read). That is why this drives schemathesis's generation from Python
rather than its CLI, whose server-error check counts every 5xx.

Left out: adding or removing etcd members (a random member added to the session's one-member etcd
cluster would cost it its quorum; tests/integration/federation covers those routes).
"""

from __future__ import annotations

import json

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.integration.conftest import OPS_TOKEN, Node

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = 5  # per operation and mode: about a minute on 2 cores
# The staging upload's body is a tarball (PUT /staging/{attempt}/output): small ones and junk bytes.
schemathesis.openapi.media_type(
    "application/x-tar", st.one_of(st.binary(max_size=4096), st.just(b"\0" * 1024), st.just(b""))
)
LEFT_OUT = ("/federation/etcd-members",)


def check_answer(label: str, response: requests.Response) -> None:
    status, text = response.status_code, response.text
    assert "Traceback (most recent call last)" not in text, f"{label}: a traceback ({status})"
    assert status != 500 and (status < 500 or status == 503), f"{label}: {status} {text[:300]}"
    if status >= 400:
        body = json.loads(text)
        assert isinstance(body, dict) and isinstance(body.get("error"), str), f"{label}: {text[:300]}"
        assert isinstance(body.get("message"), str), f"{label}: {text[:300]}"


def test_schemathesis_finds_no_server_error(guarded_node: Node) -> None:
    url = guarded_node.service.url
    document = guarded_node.api.ok(guarded_node.api.get("/openapi.json"))
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {OPS_TOKEN}"
    before = len(guarded_node.service.log_text())
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(LEFT_OUT):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: schemathesis.Case) -> None:
                response = case.call(base_url=url, session=session, timeout=60, allow_redirects=False)
                check_answer(case.as_curl_command(), response)

            try:
                call()
            except Unsatisfiable:  # nothing to get wrong: an operation without parameters or body
                assert mode is GenerationMode.NEGATIVE
            tested += 1
    assert tested >= 2 * 38

    # The node's JSON lines: no error, and no traceback above DEBUG.
    lines = [
        json.loads(line)
        for line in guarded_node.service.log_text()[before:].splitlines()
        if line.startswith("{")
    ]
    bad = [
        line
        for line in lines
        if line["level"] in ("ERROR", "CRITICAL") or ("exc" in line and line["level"] != "DEBUG")
    ]
    assert bad == [], json.dumps(bad[:3], indent=1)[:6000]
