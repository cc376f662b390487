"""The web console in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven
by Selenium; nothing downloads a browser or a driver): sign in, start a run, watch it succeed, open a
step's log, and save a screenshot.

The screenshot goes to the session's temp dir; with ``MAO_UPDATE_SCREENSHOTS=1`` it replaces
``docs/console-run.png`` (the one the README shows).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.api import unique
from tests.integration.conftest import OPS_TOKEN, Node
from tests.servers.process import REPO_ROOT, wait_until

pytestmark = pytest.mark.browser


def clicker(browser):  # type: ignore[no-untyped-def]
    """``click(css, what)``: click the element ``css`` names once it is shown. The console rebuilds a
    view when it refreshes (every few seconds, later on a loaded machine): an element found just
    before a refresh is gone when clicked, so finding and clicking are retried together until a
    click lands (a click that raised did not happen)."""
    from selenium.webdriver.common.by import By

    def click(css: str, what: str, timeout: float = 30) -> None:
        def once() -> bool:
            found = browser.find_elements(By.CSS_SELECTOR, css)
            if not found or not found[0].is_displayed():
                return False
            found[0].click()
            return True

        wait_until(once, timeout=timeout, what=what)

    return click


def test_console_runs_a_pipeline_and_shows_its_log(guarded_node: Node, browser, servers_tmp: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    api = guarded_node.api
    tool, raw, report, pipeline = unique("tool"), unique("raw"), unique("report"), unique("console")
    api.tool(tool)
    api.local_dataset(raw)
    api.local_dataset(report)
    app = "/usr/src/app"
    steps = [
        {"name": "collect", "tool": tool, "input_dataset": None, "output_dataset": raw,
         "cmd": ["sh", "-c", f"sleep 2; echo sample >> {app}/data/samples.txt; echo collected one sample"]},
        {"name": "summarise", "tool": tool, "input_dataset": raw, "output_dataset": report,
         "cmd": ["sh", "-c", f"wc -l < {app}/input/samples.txt > {app}/data/count.txt; echo summarised"]},
    ]  # fmt: skip
    api.ok(
        api.post("/pipeline/init", {"name": pipeline, "description": "the console's test", "steps": steps})
    )
    cancel_route = "/runs/{id}/cancel" in api.ok(api.get("/openapi.json"))["paths"]

    def find(css: str):
        return browser.find_element(By.CSS_SELECTOR, css)

    def present(css: str):
        found = browser.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else None

    click = clicker(browser)

    # Sign in: the page asks for the token once.
    browser.get(guarded_node.service.url + "/ui/")
    wait_until(lambda: present("#token"), timeout=30, what="the sign-in form")
    find("#token").send_keys("wrong-token", Keys.ENTER)
    wait_until(lambda: "refused" in find("#login-error").text, timeout=30, what="a refused token")
    find("#token").send_keys(OPS_TOKEN, Keys.ENTER)
    wait_until(lambda: "node-ops" in find("#instance").text, timeout=30, what="the signed-in header")

    # Start the run from the pipelines view, with confirmation.
    click('nav a[data-view="pipelines"]', "the pipelines link")
    click(f'button.run-button[data-pipeline="{pipeline}"]', "the run button")
    click("#confirm-yes", "the confirmation")  # the view does not refresh while it is open
    wait_until(lambda: "#/run/" in browser.current_url, timeout=30, what="the run's page")
    run_id = browser.current_url.rsplit("/", 1)[-1]

    # Live: the page refreshes on its own until the run ends.
    if not cancel_route:
        assert browser.find_elements(By.CSS_SELECTOR, "#cancel-run") == []
    wait_until(
        lambda: "succeeded" in find("#view h1").text, timeout=120, interval=0.5, what="the run to succeed"
    )
    assert api.ok(api.get(f"/runs/{run_id}"))["status"] == "succeeded"
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg.graph g.node")
    assert [n.get_attribute("data-step") for n in nodes] == ["collect", "summarise"]
    assert all("s-succeeded" in n.get_attribute("class") for n in nodes)
    assert "input" in find("#steps").text and "ground-truth" in find("#steps").text
    # Where each step ran: its backend and node, as GET /runs/{id} records them.
    ran_on = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#steps td.ran-on")]
    assert len(ran_on) == 2 and all(text.startswith("local") and "queued" in text for text in ran_on), ran_on

    # Open a step's log with the keyboard: focus the graph node, press Enter (again if a render
    # replaced the node between the focus and the key), until the page shows that step's log.
    def log_of_collect_opened() -> bool:
        if "Log of collect" in find("#log-section h2").text:
            return True
        graph_node = find('svg.graph g.node[data-step="collect"]')
        browser.execute_script("arguments[0].focus()", graph_node)
        browser.switch_to.active_element.send_keys(Keys.ENTER)
        return False

    wait_until(log_of_collect_opened, timeout=30, interval=0.5, what="the log of collect to open")
    wait_until(lambda: "collected one sample" in find("#log").text, timeout=30, what="the log of collect")
    # And with the mouse, the other one (again if a refresh replaced the button under the click).
    wait_until(lambda: find('button.log-button[data-step="summarise"]').click() or True, timeout=10)
    wait_until(lambda: "summarised" in find("#log").text, timeout=30, what="the log of summarise")

    # The other views answer too (no error box).
    for view in ("runs", "federation", "datasets"):
        click(f'nav a[data-view="{view}"]', f"the {view} link")
        wait_until(
            lambda: present("#view h1") and not present("#view > .error"), timeout=30, what=f"the {view} view"
        )
    wait_until(
        lambda: present(f'tr[data-run="{run_id}"]') or find('nav a[data-view="runs"]').click(), timeout=30
    )

    # The API reference renders the OpenAPI document with the same session's token.
    browser.get(f"{guarded_node.service.url}/api/docs")
    wait_until(
        lambda: len(browser.find_elements(By.CSS_SELECTOR, "#reference article")) > 30,
        timeout=30,
        what="the reference",
    )
    assert "/pipeline/run" in find("#reference").text and "RunRequest" in find("#reference").text

    browser.get(f"{guarded_node.service.url}/ui/#/run/{run_id}")
    wait_until(lambda: "summarised" in find("#log").text, timeout=30, what="the run page again")
    shot = servers_tmp / "console-run.png"
    assert browser.save_screenshot(str(shot))
    if os.environ.get("MAO_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, REPO_ROOT / "docs" / "console-run.png")
    assert shot.stat().st_size > 10_000


def test_console_cancels_a_running_run(guarded_node: Node, browser) -> None:
    """The running step's log streams into the run page; the run page's cancel button calls the engine's POST /runs/{id}/cancel (with the token and a
    JSON body, as trust-api requires) and the page follows the run to ``cancelled``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    api = guarded_node.api
    tool, out, pipeline = unique("tool"), unique("out"), unique("cancel")
    api.tool(tool)
    api.local_dataset(out)
    cmd = "echo streamed while running; sleep 300"
    step = {"name": "slow", "tool": tool, "output_dataset": out, "cmd": ["sh", "-c", cmd]}
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    run_id = api.ok(api.post("/pipeline/run", {"name": pipeline, "wait": False}))["run_id"]

    def present(css: str):
        found = browser.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else None

    browser.get(f"{guarded_node.service.url}/ui/#/run/{run_id}")
    wait_until(lambda: present("#token"), timeout=30, what="the sign-in form")
    browser.find_element(By.CSS_SELECTOR, "#token").send_keys(OPS_TOKEN, Keys.ENTER)
    wait_until(
        lambda: api.ok(api.get(f"/runs/{run_id}"))["steps"][0]["status"] == "running",
        timeout=120,
        what="the step to run",
    )
    # The step's log streams into the page while the step runs (follow=1, read as it comes).
    wait_until(
        lambda: "streamed while running" in browser.find_element(By.CSS_SELECTOR, "#log").text,
        timeout=60,
        what="the live log",
    )
    assert api.ok(api.get(f"/runs/{run_id}"))["steps"][0]["status"] == "running"
    click = clicker(browser)
    click("#cancel-run", "the cancel button")  # the page refreshes while the run is active
    click("#confirm-yes", "the confirmation")
    wait_until(
        lambda: "cancelled" in browser.find_element(By.CSS_SELECTOR, "#view h1").text,
        timeout=120,
        interval=0.5,
        what="the run to be cancelled",
    )
    run = api.ok(api.get(f"/runs/{run_id}"))
    assert run["status"] == "cancelled" and run["steps"][0]["status"] == "cancelled", run
    assert browser.find_elements(By.CSS_SELECTOR, "#cancel-run") == []  # an ended run has none

    # A cancelled run has a Retry button (with confirmation): it starts the retry and shows its page.
    click("#retry-run", "the retry button")
    click("#confirm-yes", "the confirmation")
    wait_until(
        lambda: "/run/" in browser.current_url and run_id not in browser.current_url,
        timeout=60,
        what="the retry's page",
    )
    retry_id = browser.current_url.rsplit("/", 1)[-1]
    retried = api.ok(api.get(f"/runs/{retry_id}"))
    assert (retried["retry_of"], retried["trigger"]) == (run_id, "retry"), retried
    wait_until(lambda: run_id[:10] in browser.find_element(By.CSS_SELECTOR, "#view dl.facts").text,
               timeout=30, what="the retry's page naming the run it retries")  # fmt: skip
    api.ok(api.post(f"/runs/{retry_id}/cancel"))  # its step sleeps: not waited for
    wait_until(lambda: api.ok(api.get(f"/runs/{retry_id}"))["status"] == "cancelled", timeout=120,
               what="the retry to be cancelled")  # fmt: skip
