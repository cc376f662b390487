"""The backend contract suite's fixtures: one parametrised ``case`` per backend kind (drivers.py).

Each test gets a started backend of that kind, an instance name of its own (so that ``list_managed``
and the leftover checks see only its objects), and folders for input and output; at the end whatever
the test left on the engine is removed and the backend closed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.executors.seam import (
    Backend,
    ContainerSpec,
    Identity,
    InputData,
    Limits,
    OutputData,
)
from tests import servers

from .drivers import DRIVERS, Driver


@pytest.fixture(scope="session")
def swarm_shared_root(swarm: servers.SwarmHold, servers_tmp: Path) -> Iterator[Path]:
    """The swarm backend's SHARED_ROOT: on one node, any folder of this host is 'mounted everywhere'."""
    root = servers_tmp / "swarm-shared"
    root.mkdir(mode=0o711)
    yield root


@pytest.fixture(scope="session")
def staging_server(servers_tmp: Path) -> Iterator[servers.StagingServer]:
    """The orchestrator's staging routes alone (fetch data mode), for the pods of fetch-mode backends."""
    root = servers_tmp / "staging"
    root.mkdir(mode=0o700)
    server = servers.start_staging_server(root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def real_staging_server(servers_tmp: Path) -> Iterator[servers.StagingServer]:
    """The staging routes where a real cluster's pods reach them (MAO_TEST_KUBE_STAGING_LISTEN)."""
    host, _, port = os.environ["MAO_TEST_KUBE_STAGING_LISTEN"].rpartition(":")
    root = servers_tmp / "staging-real"
    root.mkdir(mode=0o700)
    server = servers.start_staging_server(root, host=host, port=int(port))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def slurm_shared_root(slurm: servers.SlurmCluster, servers_tmp: Path) -> Iterator[Path]:
    """The Slurm backend's SHARED_ROOT: its one node is this host, so any folder is 'mounted everywhere'."""
    root = servers_tmp / "slurm-shared"
    root.mkdir(mode=0o711)
    yield root


@dataclass
class Case:
    driver: Driver
    backend: Backend
    instance: str
    folder: Path
    image: str
    image_id: str | None
    _attempts: int = field(default=0)

    @property
    def kind(self) -> str:
        return self.driver.kind

    def spec(
        self, cmd: list[str] | None, *, run: str = "run1", attempt: int = 1, **fields: Any
    ) -> ContainerSpec:
        """An attempt of step 0 with a fresh input (``in.txt``) and output folder (``old.txt``, the
        node branch's content)."""
        self._attempts += 1
        base = self.folder / f"a{self._attempts}"
        (base / "input").mkdir(parents=True)
        (base / "output").mkdir()
        (base / "input" / "in.txt").write_text("input\n")
        (base / "output" / "old.txt").write_text("old\n")
        prepare = getattr(self.driver, "prepare", None)
        if prepare is not None:
            prepare(base)
        values: dict[str, Any] = {
            "identity": Identity(
                instance=self.instance, pipeline="p", run=run, step="s", position=0, attempt=attempt
            ),
            "image": self.image,
            "image_id": self.image_id,
            "cmd": cmd,
            "input": InputData(commit="0" * 40, folder=base / "input"),
            "output": OutputData(folder=base / "output"),
            "user": self.driver.tool_user,
            "limits": Limits(memory=64 * 1024 * 1024, pids=128),
            "timeout": 60,
            "start_timeout": 60,
        }
        values.update(fields)
        return ContainerSpec(**values)


@pytest.fixture(params=sorted(DRIVERS))
async def case(request: pytest.FixtureRequest, busybox_image: str, tmp_path: Path) -> AsyncIterator[Case]:
    driver = DRIVERS[request.param](request)
    backend = driver.make("contract")
    await backend.start()
    instance = f"contract-{secrets.token_hex(4)}"
    image = getattr(driver, "image", None) or busybox_image  # a real cluster pulls its own
    image_id = await backend.resolve_image(image)
    current = Case(driver, backend, instance, tmp_path, image, image_id)
    try:
        yield current
    finally:
        # current.backend: a test may have replaced it (a new backend object, as after a restart).
        with contextlib.suppress(Exception):
            for managed in await current.backend.list_managed(instance):
                await current.backend.cancel(managed.handle)
        await current.backend.close()
