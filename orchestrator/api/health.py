"""``GET /`` (greeting) and ``GET /health`` (etcd, database and every backend, each ``ok`` or the
error; ``executor`` is the first ``docker`` backend's, as before backends existed)."""

from __future__ import annotations

from aiohttp import web

from .. import __version__
from ..config import Settings
from .common import ok
from .facades import HEALTH, facade
from .openapi import doc
from .schemas import Greeting, Health

routes = web.RouteTableDef()
LEGACY_WARNING = (
    "MAO_API_LEGACY_OPEN=1: this API answers without a token to every local user and program; "
    "give clients the token and unset it"
)
ETCD_INSECURE_WARNING = (
    "MAO_ETCD_INSECURE=1: etcd is reached over plain HTTP, for tests only; anything that reaches its port "
    "(a local user, a tool, a web page) reads and writes the federation's keys: use etcd's TLS "
    "(MAO_ETCD_CA, MAO_ETCD_CERT, MAO_ETCD_KEY)"
)
EXECUTOR_TCP_WARNING = (
    "MAO_EXECUTOR_INSECURE_TCP=1: the executor is reached over plain TCP, for tests only; whoever takes "
    "its port while it is down receives its token and the steps' secrets: use its Unix socket"
)


def warnings(settings: Settings) -> list[str]:
    """What this instance's configuration leaves open, logged at start (``GET /health`` carries the
    legacy-open one, which changes what every client may do)."""
    found = [LEGACY_WARNING] if settings.api_legacy_open else []
    if settings.etcd_insecure:
        found.append(ETCD_INSECURE_WARNING)
    if settings.executor_insecure_tcp and settings.executor_url.startswith("http://"):
        found.append(EXECUTOR_TCP_WARNING)
    return found


@routes.get("/")
@doc("Greeting: the instance's name and version", answer=Greeting, errors=(), tags=("health",))
async def greeting(request: web.Request) -> web.Response:
    return ok(
        {
            "message": "MAO orchestrator is running",
            "instance": facade(request, HEALTH).settings.instance_name,
            "version": __version__,
        }
    )


@routes.get("/health")
@doc(
    "etcd, database and every backend each ok or the error (503 when one is not)",
    answer=Health,
    errors=(503,),
    tags=("health",),
)
async def health(request: web.Request) -> web.Response:
    the_node = facade(request, HEALTH)
    checks, backends = await the_node.health()
    healthy = all(value == "ok" for value in checks.values()) and all(h.ok for h in backends.values())
    kinds = the_node.backends.kinds
    docker = next((name for name in backends if kinds.get(name) == "docker"), None)
    answer: dict[str, object] = {
        "status": "ok" if healthy else "degraded",
        "instance": the_node.settings.instance_name,
        **checks,
        "executor": backends[docker].message if docker else "no docker backend (MAO_BACKENDS)",
        "backends": {
            name: {"kind": kinds.get(name), "ok": h.ok, "message": h.message, **({"details": h.details} if h.details else {})}
            for name, h in backends.items()
        },
    }
    warnings = facade(request, HEALTH).warnings()
    if facade(request, HEALTH).settings.api_legacy_open:
        warnings = [LEGACY_WARNING, *warnings]
    if warnings:
        answer["warnings"] = warnings
    return ok(answer, status=200 if healthy else 503)
