"""A step's strategy end to end (real executor, Docker, git, etcd), on SQLite and PostgreSQL: the main
failing ``open_after`` times makes the replacement active (later runs never pay for the main), a probe
after ``probe_every`` returns the step to its main, a main slower than ``degraded_when`` counts as
failing, an operator forces a tool and resets the watcher, the state survives a restart, /metrics and
the instance's log show it, maoctl with --json, and bad input is a JSON 400/404.

No waiting on the machine's speed: a phase that must not probe uses a probe_every of an hour, and the
pipeline is initialised again (the watcher's state stays: same tools) with a short one when a probe
is wanted; the degraded main sleeps longer than its bound whatever the machine."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.api import Api, assert_error, unique
from tests.ctl_helpers import maoctl
from tests.integration.conftest import OPS_TOKEN, Node
from tests.servers.process import wait_until

APP = "/usr/src/app"
HOUR = 3600


def init(api: Api, name: str, main: str, spare: str, out: str, *, main_ok: bool, **strategy: Any) -> None:
    # The main works only while MAIN_OK is 1; the spare always does. Each writes which tool it was.
    script = f'[ "$MAO_TOOL" != "{main}" ] || [ "$MAIN_OK" = 1 ] && echo "$MAO_TOOL $MAO_RUN_ID" > {APP}/data/by.txt'
    degraded = strategy.pop("degraded_when", None)
    step: dict[str, Any] = {
        "name": "write",
        "output_dataset": out,
        "cmd": ["sh", "-c", strategy.pop("script", script)],
        "env": {"MAIN_OK": "1" if main_ok else "0"},
        "strategy": {"main": main, "replacements": [spare], **strategy},
    }
    if degraded is not None:
        step["degraded_when"] = degraded
    api.ok(api.post("/pipeline/init", {"name": name, "steps": [step]}))


def tools_tried(run: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["tool"], a["status"]) for a in run["steps"][0]["attempts"]]


def state(api: Api, name: str) -> dict[str, Any]:
    return dict(api.ok(api.get(f"/pipeline/{name}"))["strategies"]["write"])


def active_gauge(api: Api, name: str, tool: str) -> str | None:
    text = api.get("/metrics").text
    prefix = f'mao_strategy_active{{pipeline="{name}",step="write",tool="{tool}"}} '
    return next((line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)), None)


def setup(api: Api) -> tuple[str, str, str, str]:
    name, main, spare, out = unique("strat"), unique("main"), unique("spare"), unique("out")
    api.tool(main)
    api.tool(spare)
    api.local_dataset(out)
    return name, main, spare, out


def test_a_failing_main_is_replaced_then_probed_back(node: Node) -> None:
    api = node.api
    name, main, spare, out = setup(api)
    init(api, name, main, spare, out, main_ok=False, open_after=2, probe_every=HOUR)
    fresh = state(api, name)
    assert fresh["active"] == main and fresh["forced"] is None
    assert [t["tool"] for t in fresh["tools"]] == [main, spare]

    for n in (1, 2):
        run = api.run(name)
        assert run["status"] == "succeeded", run
        assert tools_tried(run) == [(main, "failed"), (spare, "succeeded")]
        assert state(api, name)["tools"][0]["consecutive_failures"] == n
    now = state(api, name)
    assert now["active"] == spare and f"{main} failed in 2 consecutive runs" in now["reason"]
    assert now["tools"][0]["healthy"] is False and now["tools"][0]["abandoned_at"] is not None
    assert active_gauge(api, name, spare) == "1.0" and active_gauge(api, name, main) == "0.0"
    assert f"step write: active tool {main} -> {spare}" in node.service.log_text()

    # Later runs start with the replacement: the failing main is not paid for (no probe within the hour).
    run = api.run(name)
    assert tools_tried(run) == [(spare, "succeeded")]

    # The state is in the database: a restart keeps it.
    node.restart()
    assert state(api, name)["active"] == spare
    assert tools_tried(api.run(name)) == [(spare, "succeeded")]

    # The main works again and probes are due every half second: the next run probes it and stays.
    init(api, name, main, spare, out, main_ok=True, open_after=2, probe_every=0.5)
    assert state(api, name)["active"] == spare  # same tools: the watcher's state stays
    time.sleep(0.6)
    run = api.run(name)
    assert tools_tried(run) == [(main, "succeeded")]
    back = state(api, name)
    assert back["active"] == main and f"{main} succeeded again" in back["reason"]
    assert all(t["healthy"] and t["consecutive_failures"] == 0 for t in back["tools"])
    assert active_gauge(api, name, main) == "1.0"
    assert f"step write: active tool {spare} -> {main}" in node.service.log_text()


def test_a_failed_probe_falls_through_to_the_active_tool(api: Api) -> None:
    name, main, spare, out = setup(api)
    init(api, name, main, spare, out, main_ok=False, open_after=1, probe_every=0.5)
    assert tools_tried(api.run(name)) == [(main, "failed"), (spare, "succeeded")]
    assert state(api, name)["active"] == spare
    time.sleep(0.6)
    run = api.run(name)  # a probe: the main fails again, the run goes on with the spare
    assert run["status"] == "succeeded" and tools_tried(run) == [(main, "failed"), (spare, "succeeded")]
    probed = state(api, name)
    assert probed["active"] == spare and probed["tools"][0]["probed_at"] is not None


def test_a_main_slower_than_degraded_when_counts_as_failing(api: Api) -> None:
    name, main, spare, out = setup(api)
    # The main succeeds but sleeps 2 s, over the 1 s bound on any machine; the spare is quick.
    script = f'[ "$MAO_TOOL" != "{main}" ] || sleep 2; echo "$MAO_TOOL" > {APP}/data/by.txt'
    init(api, name, main, spare, out, main_ok=True, open_after=1, probe_every=HOUR,
         script=script, degraded_when={"duration_over": 1})  # fmt: skip
    run = api.run(name)
    assert run["status"] == "succeeded" and tools_tried(run) == [(main, "succeeded")]
    slow = state(api, name)
    assert slow["active"] == spare and f"{main} degraded in 1 consecutive runs" in slow["reason"]
    assert "over 1 s" in slow["reason"]
    assert tools_tried(api.run(name))[0][0] == spare


def test_a_main_whose_insight_is_below_the_bound_counts_as_failing(api: Api) -> None:
    name, main, spare, out = setup(api)
    script = (
        f'if [ "$MAO_TOOL" = "{main}" ]; then f1=0.5; else f1=0.9; fi; '
        f'echo "{{\\"f1\\": $f1, \\"run\\": \\"$MAO_RUN_ID\\"}}" > {APP}/data/insights.json'
    )
    init(api, name, main, spare, out, main_ok=True, open_after=1, probe_every=HOUR,
         script=script, degraded_when={"insight": "f1", "below": 0.8})  # fmt: skip
    run = api.run(name)
    assert run["status"] == "succeeded" and tools_tried(run) == [(main, "succeeded")], run
    poor = state(api, name)
    assert poor["active"] == spare and "insight f1 = 0.5, below 0.8" in poor["reason"]
    run = api.run(name)
    assert tools_tried(run) == [(spare, "succeeded")]
    assert state(api, name)["active"] == spare  # the spare's 0.9 is not below: it stays healthy


def test_an_operator_forces_a_tool_and_resets_the_watcher(node: Node) -> None:
    api = node.api
    name, main, spare, out = setup(api)
    init(api, name, main, spare, out, main_ok=True, open_after=1, probe_every=HOUR)
    forced = api.ok(api.post(f"/pipeline/{name}/strategy/write", {"force": spare}))
    assert (forced["pipeline"], forced["step"], forced["active"], forced["forced"]) == (
        name,
        "write",
        spare,
        spare,
    )
    assert forced["reason"].startswith("forced by")
    assert tools_tried(api.run(name)) == [(spare, "succeeded")]
    assert state(api, name)["forced"] == spare

    reset = json.loads(_ctl(api, "pipeline", "strategy", name, "write", "--reset"))
    assert (reset["active"], reset["forced"]) == (main, None) and reset["reason"].startswith(
        "watcher reset by"
    )
    assert tools_tried(api.run(name)) == [(main, "succeeded")]
    shown = json.loads(_ctl(api, "pipeline", "strategy", name, "write"))
    assert shown["active"] == main and [t["tool"] for t in shown["tools"]] == [main, spare]
    again = json.loads(_ctl(api, "pipeline", "strategy", name, "write", "--force", spare))
    assert again["forced"] == spare

    # Bad input: JSON errors with the right status, nothing changed.
    url = f"/pipeline/{name}/strategy/write"
    assert_error(api.post(url, {"force": unique("other")}), 400, "unknown_tool")
    assert_error(api.post(url, {"force": main, "reset": True}), 400)
    assert_error(api.post(url, {}), 400)
    assert_error(api.post(url, {"reset": True, "why": "x"}), 400)
    assert_error(api.post(url, {"reset": "yes"}), 400)
    assert_error(api.post(f"/pipeline/{name}/strategy/nope", {"reset": True}), 404, "unknown_step")
    assert_error(api.post(f"/pipeline/{unique('none')}/strategy/write", {"reset": True}), 404)
    assert state(api, name)["forced"] == spare


def test_strategies_are_checked_at_init(api: Api) -> None:
    name, main, spare, out = setup(api)
    step = {"name": "write", "output_dataset": out, "cmd": ["true"]}
    missing = unique("missing")
    body = {"name": name, "steps": [{**step, "strategy": {"main": main, "replacements": [spare, missing]}}]}
    error = assert_error(api.post("/pipeline/init", body), 400, "missing_registrations")
    assert error["errors"]["missing_tools"] == [missing]
    for bad in (
        {"main": main, "replacements": [spare], "open_after": 0},
        {"main": main, "replacements": [spare], "probe_every": 0},
        {"main": main, "replacements": [spare], "probe": 5},
        {"main": main, "replacements": [main]},
    ):
        assert_error(api.post("/pipeline/init", {"name": name, "steps": [{**step, "strategy": bad}]}), 400)
    plain = {"name": name, "steps": [{**step, "tool": main, "fallback_tool": spare}]}
    api.ok(api.post("/pipeline/init", plain))
    assert "strategies" not in api.ok(api.get(f"/pipeline/{name}"))
    assert_error(api.post(f"/pipeline/{name}/strategy/write", {"reset": True}), 400, "no_strategy")


def _ctl(api: Api, *args: str) -> str:
    result = maoctl(api.url, *args, "--json")
    assert result.exit_code == 0, result.output
    return str(result.stdout)


@pytest.mark.browser
def test_the_pipelines_list_and_the_console_show_the_active_tool(guarded_node: Node, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    api = guarded_node.api
    name, main, spare, out = setup(api)
    init(api, name, main, spare, out, main_ok=True, open_after=1, probe_every=HOUR)
    api.ok(api.post(f"/pipeline/{name}/strategy/write", {"force": spare}))
    listed = next(p for p in api.ok(api.get("/pipeline")) if p["name"] == name)
    assert listed["strategies"]["write"]["active"] == spare

    def present(css: str) -> Any:
        found = browser.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else None

    browser.get(guarded_node.service.url + "/ui/#/pipelines")
    wait_until(lambda: present("#token"), timeout=30, what="the sign-in form")
    browser.find_element(By.CSS_SELECTOR, "#token").send_keys(OPS_TOKEN, Keys.ENTER)
    note = f'article[data-pipeline="{name}"] span.strategy[data-active="{spare}"]'
    wait_until(lambda: present(note), timeout=30, what="the step's active tool")
    assert "active tool" in present(note).text and "(forced)" in present(note).text
