"""The console's pictures in a real headless Chromium, against a fresh instance holding a known set of
runs: the grid (cells and their state classes, filters, arrow keys), a run's timeline (attempts,
retries, shards, queue time; speculation drawn from a made-up run), lineage (nodes, edges, data
trigger, the federation-wide mark, a dataset's history), the tools, queue, backfills and schedules
pages and the run-duration charts.

Screenshots go to the session's temp dir; with ``MAO_UPDATE_SCREENSHOTS=1`` they replace
``docs/console-grid.png``, ``docs/console-timeline.png``, ``docs/console-lineage.png`` (the README
shows them) and ``docs/console-schedules.png``, ``docs/console-backfills.png`` and
``docs/console-version-diff.png`` (docs/operations.md).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests import servers
from tests.api import Api
from tests.integration.conftest import OPS_TOKEN, Node, chromium, orchestrator_env
from tests.servers.process import REPO_ROOT, wait_until

pytestmark = pytest.mark.browser

APP = "/usr/src/app"
ENDED = ("succeeded", "failed", "cancelled")


@dataclass
class Scenario:
    """Names and run ids of the known history (pipelines by role: ingest, report, ...)."""

    node: Node
    tag: str
    pipelines: dict[str, str] = field(default_factory=dict)
    datasets: dict[str, str] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    runs: dict[str, list[str]] = field(default_factory=dict)
    jobs: dict[str, str] = field(default_factory=dict)

    def name(self, role: str) -> str:
        return self.pipelines[role]


def ended(api: Api, run_id: str, timeout: float = 120) -> dict[str, Any]:
    return wait_until(
        lambda: (run := api.ok(api.get(f"/runs/{run_id}")))["status"] in ENDED and run,
        timeout=timeout,
        interval=0.3,
        what=f"run {run_id} to end",
    )


def build(api: Api, s: Scenario) -> None:
    tag = s.tag
    s.tools = {"busy": f"busy-{tag}", "spare": f"spare-{tag}"}
    api.tool(s.tools["busy"])
    api.tool(s.tools["spare"], image="localhost:5000/lab/spare:1")
    for role in ("raw", "clean", "report", "scores", "checked", "days", "slow"):
        s.datasets[role] = f"{role}-{tag}"
        api.local_dataset(s.datasets[role])
    d, busy = s.datasets, s.tools["busy"]
    s.pipelines = {role: f"{role}-{tag}" for role in ("ingest", "report", "score", "daily", "slow")}
    p = s.pipelines

    def init(role: str, *steps: dict[str, Any]) -> None:
        api.ok(api.post("/pipeline/init", {"name": p[role], "steps": [{"tool": busy, **st} for st in steps]}))

    def sh(script: str) -> list[str]:
        return ["sh", "-c", script]

    init(
        "ingest",
        {"name": "collect", "output_dataset": d["raw"], "cmd": sh(f"echo sample >> {APP}/data/samples.txt")},
        {
            "name": "clean",
            "input_dataset": d["raw"],
            "output_dataset": d["clean"],
            # The second run's batch is bad: that run fails at this step.
            "cmd": sh(
                f'n=$(wc -l < {APP}/input/samples.txt); if [ "$n" = 2 ]; then echo bad batch; exit 3; fi; '
                f'for i in 1 2 3; do echo "$n" > {APP}/data/part-$i.txt; done'
            ),
        },
    )
    init(
        "report",
        {
            "name": "summarise",
            "input_dataset": d["clean"],
            "output_dataset": d["report"],
            "cmd": sh(f"cat {APP}/input/part-*.txt > {APP}/data/summary.txt"),
        },
    )
    init(
        "score",
        {
            "name": "check",
            "output_dataset": d["checked"],
            # Fails its first attempt, then succeeds: the retry shows on the timeline.
            "cmd": sh(
                f'if [ "$MAO_ATTEMPT" -lt 2 ]; then echo first try fails; exit 2; fi; echo ok > {APP}/data/ok.txt'
            ),
            "retries": 2,
            "retry_delay": 1.0,
            "fallback_tool": s.tools["spare"],
        },
        {
            "name": "score",
            "input_dataset": d["clean"],
            "output_dataset": d["scores"],
            # Three shards, two at a time: the third starts when one ends.
            "fan_out": {"glob": "part-*.txt", "split_size": 1, "max_parallel": 2},
            "cmd": sh(
                f'sleep 1; for f in {APP}/input/part-*.txt; do cp "$f" {APP}/data/score-$(basename "$f"); done'
            ),
        },
    )
    init(
        "daily",
        {"name": "day", "output_dataset": d["days"], "cmd": sh(f"echo $MAO_RUN_ID > {APP}/data/day.txt")},
    )
    init("slow", {"name": "wait", "output_dataset": d["slow"], "cmd": sh("echo started; sleep 300")})

    # The report follows the clean dataset: every ground-truth advance of it starts a report run.
    s.jobs["trigger"] = api.ok(
        api.post("/pipeline/run", {"name": p["report"], "trigger": {"dataset": d["clean"]}})
    )["job_id"]
    s.jobs["daily"] = api.ok(api.post("/pipeline/run", {"name": p["daily"], "cron": "0 2 * * *"}))["job_id"]
    s.jobs["federation"] = api.ok(
        api.post("/pipeline/run", {"name": p["daily"], "cron": "0 5 * * *", "scope": "federation"})
    )["job_id"]

    s.runs = {role: [] for role in p}
    for _ in range(3):
        before = len(api.ok(api.get("/runs", pipeline=p["report"])))
        run = api.run(p["ingest"])
        s.runs["ingest"].append(run["id"])
        if run["status"] == "succeeded":  # clean advanced: one report run follows
            found = wait_until(
                lambda before=before: (
                    len(reports := api.ok(api.get("/runs", pipeline=p["report"]))) > before and reports
                ),
                timeout=60,
                what="the triggered report run",
            )
            s.runs["report"].insert(0, found[0]["id"])
            ended(api, found[0]["id"])
    s.runs["report"].reverse()
    s.runs["score"].append(api.run(p["score"])["id"])
    backfill = {
        "name": p["daily"],
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-03T00:00:00Z",
        "cron": "0 0 * * *",
    }
    s.runs["daily"] = api.ok(api.post("/pipeline/backfill", backfill))["runs"]
    for run_id in s.runs["daily"]:
        ended(api, run_id)
    # One running run of the slow pipeline and one queued behind it.
    first = api.ok(api.post("/pipeline/run", {"name": p["slow"], "wait": False}))["id"]
    wait_until(
        lambda: api.ok(api.get(f"/runs/{first}"))["status"] == "running", timeout=60, what="the slow run"
    )
    second = api.ok(api.post("/pipeline/run", {"name": p["slow"], "wait": False, "overlap": "queue"}))["id"]
    s.runs["slow"] = [first, second]


@pytest.fixture(scope="module")
def scenario(servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Scenario]:
    name = f"node-pictures-{uuid.uuid4().hex[:4]}"
    data_dir = servers_tmp / name
    env = orchestrator_env(name, data_dir, etcd.endpoint, executor, MAO_API_TOKEN=OPS_TOKEN)
    node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), data_dir)
    s = Scenario(node=node, tag=uuid.uuid4().hex[:4])
    try:
        build(node.api, s)
        yield s
    finally:
        api = node.api
        for run_id in s.runs.get("slow", [])[::-1]:
            api.post(f"/runs/{run_id}/cancel", {})
        if "federation" in s.jobs:  # etcd is shared by the session's instances
            api.delete(f"/jobs/{s.jobs['federation']}")
        node.service.stop()


@pytest.fixture(scope="module")
def page(scenario: Scenario) -> Iterator[Any]:
    """A browser signed in to the scenario's instance."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with chromium() as driver:
        driver.get(scenario.node.service.url + "/ui/")
        wait_until(
            lambda: driver.find_elements(By.CSS_SELECTOR, "#token"), timeout=30, what="the sign-in form"
        )
        driver.find_element(By.CSS_SELECTOR, "#token").send_keys(OPS_TOKEN, Keys.ENTER)
        wait_until(
            lambda: scenario.node.name in driver.find_element(By.CSS_SELECTOR, "#instance").text,
            timeout=30,
            what="the signed-in header",
        )
        yield driver


def go(page: Any, hash_: str, ready: Callable[[], Any], what: str) -> Any:
    # The view is emptied first, so that ``ready`` cannot be met by the page being left.
    page.execute_script(
        "document.getElementById('view').replaceChildren(); location.hash = arguments[0]", hash_
    )
    return wait_until(ready, timeout=30, interval=0.2, what=what)


def css(page: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(page.find_elements(By.CSS_SELECTOR, selector))


def ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


def found(page: Any, selector: str) -> list[dict[str, str]]:
    """The elements matching ``selector`` as their data attributes plus ``class`` and ``text``, read
    in one script: views that refresh themselves cannot leave a stale element behind."""
    return list(
        page.execute_script(
            """return [...document.querySelectorAll(arguments[0])].map((e) =>
                 ({...e.dataset, class: e.getAttribute("class") || "", text: e.textContent}));""",
            selector,
        )
    )


def q_classes(item: dict[str, str]) -> set[str]:
    return set(item["class"].split())


def classes(element: Any) -> set[str]:
    return set((element.get_attribute("class") or "").split())


def screenshot(page: Any, servers_tmp: Path, name: str, element: Any = None) -> None:
    shot = servers_tmp / name
    if element is not None:
        shot.write_bytes(element.screenshot_as_png)
    else:
        assert page.save_screenshot(str(shot))
    assert shot.stat().st_size > 5_000
    if os.environ.get("MAO_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, REPO_ROOT / "docs" / name)


def test_the_grid(scenario: Scenario, page: Any, servers_tmp: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    p, runs = scenario.pipelines, scenario.runs
    go(page, "#/grid", lambda: len(css(page, "#grid tbody tr")) == 5, "the grid's five rows")
    assert {r["pipeline"] for r in found(page, "#grid tbody tr")} == set(p.values())

    def cells(role: str) -> list[tuple[str, str]]:
        return [(c["run"], c["status"]) for c in found(page, f'#grid tr[data-pipeline="{p[role]}"] a.cell')]

    # Oldest left, newest right; each cell its run's state.
    assert cells("ingest") == list(zip(runs["ingest"], ["succeeded", "failed", "succeeded"], strict=True))
    assert cells("report") == [(r, "succeeded") for r in runs["report"]] and len(runs["report"]) == 2
    assert cells("daily") == [(r, "succeeded") for r in runs["daily"]]  # a backfill: in tick order
    assert [status for _, status in cells("slow")] == ["running", "queued"]
    # The failed run's squares: collect succeeded, clean failed.
    squares = found(page, f'#grid a.cell[data-run="{runs["ingest"][1]}"] .sq')
    assert [(q["step"], q["status"]) for q in squares] == [("collect", "succeeded"), ("clean", "failed")]
    assert "s-succeeded" in q_classes(squares[0]) and "s-failed" in q_classes(squares[1])
    check, fanned = found(page, f'#grid tr[data-pipeline="{p["score"]}"] .sq')
    assert "retried" in q_classes(check) and "s-succeeded" in q_classes(check)
    assert "retried" not in q_classes(fanned)  # three shard attempts, each its shard's first
    # The durations chart beside each row: one bar per ended run.
    assert len(found(page, f'#grid tr[data-pipeline="{p["ingest"]}"] svg.durations rect.bar')) == 3
    assert found(page, f'#grid tr[data-pipeline="{p["slow"]}"] svg.durations rect.bar') == []
    screenshot(page, servers_tmp, "console-grid.png", css(page, "#view")[0])

    # Arrow keys move between runs; Enter opens one. (Keys go to whatever has the focus: the grid
    # refreshes every 5 s and keeps the focus on the same run.)
    def focused() -> str | None:
        return page.execute_script("return document.activeElement.getAttribute('data-run')")

    page.execute_script(
        "document.querySelector(arguments[0]).focus()", f'#grid tr[data-pipeline="{p["ingest"]}"] a.cell'
    )
    assert focused() == runs["ingest"][0]
    ActionChains(page).send_keys(Keys.ARROW_RIGHT).perform()
    assert focused() == runs["ingest"][1]
    ActionChains(page).send_keys(Keys.ARROW_DOWN).perform()  # the next row, as far from the right
    assert focused() == runs["report"][0]
    ActionChains(page).send_keys(Keys.ARROW_UP, Keys.ENTER).perform()
    wait_until(
        lambda: page.current_url.endswith(f"#/run/{runs['ingest'][1]}"), timeout=10, what="the run page"
    )

    # Filters: a state, a trigger, a pipeline.
    go(
        page,
        "#/grid?status=failed",
        lambda: css(page, "#grid") and not css(page, '#grid a.cell[data-status="succeeded"]'),
        "the failed filter",
    )
    assert [c["run"] for c in found(page, "#grid a.cell")] == [runs["ingest"][1]]
    go(page, "#/grid?trigger=dataset", lambda: len(css(page, "#grid a.cell")) == 2, "the trigger filter")
    assert {c["run"] for c in found(page, "#grid a.cell")} == set(runs["report"])
    go(page, f"#/grid?pipeline={p['daily']}", lambda: len(css(page, "#grid tbody tr")) == 1, "one pipeline")
    assert len(found(page, "#grid a.cell")) == 3

    # The pipelines page has each pipeline's run durations too: oldest left, coloured by state.
    chart = f'article[data-pipeline="{p["ingest"]}"] svg.durations'
    go(page, "#/pipelines", lambda: css(page, chart), "the pipelines page")
    bars = found(page, f"{chart} rect.bar")
    assert [b["run"] for b in bars] == runs["ingest"]
    assert ["s-failed" in q_classes(b) for b in bars] == [False, True, False]


def test_the_timeline_of_a_run(scenario: Scenario, page: Any, servers_tmp: Path) -> None:
    runs = scenario.runs
    # A retried step (two attempts, the wait between them) and a fan-out step (a row per shard).
    go(page, f"#/run/{runs['score'][0]}", lambda: css(page, "#timeline .tl-shard"), "the timeline")
    bars = css(page, '#timeline rect[data-kind="attempt"][data-step="check"]')
    assert [(b.get_attribute("data-attempt"), b.get_attribute("data-status")) for b in bars] == [
        ("1", "failed"),
        ("2", "succeeded"),
    ]
    assert len(css(page, '#timeline line[data-kind="retry-wait"]')) == 1
    assert len(css(page, '#timeline rect[data-kind="run"]')) == 1
    assert len(css(page, "#timeline g.tl-shard")) == 3
    shards = css(page, '#timeline rect[data-kind="attempt"][data-step="score"]')
    assert sorted(b.get_attribute("data-shard") for b in shards) == ["1", "2", "3"]
    assert all("s-succeeded" in classes(b) for b in shards)
    screenshot(page, servers_tmp, "console-timeline.png", css(page, "#timeline")[0])
    # A click on a bar shows that attempt's log (the failed first one here, not the latest).
    first = '#timeline rect[data-kind="attempt"][data-step="check"][data-attempt="1"]'
    wait_until(lambda: css(page, first)[0].click() or True, timeout=10, what="a click on attempt 1")
    wait_until(lambda: "first try fails" in css(page, "#log")[0].text, timeout=30, what="attempt 1's log")
    wait_until(lambda: "attempt 1" in css(page, "#log-section h2")[0].text, timeout=10, what="its heading")

    # Queue time: a backfill's runs start one at a time, so its last run waited for the two before it;
    # its queued bar and its run bar are as long as the API's times say.
    api = scenario.node.api
    daily = [api.ok(api.get(f"/runs/{i}")) for i in runs["daily"]]
    assert ms(daily[2]["started_at"]) >= ms(daily[1]["ended_at"]) >= ms(daily[0]["ended_at"])
    go(page, f"#/run/{runs['daily'][2]}", lambda: css(page, "#timeline svg"), "a backfill run's timeline")
    queued = css(page, '#timeline rect[data-kind="run-queued"]')[0]
    ran = css(page, '#timeline rect[data-kind="run"]')[0]
    assert "queued" in classes(queued) and "s-succeeded" in classes(ran)
    waited = ms(daily[2]["started_at"]) - ms(daily[2]["created_at"])
    took = ms(daily[2]["ended_at"]) - ms(daily[2]["started_at"])
    drawn_ratio = float(queued.get_attribute("width")) / float(ran.get_attribute("width"))
    assert abs(drawn_ratio - waited / took) < 0.02 * max(1.0, waited / took), (drawn_ratio, waited, took)

    # Speculation, drawn from a made-up run (a real one needs a shard slower than 30 s): the copy is
    # dashed, in a second lane under its twin.
    drawn = page.execute_script(
        """
        const t = (s) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
        const a = (shard, attempt, status, s, e, speculative) =>
          ({attempt, shard, speculative, status, tool: "t", started_at: t(s), ended_at: t(e), exit_code: null, error: null});
        const run = {id: "made0up0run0", status: "succeeded", created_at: t(0), started_at: t(5), ended_at: t(100), steps: [
          {name: "score", tool: "t", status: "succeeded", needs: [], started_at: t(6), ended_at: t(99),
           shards: {count: 2, succeeded: 2, failed: 0, speculative: 1},
           attempts: [a(1, 1, "succeeded", 6, 20, false), a(2, 1, "cancelled", 6, 95, false), a(2, 2, "succeeded", 50, 90, true)]}]};
        const svg = runTimeline(run, null);
        const spec = svg.querySelector('[data-speculative="true"]');
        const twin = svg.querySelector('[data-shard="2"]:not([data-speculative])');
        return {spec: spec && spec.getAttribute("class"), below: spec && +spec.getAttribute("y") > +twin.getAttribute("y"),
                queued: svg.querySelectorAll('[data-kind="run-queued"]').length, shards: svg.querySelectorAll("g.tl-shard").length};
        """
    )
    assert drawn == {"spec": "bar attempt s-succeeded speculative", "below": True, "queued": 1, "shards": 2}


def test_lineage(scenario: Scenario, page: Any, servers_tmp: Path) -> None:
    p, d = scenario.pipelines, scenario.datasets
    go(page, "#/lineage?scope=here", lambda: css(page, "#lineage svg g.node"), "the lineage")
    nodes = {
        (n.get_attribute("data-kind"), n.get_attribute("data-name")): n for n in css(page, "#lineage g.node")
    }
    assert set(nodes) == {("pipeline", name) for name in p.values()} | {
        ("dataset", name) for name in d.values()
    }
    assert [name for (kind, name), n in nodes.items() if n.get_attribute("data-federation") == "true"] == [
        p["daily"]
    ]
    assert "federation" in classes(nodes[("pipeline", p["daily"])])
    edges = {
        (e.get_attribute("data-source"), e.get_attribute("data-target"), e.get_attribute("data-kind"))
        for e in css(page, "#lineage path.edge")
    }

    def edge(a: str, b: str, kind: str) -> tuple[str, str, str]:
        return (a, b, kind)

    P = {role: f"pipeline:{name}" for role, name in p.items()}  # noqa: N806
    D = {role: f"dataset:{name}" for role, name in d.items()}  # noqa: N806
    assert edges == {
        edge(P["ingest"], D["raw"], "writes"),
        edge(D["raw"], P["ingest"], "reads"),
        edge(P["ingest"], D["clean"], "writes"),
        edge(D["clean"], P["report"], "reads"),
        edge(D["clean"], P["report"], "triggers"),
        edge(P["report"], D["report"], "writes"),
        edge(P["score"], D["checked"], "writes"),
        edge(D["clean"], P["score"], "reads"),
        edge(P["score"], D["scores"], "writes"),
        edge(P["daily"], D["days"], "writes"),
        edge(P["slow"], D["slow"], "writes"),
    }
    trigger = css(page, '#lineage path.edge[data-kind="triggers"]')[0]
    assert trigger.get_attribute("data-scope") == "instance"
    screenshot(page, servers_tmp, "console-lineage.png", css(page, "#view")[0])
    # The lineage of one node: what feeds it and what it feeds.
    go(
        page,
        f"#/lineage?scope=here&focus=pipeline:{p['report']}",
        lambda: len(css(page, "#lineage g.node")) == 5,
        "the report's lineage",
    )
    assert {n.get_attribute("data-name") for n in css(page, "#lineage g.node")} == {
        p["report"],
        p["ingest"],
        d["raw"],
        d["clean"],
        d["report"],
    }
    # A dataset opens its ground-truth history with provenance (keyboard: focus, Enter).
    from selenium.webdriver.common.keys import Keys

    clean = css(page, f'#lineage g.node[data-name="{d["clean"]}"]')[0]
    page.execute_script("arguments[0].focus()", clean)
    page.switch_to.active_element.send_keys(Keys.ENTER)
    wait_until(
        lambda: css(page, "#dataset-detail .history li"), timeout=30, what="the clean dataset's history"
    )
    links = {a.get_attribute("href").rsplit("/", 1)[-1] for a in css(page, "#dataset-detail .history a")}
    assert {scenario.runs["ingest"][0], scenario.runs["ingest"][2]} <= links, css(page, "#dataset-detail")[
        0
    ].text


def test_tools_queue_backfills_and_schedules(scenario: Scenario, page: Any, servers_tmp: Path) -> None:
    p, t, runs, jobs = scenario.pipelines, scenario.tools, scenario.runs, scenario.jobs
    go(page, "#/tools", lambda: css(page, f'#tools tr[data-tool="{t["busy"]}"]'), "the tools")
    (busy,) = found(page, f'#tools tr[data-tool="{t["busy"]}"]')
    assert all(name in busy["text"] for name in p.values())
    assert "docker.io" in busy["text"] and "tests" in busy["text"]
    (spare,) = found(page, f'#tools tr[data-tool="{t["spare"]}"]')
    assert (
        "localhost:5000" in spare["text"]
        and "check (fallback)" in spare["text"]
        and p["score"] in spare["text"]
    )
    go(
        page,
        f"#/tool/{t['busy']}",
        lambda: len(css(page, "#tool-charts svg.durations")) == 5,
        "a tool's page",
    )
    assert "busybox:latest" in found(page, "#tool-facts")[0]["text"]

    # These pages refresh themselves: read through found(), never through elements kept across.
    go(page, "#/queue", lambda: css(page, "#queue tbody tr"), "the queue")
    queued = found(page, "#queue tbody tr")
    assert [r["run"] for r in queued] == [runs["slow"][1]]
    assert f"run {runs['slow'][0]} of {p['slow']} is running" in queued[0]["text"]  # what it waits for
    assert [r["run"] for r in found(page, "#running tbody tr")] == [runs["slow"][0]]

    go(page, "#/backfills", lambda: css(page, "article.backfill"), "the backfills")
    cards = found(page, "article.backfill")
    assert [c["pipeline"] for c in cards] == [p["daily"]] and "3 of 3 ended" in cards[0]["text"]
    cells = found(page, "article.backfill .tick-cells a")
    assert [(c["run"], c["status"]) for c in cells] == [(r, "succeeded") for r in runs["daily"]]  # tick order

    # The scenario's three schedules (the session's etcd may hold other tests' federation-wide ones).
    mine = set(jobs.values())

    def schedules() -> list[dict[str, str]]:
        return [r for r in found(page, "#schedules tbody tr") if r.get("schedule") in mine]

    go(page, "#/schedules", lambda: len(schedules()) == 3, "the schedules")
    rows = schedules()
    assert {r["schedule"]: r["scope"] for r in rows} == {
        jobs["daily"]: "this instance",
        jobs["trigger"]: "this instance",
        jobs["federation"]: "federation",
    }
    daily = f'#schedules tr[data-schedule="{jobs["daily"]}"]'
    assert len(found(page, f'{daily} circle[data-outcome="next"]')) == 5
    assert len(found(page, f"{daily} .next-ticks li")) == 5
    fires = found(page, f'#schedules tr[data-schedule="{jobs["trigger"]}"] circle[data-outcome="fired"]')
    assert len(fires) == 2  # the two advances of clean
    screenshot(page, servers_tmp, "console-schedules.png", css(page, "#view")[0])


def click(page: Any, selector: str, what: str) -> None:
    """Click what ``selector`` finds at this moment (the views refresh themselves: no kept element)."""
    wait_until(lambda: css(page, selector), timeout=30, interval=0.2, what=what)
    page.execute_script("document.querySelector(arguments[0]).click()", selector)


def confirm(page: Any) -> None:
    wait_until(
        lambda: page.execute_script("return document.getElementById('confirm').open"),
        timeout=10,
        what="the confirmation",
    )
    page.execute_script("document.getElementById('confirm-yes').click()")


def test_versions_and_a_backfill_steered_from_the_console(scenario: Scenario, page: Any, servers_tmp: Path) -> None:
    api, tag = scenario.node.api, scenario.tag
    name = dataset = f"hold-{tag}"
    api.local_dataset(dataset)
    step = {"name": "hold", "tool": scenario.tools["busy"], "output_dataset": dataset}
    api.ok(api.post("/pipeline/init", {"name": name, "steps": [{**step, "cmd": ["sh", "-c", "sleep 200"]}]}))
    api.ok(api.post("/pipeline/init", {"name": name, "steps": [{**step, "cmd": ["sh", "-c", "sleep 300"]}]}))
    span = {"name": name, "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z", "cron": "0 * * * *"}
    backfill = api.ok(api.post("/pipeline/backfill", span))
    first = backfill["runs"][0]
    try:
        wait_until(
            lambda: api.ok(api.get(f"/runs/{first}"))["status"] == "running", timeout=60, what="the first tick"
        )
        # The runs list has a Version column: the running run took version 2, the queued ones none yet.
        go(page, f"#/runs?pipeline={name}", lambda: len(css(page, "#runs tbody tr")) == 3, "the runs")
        assert "Version" in [th["text"] for th in found(page, "#runs thead th")]
        versions = page.execute_script(
            """return Object.fromEntries([...document.querySelectorAll("#runs tbody tr")].map((tr) =>
                 [tr.dataset.run, tr.querySelector("td.version").textContent]));"""
        )
        assert versions == {first: "2", backfill["runs"][1]: "—", backfill["runs"][2]: "—"}, versions

        # The run's page: its version, and on request what changed in it (kept across refreshes).
        go(page, f"#/run/{first}", lambda: css(page, "#run-version"), "the running run's page")
        assert found(page, "#run-version")[0]["text"] == "2"
        click(page, "#diff-previous", "the difference button")
        wait_until(lambda: css(page, "#version-diff #diff-fields"), timeout=30, what="the difference")
        (row,) = found(page, "#version-diff #diff-fields tbody tr")
        assert (row["step"], row["change"], row["field"]) == ("hold", "changed", "cmd")
        assert "sleep 200" in row["text"] and "sleep 300" in row["text"]
        assert [line["text"].strip() for line in found(page, "#version-diff pre.diff .d-add")][-1] == '+        "sleep 300"'
        wait_until(lambda: css(page, "#version-diff #diff-fields"), timeout=10, what="the difference after a refresh")
        screenshot(page, servers_tmp, "console-version-diff.png", css(page, "#version-diff")[0])

        # A pipeline's versions page.
        go(page, f"#/versions/{name}", lambda: css(page, "#versions tbody tr"), "the versions page")
        assert [r["version"] for r in found(page, "#versions tbody tr")] == ["2", "1"]

        # The backfills page: the backfill's progress and its ticks, then cancelled in two steps.
        card = f'article.backfill[data-backfill="{backfill["backfill_id"]}"]'
        go(page, "#/backfills", lambda: css(page, card), "the backfill's card")
        (shown,) = found(page, card)
        assert shown["status"] == "running" and "0 of 3 ended" in shown["text"]
        assert [c["status"] for c in found(page, f"{card} .tick-cells a")] == ["running", "queued", "queued"]
        click(page, f'{card} [data-cancel-backfill="{backfill["backfill_id"]}"]', "the cancel button")
        confirm(page)
        wait_until(
            lambda: [c["status"] for c in found(page, f"{card} .tick-cells a")] == ["running", "cancelled", "cancelled"],
            timeout=30,
            what="the queued ticks cancelled",
        )
        assert "2 of 3 ended" in found(page, card)[0]["text"]
        screenshot(page, servers_tmp, "console-backfills.png", css(page, card)[0])
        click(page, f'{card} [data-cancel-running="{backfill["backfill_id"]}"]', "the stop button")
        confirm(page)
        wait_until(lambda: found(page, card)[0]["status"] == "cancelled", timeout=60, what="the backfill cancelled")
        assert [c["status"] for c in found(page, f"{card} .tick-cells a")] == ["cancelled"] * 3
        assert not css(page, f"{card} button")
    finally:
        api.post(f"/backfills/{backfill['backfill_id']}/cancel", {"running": True})
