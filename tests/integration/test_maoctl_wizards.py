"""The wizards in a real pseudo-terminal (pexpect), as an operator meets them:
``instance install`` joining a federation, and ``instance init`` against a live orchestrator.

What the wizards show is read through a terminal emulator (``tests/terminal.py``, pyte), not from
the raw bytes, which depend on what the renderer had drawn before."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pexpect
import pytest
import yaml

from ctl import pki
from ctl.env_files import parse_env
from ctl.join_bundle import issue_bundle, save_bundle
from ctl.marketplace import DEFAULT_FOLDER
from ctl.netinfo import host_addresses
from ctl.stack import start_hint
from tests import servers
from tests.api import unique
from tests.ctl_helpers import REPO_ROOT, maoctl
from tests.terminal import COLUMNS, LINES, Terminal

DOWN, ENTER, CLEAR = "\x1b[B", "\r", "\x15"  # arrow down, enter, Ctrl-U (clear the line)


def spawn(*args: str, home: Path, marketplace: Path, url: str | None = None) -> Terminal:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAO_")}
    env.update(
        {
            "HOME": str(home),
            "TERM": "xterm",
            "NO_COLOR": "1",
            "PROMPT_TOOLKIT_NO_CPR": "1",  # no cursor-position requests to wait for
            "MAO_MARKETPLACE": str(marketplace),
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    if url:
        env["MAO_URL"] = url
        env["MAO_API_TOKEN"] = servers.token_for(url) or ""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "ctl", *args],
        cwd=str(REPO_ROOT),
        env=env,
        dimensions=(LINES, COLUMNS),
        encoding="utf-8",
        timeout=30,
    )
    return Terminal(child)


def answer(child: Terminal, prompt: str, keys: str) -> None:
    child.answer(prompt, keys)


def finish(child: Terminal) -> str:
    """The screen once the wizard ended."""
    text = child.finish()
    assert "Traceback" not in text
    return text


def test_install_wizard_joins_a_federation_then_stands_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    addresses = host_addresses()
    own_ip = "10.77.0.5"
    cluster = f"alpha=https://10.77.0.1:2380,node-b=https://{own_ip}:2380"
    # The operator's `maoctl federation add-member` wrote these where the federation's CA is: one for
    # this instance, and one made for another address by mistake.
    ca = pki.create_authority("mao-demo")
    bundle, wrong = tmp_path / "node-b-join.json", tmp_path / "wrong-join.json"
    save_bundle(issue_bundle(ca, "node-b", f"https://{own_ip}:2380", cluster), bundle)
    wrong_cluster = "alpha=https://10.77.0.1:2380,node-b=https://10.77.0.9:2380"
    save_bundle(issue_bundle(ca, "node-b", "https://10.77.0.9:2380", wrong_cluster), wrong)

    child = spawn("instance", "install", home=home, marketplace=DEFAULT_FOLDER)
    answer(child, "Join an existing federation?", "y")
    child.expect("Which federation?")
    answer(child, "operator@mao-demo.example.org", ENTER)  # federations are listed with their contacts
    answer(child, "Install directory:", ENTER)  # default ~/mao-instance
    answer(child, "Instance name:", CLEAR + "-bad" + ENTER)
    child.expect("invalid instance name '-bad'")
    child.send(CLEAR + "node-b" + ENTER)
    # The host's own addresses come first (no loopback when joining), then "Type another address".
    answer(child, "IP address of this instance", DOWN * len(addresses) + ENTER)
    answer(child, "IP address:", "127.0.0.1" + ENTER)
    child.expect("only reachable from this machine")
    child.send(CLEAR + own_ip + ENTER)
    answer(child, "Git e-mail for this instance's commits:", CLEAR + "ops@node-b.example.org" + ENTER)
    answer(child, "SSH key folder for git remotes (empty for none):", str(home / ".ssh") + ENTER)
    child.expect("To join, send the operator of mao-demo (operator@mao-demo.example.org):")
    child.expect(f"maoctl federation add-member --name node-b --peer-url https://{own_ip}:2380")
    answer(child, "Join bundle from the operator (file):", f"{tmp_path / 'absent.json'}{ENTER}")
    child.expect("cannot read the join bundle")
    child.send(CLEAR + str(wrong) + ENTER)
    child.expect(f"URL is https://{own_ip}:2380")
    child.send(CLEAR + str(bundle) + ENTER)
    answer(child, f"Write the instance to {home / 'mao-instance'}?", ENTER)
    output = finish(child)
    assert child.exitstatus == 0, output

    directory = home / "mao-instance"
    assert start_hint(directory) in output and "export MAO_API_TOKEN=" in output
    env_file = directory / "mao.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = parse_env(env_file.read_text())
    assert env["MAO_INSTANCE_NAME"] == "node-b" and env["MAO_GIT_EMAIL"] == "ops@node-b.example.org"
    assert env["MAO_API_TOKEN"] not in output  # the token stays in the file
    compose = yaml.safe_load((directory / "docker-compose.yaml").read_text())
    etcd = compose["services"]["etcd"]["environment"]
    assert etcd["ETCD_INITIAL_CLUSTER"] == cluster and etcd["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    assert (
        etcd["ETCD_LISTEN_PEER_URLS"] == etcd["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == f"https://{own_ip}:2380"
    )
    assert etcd["ETCD_LISTEN_CLIENT_URLS"] == f"https://127.0.0.1:2379,https://{own_ip}:2379"
    assert etcd["ETCD_CLIENT_CERT_AUTH"] == etcd["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert (directory / "pki" / "ca.crt").read_bytes() == ca.cert_pem and not (directory / "ca").exists()
    assert stat.S_IMODE((directory / "pki" / "client.key").stat().st_mode) == 0o600
    assert f"{home / '.ssh'}:/home/mao/.ssh:ro" in compose["services"]["orchestrator"]["volumes"]
    assert all((directory / d).is_dir() for d in ("data", "etcd", "postgres"))

    # Running it again on the same folder asks before touching anything; "no" changes nothing.
    before = env_file.read_text()
    child = spawn("instance", "install", home=home, marketplace=DEFAULT_FOLDER)
    answer(child, "Join an existing federation?", "n")
    answer(child, "Install directory:", ENTER)
    answer(
        child, "already holds docker-compose.yaml, mao.env, executor.env, postgres.env. Overwrite them", "n"
    )
    output = finish(child)
    assert child.exitstatus == 1 and "nothing was written" in output
    assert env_file.read_text() == before

    # "yes" rewrites it as a standalone instance (a new etcd cluster) and keeps the secrets.
    child = spawn("instance", "install", home=home, marketplace=DEFAULT_FOLDER)
    answer(child, "Join an existing federation?", "n")
    answer(child, "Install directory:", ENTER)
    answer(child, "Overwrite them", "y")
    answer(child, "Instance name:", CLEAR + "node-b" + ENTER)
    answer(child, "127.0.0.1 (this machine only", "")
    child.send(DOWN * len(addresses) + ENTER)
    answer(child, "Git e-mail for this instance's commits:", ENTER)
    answer(child, "SSH key folder for git remotes (empty for none):", ENTER)
    answer(child, "Write the instance to", ENTER)
    output = finish(child)
    assert child.exitstatus == 0, output
    etcd = yaml.safe_load((directory / "docker-compose.yaml").read_text())["services"]["etcd"]["environment"]
    assert (
        etcd["ETCD_INITIAL_CLUSTER"] == "node-b=https://127.0.0.1:2380"
        and etcd["ETCD_INITIAL_CLUSTER_STATE"] == "new"
    )
    assert etcd["ETCD_LISTEN_CLIENT_URLS"] == "https://127.0.0.1:2379"
    # Standing alone founds a new federation: its own CA, and certificates issued by it.
    assert (
        (directory / "ca" / "ca.crt").read_bytes()
        == (directory / "pki" / "ca.crt").read_bytes()
        != ca.cert_pem
    )
    rewritten = parse_env(env_file.read_text())
    assert rewritten["MAO_GIT_EMAIL"].endswith("@node-b")
    assert all(rewritten[k] == env[k] for k in ("MAO_DATABASE_URL", "MAO_API_TOKEN", "MAO_EXECUTOR_TOKEN"))


@pytest.fixture
def init_marketplace(tmp_path: Path) -> tuple[Path, str, str, str]:
    """A marketplace offering the example's demo-private pipeline under fresh names, so this test's
    registrations meet nobody else's in the session's shared etcd."""
    folder = tmp_path / "market"
    shutil.copytree(DEFAULT_FOLDER, folder)
    suffix = unique("x")[2:]
    tool, dataset, pipeline = f"demo-tool-{suffix}", f"demo-private-data-{suffix}", f"0init-{suffix}"
    tools = json.loads((folder / "tools.json").read_text())
    tools[0]["name"] = tool
    (folder / "tools.json").write_text(json.dumps(tools))
    offered = next(
        p for p in json.loads((folder / "pipelines.json").read_text()) if p["name"] == "demo-private"
    )
    offered["name"] = pipeline
    for step in offered["steps"]:
        step["tool"], step["output_dataset"] = tool, dataset
    (folder / "pipelines.json").write_text(json.dumps([offered]))
    return folder, tool, dataset, pipeline


def test_init_wizard_sets_up_a_private_pipeline(
    sqlite_node, docker_engine, busybox_image, init_marketplace, tmp_path: Path
) -> None:
    market, tool, dataset, pipeline = init_marketplace
    docker_engine.images.get(busybox_image).tag("mao-demo-tool", "latest")  # what scripts/demo.sh builds
    api, url = sqlite_node.api, sqlite_node.service.url
    secret = "tok-" + unique("s")
    local = {p["name"] for p in api.ok(api.get("/pipeline"))}
    addable = sorted(({pipeline} | set(api.ok(api.get("/registry/pipelines")))) - local)

    child = spawn("instance", "init", home=tmp_path, marketplace=market, url=url)
    answer(child, "Pipelines to set up on this instance", DOWN * addable.index(pipeline) + " " + ENTER)
    answer(child, "fetch.API_TOKEN is private (kept on this instance only); its value:", secret + ENTER)
    answer(
        child,
        f"Tool {tool} is not registered. Register it from the marketplace (image mao-demo-tool:latest)?",
        "y",
    )
    answer(child, f"Dataset {dataset} is not registered. Create it local-only", "y")
    child.expect(f"✓ {pipeline} initialised")
    answer(child, f"Schedule {pipeline} to run regularly?", "y")
    answer(child, "Cron expression", CLEAR + "61 * * * *" + ENTER)
    answer(child, "Timezone:", ENTER)
    child.expect("invalid cron expression '61 * * * *'")
    answer(child, "Cron expression", CLEAR + "15 3 * * *" + ENTER)
    answer(child, "Timezone:", CLEAR + "Europe/Zurich" + ENTER)
    output = finish(child)
    assert child.exitstatus == 0, output
    assert f"✓ {pipeline} scheduled: '15 3 * * *' (Europe/Zurich)" in output and "Set up 1 of 1" in output
    assert secret not in output

    assert api.ok(api.get(f"/registry/tools/{tool}"))["image"] == "mao-demo-tool:latest"
    master = api.ok(api.get(f"/registry/datasets/{dataset}"))["master"]
    assert Path(master).is_dir() and str(sqlite_node.data_dir) in master
    schedules = [s for s in api.ok(api.get("/schedules")) if s["pipeline"] == pipeline]
    assert [(s["cron"], s["timezone"]) for s in schedules] == [("15 3 * * *", "Europe/Zurich")]
    run = json.loads(maoctl(url, "--json", "pipeline", "run", "--name", pipeline).stdout)
    assert run["status"] == "succeeded", run
    for path in (
        "/pipeline",
        f"/pipeline/{pipeline}",
        f"/registry/pipelines/{pipeline}",
        f"/runs/{run['id']}",
        "/schedules",
    ):
        assert secret not in api.get(path).text, path

    # Again: it shows the pipeline as there (this instance, federation, marketplace) and adds nothing.
    child = spawn("instance", "init", home=tmp_path, marketplace=market, url=url)
    if len(addable) > 1:
        answer(child, "Pipelines to set up on this instance", ENTER)
    output = finish(child)
    assert child.exitstatus == 0
    row = next(line for line in output.splitlines() if pipeline in line)
    assert row.count("✓") == 3, row
    assert "Nothing chosen" in output or "nothing to add" in output
    assert len([s for s in api.ok(api.get("/schedules")) if s["pipeline"] == pipeline]) == 1
