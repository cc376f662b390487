"""The operator's view against a live node with a token: /metrics moving with a run, who may read it,
JSON log lines carrying run ids, the OpenAPI document, the static pages and a dataset's history."""

from __future__ import annotations

import json
import time

import requests
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.api import browser
from tests.api import Api, assert_error, one_step_pipeline, unique
from tests.integration.conftest import OPS_METRICS_TOKEN, Node

HELLO = "echo hello from the step"


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }



def test_metrics_move_with_a_run(guarded_node: Node) -> None:
    api = guarded_node.api
    pipeline, _ = one_step_pipeline(api, HELLO)
    scraper = Api(guarded_node.service.url, OPS_METRICS_TOKEN)
    before = metric_samples(scraper.get("/metrics").text)
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run

    response = scraper.get("/metrics")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    after = metric_samples(response.text)
    runs_key = (
        "mao_runs_total",
        frozenset({"pipeline": pipeline, "trigger": "manual", "status": "succeeded"}.items()),
    )
    assert before.get(runs_key, 0) == 0 and after[runs_key] == 1
    count_key = ("mao_run_duration_seconds_count", frozenset({"pipeline": pipeline}.items()))
    assert after[count_key] == 1
    step_key = ("mao_step_duration_seconds_count", frozenset({"pipeline": pipeline, "step": "only"}.items()))
    assert after[step_key] == 1
    attempts = ("mao_step_attempts_total", frozenset({"status": "succeeded", "backend": "local"}.items()))
    assert after[attempts] >= before.get(attempts, 0) + 1
    lock_wait = ("mao_ground_truth_lock_wait_seconds_count", frozenset())
    assert after[lock_wait] >= before.get(lock_wait, 0) + 1
    assert after[("mao_etcd_up", frozenset())] == 1
    assert after[("mao_members", frozenset())] >= 1
    assert ("mao_queue_depth", frozenset()) in after
    assert after[("mao_backend_up", frozenset({"backend": "local"}.items()))] == 1
    assert ("mao_backend_attempts_running", frozenset({"backend": "local"}.items())) in after
    # Bounded labels: no run id anywhere in the exposition.
    assert run["id"] not in response.text


def test_every_attempt_of_the_engine_is_counted(guarded_node: Node) -> None:
    api = guarded_node.api
    # Fails its first attempt, succeeds on the retry (the engine sets MAO_ATTEMPT).
    pipeline, _ = one_step_pipeline(api, '[ "$MAO_ATTEMPT" -ge 2 ]', retries=1, retry_delay=0.1)
    key = {
        s: ("mao_step_attempts_total", frozenset({"status": s, "backend": "local"}.items()))
        for s in ("failed", "succeeded")
    }
    before = metric_samples(api.get("/metrics").text)
    run = api.run(pipeline)
    assert run["status"] == "succeeded" and len(run["steps"][0]["attempts"]) == 2, run
    after = metric_samples(api.get("/metrics").text)
    for status in ("failed", "succeeded"):
        assert after[key[status]] >= before.get(key[status], 0) + 1, status


def test_gateway_writes_are_counted_by_outcome(guarded_node: Node) -> None:
    api = guarded_node.api
    api.ok(api.post("/write", {"key": unique("m"), "value": 1}))
    assert_error(api.post("/write", {"key": "insights/x", "value": 1}), 400, "invalid_key")
    samples = metric_samples(api.get("/metrics").text)
    assert samples[("mao_gateway_writes_total", frozenset({"outcome": "ok"}.items()))] >= 1
    assert samples[("mao_gateway_writes_total", frozenset({"outcome": "invalid_key"}.items()))] >= 1


def test_who_may_read_what(guarded_node: Node) -> None:
    url = guarded_node.service.url
    anonymous, scraper = Api(url, ""), Api(url, OPS_METRICS_TOKEN)  # "": no token at all
    assert_error(anonymous.get("/metrics"), 401, "unauthorized")
    assert_error(anonymous.get("/openapi.json"), 401, "unauthorized")
    assert_error(anonymous.get("/runs"), 401, "unauthorized")
    # The scraper's token reads /metrics and nothing else.
    assert scraper.get("/metrics").status_code == 200
    for path in ("/runs", "/openapi.json", "/health"):
        assert_error(scraper.get(path), 401, "unauthorized")
    assert_error(scraper.post("/pipeline/run", {"name": "x"}), 401)
    # The pages load without a token (they hold no data and ask for it); their data does not.
    for path, kind in (
        ("/ui/", "text/html"),
        *((f"/ui/{name}", kind) for name, kind in browser.FILES.items()),  # every file of the console
        ("/api/docs", "text/html"),
    ):
        page = anonymous.get(path)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith(kind), path
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        text = page.text.replace("http://www.w3.org/2000/svg", "")  # a namespace name, not a fetch
        assert "http://" not in text and "https://" not in text  # no CDN, nothing remote
    assert_error(anonymous.get("/ui/%2e%2e%2fapp.py"), 404)  # only the listed files, never a path
    assert_error(anonymous.get("/ui/nothing.js"), 404)
    redirect = requests.get(url + "/ui", allow_redirects=False, timeout=10)
    assert redirect.status_code == 302 and redirect.headers["Location"] == "/ui/"
    # trust-api's guards come before the public early return: the pages too refuse a foreign Host
    # (DNS rebinding) and another site's Origin.
    assert_error(requests.get(url + "/ui/", headers={"Host": "evil.example"}, timeout=10), 421)
    assert_error(requests.get(url + "/ui/", headers={"Origin": "http://evil.example"}, timeout=10), 403)
    # The metrics token is for GET /metrics only, whatever the method elsewhere.
    assert_error(scraper.post("/runs/0123abcd/cancel", {}), 401)


def test_json_log_lines_carry_the_run(guarded_node: Node) -> None:
    api = guarded_node.api
    run = api.run(one_step_pipeline(api, HELLO)[0])
    assert run["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while True:
        lines = [
            json.loads(line) for line in guarded_node.service.log_text().splitlines() if line.startswith("{")
        ]
        mine = [line for line in lines if line.get("run") == run["id"]]
        if any("succeeded" in line["message"] for line in mine) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert mine and all({"ts", "level", "logger", "message"} <= set(line) for line in mine)
    assert any("succeeded" in line["message"] for line in mine)
    # Lines logged by the engine for the step itself carry the step too.
    assert any(line.get("step") == "only" for line in mine), mine
    # Every line of the daemon is JSON (aiohttp's, APScheduler's ... included), none is plain text.
    log = guarded_node.service.log_text().splitlines()
    plain = [line for line in log if line and not line.startswith(("{", "=== "))]  # "=== ": the harness
    assert plain == []


def test_openapi_document_is_valid_and_complete(guarded_node: Node) -> None:
    api = guarded_node.api
    document = api.ok(api.get("/openapi.json"))
    validate(document)  # OpenAPI 3.1 (openapi-spec-validator picks the version from the document)
    assert document["openapi"].startswith("3.1")
    undocumented = [
        f"{method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method, op in methods.items()
        if op.get("x-undocumented")
    ]
    assert undocumented == []
    for path in ("/pipeline/run", "/runs", "/runs/{id}", "/metrics", "/openapi.json", "/ui/", "/jobs/{id}"):
        assert path in document["paths"], path
    run_body = document["paths"]["/pipeline/run"]["post"]["requestBody"]["content"]["application/json"]
    assert run_body["schema"] == {"$ref": "#/components/schemas/RunRequest"}
    assert "scope" in document["components"]["schemas"]["RunRequest"]["properties"]


def test_dataset_history_shows_provenance(guarded_node: Node) -> None:
    api = guarded_node.api
    pipeline, _ = one_step_pipeline(api, "date > /usr/src/app/data/when.txt")
    run = api.run(pipeline)
    dataset = run["steps"][0]["output_dataset"]
    history = api.ok(api.get(f"/registry/datasets/{dataset}/history", limit=5))
    assert history[0]["commit"] == run["steps"][0]["merge_commit"]
    assert history[0]["trailers"]["MAO-Run"] == run["id"]
    assert_error(api.get(f"/registry/datasets/{unique('none')}/history"), 404)
    assert_error(api.get(f"/registry/datasets/{dataset}/history", limit=0), 400)


def test_executor_metrics(executor, guarded_node: Node) -> None:
    """The session's executor (which guarded_node's runs went through) counts its runs by outcome."""
    assert executor.request("GET", "/metrics").status_code == 401
    guarded_node.api.run(one_step_pipeline(guarded_node.api, "exit 3")[0])
    response = executor.request("GET", "/metrics", headers=executor.headers)
    assert response.status_code == 200
    samples = metric_samples(response.text)
    assert samples[("mao_executor_runs_total", frozenset({"outcome": "failed"}.items()))] >= 1
    assert samples[("mao_executor_containers", frozenset())] >= 0
    assert samples[("mao_executor_run_duration_seconds_count", frozenset())] >= 1
    assert samples[("mao_executor_slots", frozenset())] >= 1
