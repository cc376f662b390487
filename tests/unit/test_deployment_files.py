"""The deployment files: compose files parse and only use settings the services read, the Dockerfiles
copy files that exist, and requirements_installer.txt covers what maoctl imports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctl.compose import EXAMPLE, EXAMPLE_ENV_FILES, compose_document, example_env_text, main
from ctl.dockerfiles import FILENAMES, dockerfile_text
from ctl.instance_config import InstanceConfig
from tests.ctl_helpers import REPO_ROOT


def names_read_by_the_services() -> set[str]:
    """Every MAO_* name orchestrator/config.py or executor/config.py mentions (what they can read)."""
    source = "".join((REPO_ROOT / p).read_text() for p in ("orchestrator/config.py", "executor/config.py"))
    return set(re.findall(r"\b(MAO_[A-Z0-9_]+)\b", source))


def environment_names(document: dict[str, Any]) -> set[str]:
    names = set()
    for service in document["services"].values():
        environment = service.get("environment") or {}
        names.update(
            environment if isinstance(environment, dict) else (e.split("=", 1)[0] for e in environment)
        )
    return names


def joining() -> InstanceConfig:
    return InstanceConfig(
        name="beta",
        ip="10.0.0.2",
        directory=Path("/srv/mao"),
        git_email="ops@beta.example.org",
        ssh_dir=Path("/home/ops/.ssh"),
        initial_cluster="alpha=http://10.0.0.1:2380,beta=http://10.0.0.2:2380",
        labels={"site": "lab"},
    )


@pytest.mark.parametrize("config", [EXAMPLE, joining()], ids=["example", "joining"])
def test_compose_uses_only_settings_the_services_read(config: InstanceConfig) -> None:
    document = yaml.safe_load(yaml.safe_dump(compose_document(config)))
    # compose v1 refuses a top-level name (the project name is in .env), and builds nothing.
    assert list(document) == ["services"]
    assert set(document["services"]) == {"orchestrator", "executor", "postgres", "etcd"}
    mao_names = {n for n in environment_names(document) if n.startswith("MAO_")}
    assert mao_names and mao_names <= names_read_by_the_services()
    for service in document["services"].values():
        assert service["network_mode"] == "host"
        assert service["healthcheck"]["test"][0] == "CMD"
        assert service["image"].startswith("${MAO_") and "build" not in service
    orchestrator = document["services"]["orchestrator"]
    assert orchestrator["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert orchestrator["depends_on"]["etcd"] == {"condition": "service_healthy"}
    assert orchestrator["user"] == "10001:10001"


def test_repository_compose_file_is_the_generators_output() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    assert yaml.safe_load(text) == compose_document(EXAMPLE), (
        "regenerate: python -m ctl.compose > docker-compose.yml"
    )
    for service, example in EXAMPLE_ENV_FILES.items():
        assert (REPO_ROOT / example).read_text() == example_env_text(service), (
            f"regenerate: python -m ctl.compose --env {service} > {example}"
        )
    env_names = {
        line.split("=", 1)[0]
        for service in EXAMPLE_ENV_FILES
        for line in example_env_text(service).splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert {n for n in env_names if n.startswith("MAO_")} <= names_read_by_the_services()
    assert main(["x", "--bogus"]) == 2 and main(["x", "--dockerfile", "nope"]) == 2


def test_repository_compose_mounts_data_at_the_same_path() -> None:
    services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    orchestrator, executor = services["orchestrator"], services["executor"]
    data = orchestrator["environment"]["MAO_DATA_DIR"]
    assert orchestrator["environment"]["MAO_HOST_DATA_DIR"] == data
    assert f"{data}:{data}" in orchestrator["volumes"] and f"{data}:{data}" in executor["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in executor["volumes"]
    assert services["orchestrator"]["env_file"] == ["mao.env"]
    assert services["executor"]["env_file"] == ["executor.env"]
    assert services["postgres"]["env_file"] == ["postgres.env"]
    assert "env_file" not in services["etcd"]


@pytest.mark.parametrize("role", ["orchestrator", "executor"])
def test_dockerfiles_are_the_generators_output_and_copy_files_that_exist(role: str) -> None:
    dockerfile = FILENAMES[role]
    text = (REPO_ROOT / dockerfile).read_text()
    assert text == dockerfile_text(role), (
        f"regenerate: python -m ctl.compose --dockerfile {role} > {dockerfile}"
    )
    lines = text.splitlines()
    code = [line for line in lines if line.strip() and not line.startswith("#")]
    # No registry: the base is an ARG (scripts/images.sh's debootstrap image), pip has no index.
    assert code[0].startswith("ARG BASE_IMAGE=") and code[1] == "FROM ${BASE_IMAGE}"
    assert any("pip install --no-index --find-links" in line for line in lines)
    assert ("USER mao" in lines) == (role == "orchestrator")
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"{dockerfile} copies {source}, which does not exist"
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {"mao.env", "executor.env", "postgres.env", ".venv"} <= set(ignored)


def third_party_imports(folder: Path) -> set[str]:
    modules = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {
        m
        for m in modules
        if m not in sys.stdlib_module_names and m not in ("ctl", "orchestrator", "executor", "__future__")
    }


def test_requirements_installer_covers_maoctl_imports() -> None:
    lines = [line.strip() for line in (REPO_ROOT / "requirements_installer.txt").read_text().splitlines()]
    required = {
        re.split(r"[<>=!~\[ ]", line)[0].lower() for line in lines if line and not line.startswith("#")
    }
    assert all(">=" in line for line in lines if line and not line.startswith("#")), "give lower bounds"
    distributions = importlib.metadata.packages_distributions()
    imported = third_party_imports(REPO_ROOT / "ctl")
    # urllib3 is requests' own dependency (ctl.local_socket builds on its connection classes).
    needed = {distributions[module][0].lower() for module in imported} - {"urllib3"}
    assert needed <= required, f"missing from requirements_installer.txt: {needed - required}"
    assert required == {"click", "questionary", "rich", "requests", "pyyaml", "cryptography"}


def test_joined_instance_fails_over_to_the_other_members_and_advertises_its_ip() -> None:
    from pathlib import Path

    from ctl.compose import compose_document
    from ctl.instance_config import InstanceConfig

    config = InstanceConfig(
        name="node-b",
        ip="10.0.0.5",
        directory=Path("/srv/mao"),
        git_email="mao@node-b",
        initial_cluster="alpha=http://10.0.0.1:2380,node-b=http://10.0.0.5:2380",
    )
    env = compose_document(config)["services"]["orchestrator"]["environment"]
    assert env["MAO_ETCD_ENDPOINTS"] == "127.0.0.1:2379,10.0.0.1:2379"
    assert env["MAO_ADVERTISE_URL"] == "http://10.0.0.5:8080"
