"""``GET /runs/{id}/log?step=NAME[&attempt=N][&shard=N][&follow=1]``: the full log of one attempt.

An attempt is addressed by its step and number (default: the step's latest attempt). A fan-out step
runs one container per shard, each with its own attempts (speculative copies included, each with its
own number), so its logs are addressed with ``shard=N`` as well (1-based, as ``MAO_SHARD``); without
it, such a step is a 400 naming its shards.

An ended attempt's log comes from the data dir (``runs/step_logs.py``); a running one's from the
orchestrator's own copy, which it streams from the backend while the attempt runs
(``runs/log_keeper.py``): ``follow=1`` streams it (chunked) until the object ends, then closes.
Every byte is masked as the log tails are. The answer is ``text/plain``; its ``X-Mao-Attempt`` and
``X-Mao-Attempt-Status`` headers say which attempt it is and how it stood when the answer began.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

from aiohttp import web
from pydantic import Field

from ..domain.pipeline import Name, Query
from ..domain.states import AttemptStatus
from ..errors import BadRequest, MaoError, NotFound
from ..runs.step_logs import StepLogs
from ..store.logs import AttemptLog, step_attempts
from .common import parse, path_id
from .facades import LOGS, facade
from .openapi import doc

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# How often a follower looks again for a log that is not being kept yet (the attempt is still
# preparing its folders, or was adopted after a restart and its keeper is starting).
WAIT_FOR_LOG = 0.5


class LogQuery(Query):
    step: Name = Field(description="the step's name")
    attempt: int | None = Field(default=None, ge=1, le=1_000_000, description="1-based; default the latest")
    shard: int | None = Field(
        default=None, ge=1, le=1_000_000, description="a fan-out step's shard (1-based); required for one"
    )
    follow: bool = Field(default=False, description="1: stream until the attempt ends")


def choose(attempts: list[AttemptLog], step: str, query: LogQuery) -> AttemptLog:
    """The attempt ``query`` names among a step's attempts (see the module docstring)."""
    shards = sorted({a.shard for a in attempts if a.shard is not None})
    if shards:
        if query.shard is None:
            raise BadRequest(
                f"step {step} fans out into shards {shards[0]}..{shards[-1]}: add shard=N",
                code="shard_required",
            )
        attempts = [a for a in attempts if a.shard == query.shard]
        if not attempts:
            raise NotFound(f"step {step} has no shard {query.shard} (shards {shards[0]}..{shards[-1]})")
    elif query.shard is not None:
        raise NotFound(f"step {step} has no shard {query.shard}: it does not fan out")
    if not attempts:
        raise NotFound(f"step {step} has no attempt yet (nothing ran: pending, cached or skipped)")
    number = query.attempt or max(a.attempt for a in attempts)
    found = [a for a in attempts if a.attempt == number]
    if not found:
        numbers = sorted({a.attempt for a in attempts})
        raise NotFound(f"step {step} has no attempt {number} (attempts {', '.join(map(str, numbers))})")
    return found[-1]


@routes.get("/runs/{id}/log")
@doc(
    "The full log of one attempt of a step (text, secrets masked); follow=1 streams it until the "
    "attempt ends. A fan-out step's attempts are per shard (shard=N).",
    query=LogQuery,
    content_type="text/plain",
    errors=(400, 404, 409, 503),
    tags=("runs",),
)
async def step_log(request: web.Request) -> web.StreamResponse:
    run_id = path_id(request)
    query = parse(LogQuery, dict(request.query), codes={"step": "invalid_name"})
    the_node = facade(request, LOGS)
    run = await the_node.store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r} on this instance")
    if run.step(query.step) is None:
        raise NotFound(f"run {run_id} has no step {query.step!r}", code="unknown_step")
    chosen = choose(await step_attempts(the_node.store, run_id, query.step), query.step, query)
    if chosen.container is None:
        raise NotFound(f"attempt {chosen.attempt} of step {query.step} ran no container", code="log_not_kept")
    logs = the_node.runner.attempts.step_logs
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "X-Mao-Attempt": str(chosen.attempt),
        "X-Mao-Attempt-Status": chosen.status,
        "Cache-Control": "no-store",
    }
    if chosen.status == AttemptStatus.RUNNING:
        return await _live(request, logs, run_id, chosen, query, headers)
    chunks = await logs.stored(run_id, chosen.container)
    if chunks is None:
        raise NotFound(_not_kept(chosen, query.step), code="log_not_kept")
    return await _send(request, chunks, headers)


def _not_kept(chosen: AttemptLog, step: str) -> str:
    return (
        f"the log of attempt {chosen.attempt} of step {step} was not kept (the executor was away when it "
        "ended, or it ended before full logs were kept); GET /runs/{id} has its log tail"
    )


async def _send(
    request: web.Request, chunks: AsyncIterator[bytes], headers: Mapping[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:  # the reader hung up
        pass
    except MaoError as exc:  # the answer has begun: it ends where the source failed
        log.info("sending a step log stopped: %s", exc.message)
    return response


async def _live(
    request: web.Request,
    logs: StepLogs,
    run_id: str,
    chosen: AttemptLog,
    query: LogQuery,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """A running attempt's log as the orchestrator keeps it. Until it is being kept (the attempt
    prepares its folders), a follower waits; once it has been kept meanwhile, the kept log."""
    container = chosen.container
    assert container is not None
    if not query.follow:
        return await _send(request, await logs.reader(run_id, container, follow=False) or _nothing(), headers)
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    store = facade(request, LOGS).store
    try:
        while True:
            live = await logs.reader(run_id, container, follow=True)
            if live is not None:
                async for chunk in live:
                    await response.write(chunk)
                break
            now = [a for a in await step_attempts(store, run_id, query.step) if a.container == container]
            if not now or now[0].status != AttemptStatus.RUNNING:
                break
            await asyncio.sleep(WAIT_FOR_LOG)
        await response.write_eof()
    except ConnectionError:
        pass
    except MaoError as exc:  # the database went away mid-stream: end it there
        log.info("following the log of %s stopped: %s", container, exc.message)
    return response


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _then(first: list[bytes], rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    if rest is not None:
        async for chunk in rest:
            yield chunk
