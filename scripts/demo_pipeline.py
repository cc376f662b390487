"""The demo's last act, and an example of scripting against the HTTP API.

Registers the example marketplace's ``demo-tool`` and ``demo`` pipeline on the node at ``$MAO_URL``
(creating its datasets as local bare repositories), runs the pipeline, and prints the run and the
``ground-truth`` history it produced. Every call is idempotent, so running it again adds one run.

The token: ``MAO_API_TOKEN``, sent to ``$MAO_URL``; or the one the orchestrator generated into its data
dir (``MAO_DATA_DIR``), sent only through that orchestrator's socket, as maoctl does
(``ctl.local_socket``): whoever holds the TCP port while the node restarts gets nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ctl.local_socket import route, session_for  # noqa: E402 - the checkout's own packages

URL = os.environ.get("MAO_URL", "http://127.0.0.1:8080").rstrip("/")
MARKETPLACE = Path(os.environ.get("MAO_MARKETPLACE", Path(__file__).resolve().parents[1] / "marketplace"))
TARGET = route(URL, os.environ.get("MAO_API_TOKEN") or None)
SESSION = session_for(TARGET)
HEADERS = {"Authorization": f"Bearer {TARGET.token or ''}", "Content-Type": "application/json"}


def call(method: str, path: str, body: Any = None) -> Any:
    if TARGET.refusal:
        sys.exit(f"[demo] {TARGET.refusal}")
    response = SESSION.request(method, TARGET.base + path, json=body, headers=HEADERS, timeout=600)
    if response.status_code >= 300:
        sys.exit(f"[demo] {method} {path} failed ({response.status_code}): {response.json().get('message')}")
    return response.json()


def by_name(file: str, name: str) -> dict[str, Any]:
    return next(item for item in json.loads((MARKETPLACE / file).read_text()) if item["name"] == name)


def main() -> None:
    pipeline = by_name("pipelines.json", "demo")
    for tool in sorted({step["tool"] for step in pipeline["steps"]}):
        call("POST", "/registry/tools", by_name("tools.json", tool))
    datasets = sorted({step["output_dataset"] for step in pipeline["steps"]})
    masters = {}
    for dataset in datasets:
        masters[dataset] = call("POST", "/bare-repo/init", {"name": dataset})["path"]
        call(
            "POST", "/registry/datasets", {"name": dataset, "body": {"master": masters[dataset], "nodes": []}}
        )
    call("POST", "/pipeline/init", pipeline)
    print(f"[demo] registered tool demo-tool, datasets {', '.join(datasets)} and pipeline demo; running it")

    run = call("POST", "/pipeline/run", {"name": "demo"})
    print(f"\nrun {run['id']}: {run['status']} in {run['duration']} s ({run['trigger']})")
    for step in run["steps"]:
        print(
            f"  {step['position'] + 1}. {step['name']:<10} {step['status']:<9} exit {step['exit_code']}  "
            f"{step['output_dataset']}@{(step['output_commit'] or '-')[:10]} -> ground-truth {(step['merge_commit'] or '-')[:10]}"
        )
        for line in step["log_tail"].splitlines()[-3:]:
            print(f"       | {line}")
    if run["status"] != "succeeded":
        sys.exit(f"[demo] the run failed: {run['error']}")

    report = masters["demo-report"]
    count = subprocess.run(
        ["git", f"--git-dir={report}", "show", "ground-truth:sample-count.txt"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"\nground-truth of demo-report now says: {count} sample(s) collected. Its history:")
    log = subprocess.run(
        [
            "git",
            f"--git-dir={report}",
            "log",
            "--graph",
            "--format=%h %s%n%(trailers:only,unfold)",
            "-n",
            "6",
            "ground-truth",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print("\n".join("  " + line for line in log.splitlines() if line.strip(" |\\/*")))


if __name__ == "__main__":
    main()
