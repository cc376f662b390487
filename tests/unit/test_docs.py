"""The documentation keeps up with the code: README.md gives the two commands CI runs, every setting
the code reads is on docs/configuration.md, every route the orchestrator and the executor register is
on docs/api.md, the state tables on docs/runs.md are the code's, and every link between the pages
leads to a file and a heading that exist.

(docs/maoctl.md's commands: test_ctl_docs.py; backend settings keys: the backends' unit tests.)"""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from executor import config as executor_config
from orchestrator.api.openapi import routes_of
from orchestrator.app import create_app
from orchestrator.config import load_settings
from orchestrator.config import table as orchestrator_table
from orchestrator.domain.states import ATTEMPT_TRANSITIONS, RUN_TRANSITIONS, STEP_TRANSITIONS
from tests.ctl_helpers import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md")), REPO_ROOT / "bench" / "README.md"]
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")

# -- the two commands ---------------------------------------------------------------------------------


def test_readme_gives_the_two_commands_first() -> None:
    text = README.read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    assert blocks, "README.md has no sh block"
    commands = [line.split("#")[0].strip() for line in blocks[0].splitlines()]
    assert commands == ["./scripts/demo.sh", "./scripts/test.sh"], blocks[0]
    assert text.index("./scripts/demo.sh") < text.index("## A five-minute tour")


def test_ci_runs_the_test_command_readme_gives() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec \./scripts/test\.sh\s*$", ci, re.M), ci
    assert (REPO_ROOT / "scripts" / "test.sh").is_file() and (REPO_ROOT / "scripts" / "demo.sh").is_file()


# -- every setting --------------------------------------------------------------------------------------


def names_the_code_reads() -> set[str]:
    """Every variable of the two settings tables, every MAO_* name the configuration modules mention,
    and every quoted "MAO_*" literal anywhere in orchestrator/, executor/ and ctl/ (settings, maoctl's
    variables, what tools are given)."""
    names = {row.variable for row in (*orchestrator_table.TABLE, *executor_config.TABLE)}
    for config in [*sorted((REPO_ROOT / "orchestrator" / "config").glob("*.py")), REPO_ROOT / "executor" / "config.py"]:
        names |= set(re.findall(r"\b(MAO_[A-Z0-9_]*[A-Z0-9])\b", config.read_text()))
    for package in ("orchestrator", "executor", "ctl"):
        for source in (REPO_ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"""["'](MAO_[A-Z0-9_]*[A-Z0-9])["']""", source.read_text()))
    return names


def test_every_setting_is_on_the_configuration_page() -> None:
    names = names_the_code_reads()
    assert len(names) > 60 and "MAO_DATA_DIR" in names and "MAO_EXECUTOR_TOKEN" in names
    page = (DOCS / "configuration.md").read_text()
    missing = sorted(n for n in names if not re.search(rf"`{n}`|`{n}=", page))
    assert not missing, f"add these to docs/configuration.md: {missing}"


# -- every route ----------------------------------------------------------------------------------------


def documented_routes(text: str) -> set[tuple[str, str]]:
    """(method, path) of every route the first column of api.md's tables names: `GET/DELETE /a/{x}`,
    a method carried over to `/b` after it, `{tools,datasets}` meaning each, a query string dropped."""
    found: set[tuple[str, str]] = set()
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        methods: list[str] = []
        for item in re.findall(r"`([^`]+)`", line.split(" | ")[0]):
            match = re.fullmatch(r"((?:[A-Z]+/)*[A-Z]+ )?(/\S*)", item)
            if not match:
                continue
            if match.group(1):
                methods = match.group(1).strip().split("/")
            path = re.split(r"[?\[]", match.group(2))[0]
            pieces = re.split(r"(\{[^}]*,[^}]*\})", path)
            choices = [p[1:-1].split(",") if p.startswith("{") and "," in p else [p] for p in pieces]
            for method, parts in product(methods, product(*choices)):
                found.add((method, "".join(parts)))
    return found


def covers(route: str, documented: str) -> bool:
    """A documented path covers a route when they match segment by segment; a route's `{kind}`
    segment is covered by a concrete one (`/registry/{kind}/...` by `/registry/tools/...`)."""
    route_parts, doc_parts = route.split("/"), documented.split("/")
    return len(route_parts) == len(doc_parts) and all(
        r == d or (r.startswith("{") and (d.startswith("{") or d))
        for r, d in zip(route_parts, doc_parts, strict=True)
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("data")
    settings = load_settings(
        {"MAO_EXECUTOR_TOKEN": "x" * 16, "MAO_DATA_DIR": str(data), "MAO_ETCD_INSECURE": "1"}
    )
    return create_app(settings)  # never started: nothing connects


def test_the_route_table_is_read_as_written() -> None:
    text = (
        "| `GET /`, `GET /health` | x |\n"
        "| `GET/POST /registry/{tools,datasets}/{name}/owner` | x |\n"
        "| `POST /write`, `/read` | x |\n"
        "| `GET /runs/{id}/log?step=NAME[&attempt=N]` | `GET /not-a-route-cell` |\n"
    )
    assert documented_routes(text) == {
        ("GET", "/"),
        ("GET", "/health"),
        ("GET", "/registry/tools/{name}/owner"),
        ("POST", "/registry/tools/{name}/owner"),
        ("GET", "/registry/datasets/{name}/owner"),
        ("POST", "/registry/datasets/{name}/owner"),
        ("POST", "/write"),
        ("POST", "/read"),
        ("GET", "/runs/{id}/log"),
    }
    assert covers("/registry/{kind}/{name}/owner", "/registry/tools/{name}/owner")
    assert not covers("/runs/{id}", "/runs/{id}/log") and not covers("/runs/grid", "/runs/{id}")


def test_every_route_is_on_the_api_page(app) -> None:
    documented = documented_routes((DOCS / "api.md").read_text())
    routes = {(method, path) for method, path, _ in routes_of(app) if method in METHODS}
    assert len(routes) > 40
    missing = sorted(
        f"{method} {path}"
        for method, path in routes
        if not any(m == method and covers(path, d) for m, d in documented)
    )
    assert not missing, f"add these routes to the table of docs/api.md: {missing}"
    # And the other way: the page names no route the app does not have.
    stale = sorted(
        f"{m} {d}"
        for m, d in documented
        if not any(m == method and covers(path, d) for method, path in routes)
    )
    assert not stale, f"docs/api.md names routes the app does not register: {stale}"


# -- links ----------------------------------------------------------------------------------------------


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors (lower case, punctuation but `-` and `_` dropped, spaces to `-`) and
    `<a id>` anchors."""
    found = set()
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found | set(re.findall(r'<a id="([^"]+)"', text))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_link_leads_somewhere(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO_ROOT)}: links to nothing: {broken}"


def executor_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the executor registers, read from its source (building its app
    needs a Docker engine): `router.add_get("/x", ...)` and `@routes.get("/x")`, raw or f-strings
    (`f"/containers/{name}"`: a parameter either way)."""
    found = set()
    for source in (REPO_ROOT / "executor").rglob("*.py"):
        for method, path in re.findall(
            r"""(?:router\.add_|routes\.)(get|post|put|delete|patch)\(\s*[rf]{0,2}["']([^"']+)["']""",
            source.read_text(),
        ):
            found.add((method.upper(), re.sub(r"\{(\w+):[^}]*\}+", r"{\1}", path)))
    return found


def test_every_executor_route_is_on_the_api_page() -> None:
    routes = executor_routes()
    assert {("POST", "/run"), ("GET", "/health"), ("GET", "/logs/{name}")} <= routes
    page = (DOCS / "api.md").read_text()
    section = page[page.index("## The executor's API") :]
    missing = sorted(
        f"{method} {path}"
        for method, path in routes
        if not re.search(re.sub(r"\\\{\w+\\\}", r"\\{[^}]+\\}", re.escape(path)) + r"[`?\s]", section)
    )
    assert not missing, f"add these executor routes to docs/api.md, under The executor's API: {missing}"


# -- the state tables -----------------------------------------------------------------------------------


def documented_transitions(text: str, kind: str) -> dict[str, set[str]]:
    """The `| Kind | may become |` table of docs/runs.md: each row's statuses (first column) to the
    statuses named in the second (before any parenthesis's words, which are reasons)."""
    table = text[text.index(f"| {kind} | may become |") :].split("\n\n")[0]
    found: dict[str, set[str]] = {}
    for row in table.splitlines()[2:]:
        left, right = row.strip("|").split(" | ")
        becomes = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", right)))
        for status in re.findall(r"`([a-z_]+)`", left):
            found[status] = becomes
    return found


@pytest.mark.parametrize(
    ("kind", "table"),
    [("Run", RUN_TRANSITIONS), ("Step", STEP_TRANSITIONS), ("Attempt", ATTEMPT_TRANSITIONS)],
)
def test_the_state_tables_on_the_runs_page_are_the_codes(kind: str, table: dict[Any, frozenset[Any]]) -> None:
    documented = documented_transitions((DOCS / "runs.md").read_text(), kind)
    assert documented == {old.value: {new.value for new in news} for old, news in table.items()}
