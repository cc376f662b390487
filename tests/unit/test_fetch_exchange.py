"""The fetch data mode's orchestrator side (orchestrator/executors/fetch.py) and its two routes
(orchestrator/api/staging.py), on local folders: tickets used once, in time, by their attempt only;
the input tarball; uploads unpacked under the local output's rules; nothing for a refused upload."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from orchestrator.access import auth_middleware, json_writes_middleware
from orchestrator.api import staging
from orchestrator.app import error_middleware
from orchestrator.datasets.hygiene import OutputRefused
from orchestrator.errors import Conflict, PayloadTooLarge, Unauthorized
from orchestrator.executors.fetch import FetchExchange, UploadMissing
from orchestrator.executors.seam import ContainerSpec, Identity, InputData, OutputData

TOOL = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())


def spec_for(base: Path, attempt: int = 1) -> ContainerSpec:
    (base / "in" / "sub").mkdir(parents=True)
    (base / "work").mkdir()
    (base / "in" / "a.txt").write_text("input")
    (base / "in" / "sub" / "b.txt").write_text("deep")
    os.symlink("a.txt", base / "in" / "link")
    (base / "work" / "old.txt").write_text("old")
    return ContainerSpec(
        identity=Identity(instance="i", pipeline="p", run="r1", step="s", position=0, attempt=attempt),
        image="busybox",
        input=InputData(commit="0" * 40, folder=base / "in"),
        output=OutputData(folder=base / "work"),
        user=TOOL,
        timeout=10,
    )


def tarball(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """(name, content or None for a folder, link target) -> an uncompressed tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content, target in members:
            info = tarfile.TarInfo(name)
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            elif content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def issued(tmp_path: Path, **limits: int) -> tuple[FetchExchange, ContainerSpec, str, str]:
    exchange = FetchExchange(tmp_path / "staging", **limits)  # type: ignore[arg-type]
    spec = spec_for(tmp_path / "a")
    plan = await exchange.issue(spec, "http://orchestrator:8080/", input_seconds=60, output_seconds=60)
    assert plan.input_url == f"http://orchestrator:8080/staging/{spec.name}/input"
    assert plan.output_url == f"http://orchestrator:8080/staging/{spec.name}/output"
    return exchange, spec, plan.input_token.get_secret_value(), plan.output_token.get_secret_value()


async def test_the_input_tarball_holds_the_snapshot_and_the_work_folder_as_the_tool(tmp_path: Path) -> None:
    exchange, spec, token, _ = await issued(tmp_path)
    path = await exchange.open_input(spec.name, token)
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar}
        assert sorted(members) == ["data", "data/old.txt", "input", "input/a.txt", "input/link", "input/sub", "input/sub/b.txt"]
        assert all((m.uid, m.gid) == TOOL for m in members.values())
        assert members["input/link"].issym() and members["input/link"].linkname == "a.txt"
    # Private: only the orchestrator reads the folder; the token itself is stored nowhere.
    folder = tmp_path / "staging" / spec.name
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert all(token.encode() not in p.read_bytes() for p in folder.iterdir() if p.is_file())


async def test_a_ticket_is_its_attempts_once_and_in_time(tmp_path: Path) -> None:
    exchange, spec, token, out_token = await issued(tmp_path)
    with pytest.raises(Unauthorized):
        await exchange.open_input(spec.name, out_token)  # the other direction's token
    with pytest.raises(Unauthorized):
        await exchange.open_input(spec.name, "")
    with pytest.raises(Unauthorized):
        await exchange.open_input("mao-other-attempt", token)
    await exchange.open_input(spec.name, token)
    with pytest.raises(Conflict):
        await exchange.open_input(spec.name, token)
    # A restarted orchestrator (a new object over the same folder) knows the same: used is used.
    again = FetchExchange(exchange.root)
    with pytest.raises(Conflict):
        await again.open_input(spec.name, token)
    other = spec_for(tmp_path / "b", attempt=2)
    plan = await exchange.issue(other, "http://o", input_seconds=-1, output_seconds=60)
    with pytest.raises(Unauthorized, match="expired"):
        await exchange.open_input(other.name, plan.input_token.get_secret_value())


async def test_an_accepted_upload_becomes_the_work_folder(tmp_path: Path) -> None:
    exchange, spec, _, token = await issued(tmp_path)
    body = tarball([("./", None, None), ("./new.txt", b"new", None), ("./sub", None, None), ("./sub/f", b"deep", None), ("./l", None, "sub/f")])
    assert await exchange.accept_output(spec.name, token, chunks(body), len(body)) == 7
    with pytest.raises(Conflict):
        await exchange.accept_output(spec.name, token, chunks(body), len(body))
    await exchange.bring_back(spec)
    work = spec.output.folder
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*")) == ["l", "new.txt", "sub", "sub/f"]
    assert (work / "l").is_symlink() and (work / "l").read_text() == "deep"
    await exchange.discard(spec.name)
    assert exchange.attempts() == []


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([("./evil", None, "/etc/passwd")], "outside|not allowed|link"),
        ([("./a", None, "../../x")], "outside|not allowed|link"),
        ([("../up.txt", b"x", None)], "outside"),
        ([("./big", b"x" * 2000, None)], "MAO_STEP_MAX_OUTPUT"),
        ([(f"./f{i}", b"", None) for i in range(12)], "entries"),
    ],
)
async def test_a_refused_upload_commits_nothing_and_says_why(tmp_path: Path, members: list, why: str) -> None:
    exchange, spec, _, token = await issued(tmp_path, max_output_bytes=1000, max_files=10)
    body = tarball(members)
    with pytest.raises((OutputRefused, PayloadTooLarge), match=why):
        await exchange.accept_output(spec.name, token, chunks(body), len(body))
    with pytest.raises(UploadMissing) as caught:
        await exchange.bring_back(spec)
    assert caught.value.refused
    assert sorted(p.name for p in spec.output.folder.iterdir()) == ["old.txt"]


async def test_an_upload_that_stops_short_or_is_no_tar_is_refused(tmp_path: Path) -> None:
    exchange, spec, _, token = await issued(tmp_path)
    body = tarball([("./a", b"abc", None)])
    with pytest.raises(Exception, match="ended after"):
        await exchange.accept_output(spec.name, token, chunks(body[:100]), len(body))
    exchange2, spec2, _, token2 = await issued(tmp_path / "x")
    with pytest.raises(OutputRefused, match="tar"):
        await exchange2.accept_output(spec2.name, token2, chunks(b"not a tar" * 100), None)


async def test_the_sweep_removes_only_long_expired_attempts(tmp_path: Path) -> None:
    exchange, spec, _, _ = await issued(tmp_path)
    old = spec_for(tmp_path / "b", attempt=2)
    await exchange.issue(old, "http://o", input_seconds=-7200, output_seconds=-7200)
    assert await exchange.sweep() == [old.name]
    assert exchange.attempts() == [spec.name]


async def bring_back(exchange: FetchExchange, spec: ContainerSpec) -> None:
    try:
        await exchange.bring_back(spec)
    except UploadMissing:
        pass  # the discard came first: nothing to bring back, and it says so


async def test_discards_and_a_bring_back_at_once_never_trip_over_each_other(tmp_path: Path) -> None:
    """A cancel's discard, the end's bring-back and discard, from two exchange objects (the backend's
    and the routes'), at the same moment: each ends cleanly, and the folder is gone."""
    for round_ in range(5):
        exchange, spec, _, token = await issued(tmp_path / str(round_))
        body = tarball([(f"./f{i}", b"x" * 100, None) for i in range(50)])
        await exchange.accept_output(spec.name, token, chunks(body), len(body))
        other = FetchExchange(exchange.root)

        await asyncio.gather(
            exchange.discard(spec.name), other.discard(spec.name), bring_back(exchange, spec), other.discard(spec.name)
        )
        assert exchange.attempts() == []


async def test_no_upload_is_upload_missing(tmp_path: Path) -> None:
    exchange, spec, _, _ = await issued(tmp_path)
    with pytest.raises(UploadMissing):
        await exchange.bring_back(spec)


# -- the routes, behind the API's own middlewares -------------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[TestClient, FetchExchange]]:
    app = web.Application(middlewares=[error_middleware, auth_middleware("api-token"), json_writes_middleware])
    app.router.add_routes(staging.routes)
    exchange = FetchExchange(tmp_path / "staging")
    app[staging.STAGING] = exchange
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, exchange


async def test_the_routes_take_the_ticket_not_the_api_token(client, tmp_path: Path) -> None:
    test_client, exchange = client
    spec = spec_for(tmp_path / "a")
    plan = await exchange.issue(spec, "http://x", input_seconds=60, output_seconds=60)
    url = f"/staging/{spec.name}"
    answer = await test_client.get(f"{url}/input", headers={"Authorization": "Bearer api-token"})
    assert answer.status == 401 and (await answer.json())["error"] == "staging_ticket"
    good = {"Authorization": f"Bearer {plan.input_token.get_secret_value()}"}
    answer = await test_client.get(f"{url}/input", headers=good)
    assert answer.status == 200 and answer.content_type == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(await answer.read())) as tar:
        assert "input/a.txt" in tar.getnames()
    answer = await test_client.get(f"{url}/input", headers=good)
    assert answer.status == 409 and (await answer.json())["error"] == "staging_ticket_spent"
    body = tarball([("./out.txt", b"out", None)])
    put = {"Authorization": f"Bearer {plan.output_token.get_secret_value()}", "Content-Type": "application/x-tar"}
    answer = await test_client.put(f"{url}/output", data=body, headers=put)
    assert answer.status == 200 and await answer.json() == {"attempt": spec.name, "bytes": 3}
    answer = await test_client.get("/staging/..%2F..%2Fetc/input", headers=good)
    assert answer.status in (400, 401, 404)  # never a file outside the staging folder
    # Every other route still wants the API token.
    assert (await test_client.get("/runs")).status == 401


async def test_a_tick_past_the_expiry_is_refused_by_the_route(client, tmp_path: Path) -> None:
    test_client, exchange = client
    spec = spec_for(tmp_path / "a")
    plan = await exchange.issue(spec, "http://x", input_seconds=0.01, output_seconds=0.01)
    time.sleep(0.05)
    answer = await test_client.get(
        f"/staging/{spec.name}/input", headers={"Authorization": f"Bearer {plan.input_token.get_secret_value()}"}
    )
    assert answer.status == 401 and (await answer.json())["error"] == "staging_ticket_expired"
