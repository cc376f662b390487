"""What a gateway request may name: keys confined, by construction, to the raw and insights namespaces.

A key is path-like: segments of letters, digits, ``.``, ``_`` and ``-`` (starting with a letter or digit)
joined by ``/``; no empty segment, no ``..``, at most ``MAX_SEGMENTS`` segments and
``MAX_KEY_LENGTH`` characters. Every accepted key is turned into ``/mao/v1/raw/<key>`` or
``/mao/v1/insights/<key>`` and nothing else, so no request can reach members, locks, registries,
schedules or audits: a key such as ``members/x`` is simply ``raw/members/x``.

Clients may name the namespace (``raw/<key>``, ``insights/<key>``) or not (a bare key): ``/write``
always writes raw entries; ``/read`` and ``/inspect`` look in insights first, then in raw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BadRequest
from ..federation import keys

MAX_KEY_LENGTH = 256
MAX_SEGMENTS = 8
RAW, INSIGHTS = "raw", "insights"
NAMESPACES = {RAW: keys.RAW, INSIGHTS: keys.INSIGHTS}
_KEY_OF = {RAW: keys.raw, INSIGHTS: keys.insight}
_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class GatewayKey:
    namespace: str  # "raw" or "insights"
    path: str  # the key inside the namespace; "" for the whole namespace (inspect only)

    @property
    def etcd_key(self) -> str:
        return _KEY_OF[self.namespace](self.path)

    @property
    def shown(self) -> str:
        """How clients see it: ``raw/<path>`` or ``insights/<path>``."""
        return f"{self.namespace}/{self.path}" if self.path else self.namespace


def key_problem(path: object) -> str | None:
    """Why ``path`` is not a valid key inside a namespace, or None when it is."""
    if not isinstance(path, str):
        return "key must be a string"
    shown = path if len(path) <= 60 else path[:57] + "..."
    if not path:
        return "key must not be empty"
    if len(path) > MAX_KEY_LENGTH:
        return f"key is {len(path)} characters long; at most {MAX_KEY_LENGTH} are allowed"
    segments = path.split("/")
    if len(segments) > MAX_SEGMENTS:
        return f"key {shown!r} has {len(segments)} segments; at most {MAX_SEGMENTS} are allowed"
    if ".." in path or not all(_SEGMENT_RE.fullmatch(segment) for segment in segments):
        return (
            f"invalid key {shown!r}: use segments of letters, digits, '.', '_' or '-' (each starting "
            "with a letter or digit) joined by '/', without '..', a leading '/' or an empty segment"
        )
    return None


def _checked(path: object) -> str:
    if problem := key_problem(path):
        raise BadRequest(problem, code="invalid_key")
    assert isinstance(path, str)
    return path


def _split(key: object) -> tuple[str | None, str]:
    """(namespace named by the client or None, the rest)."""
    if isinstance(key, str):
        for namespace in NAMESPACES:
            if key == namespace:
                return namespace, ""
            if key.startswith(namespace + "/"):
                return namespace, key[len(namespace) + 1 :]
    return None, key  # type: ignore[return-value]  # checked by the caller


def write_key(key: object) -> GatewayKey:
    """The raw entry ``/write`` stores: ``<key>`` or ``raw/<key>``."""
    namespace, path = _split(key)
    if namespace == INSIGHTS:
        raise BadRequest(
            "insights are published by pipeline steps (an insights.json in their output), not written "
            "through the gateway: write raw entries (a bare key or raw/<key>)",
            code="invalid_key",
        )
    return GatewayKey(RAW, _checked(path))


def read_keys(key: object, *, whole_namespace: bool = False) -> list[GatewayKey]:
    """Where ``/read`` (or, with ``whole_namespace``, ``/inspect``) looks, in order."""
    namespace, path = _split(key)
    if namespace is not None:
        if path == "" and whole_namespace:
            return [GatewayKey(namespace, "")]
        return [GatewayKey(namespace, _checked(path))]
    path = _checked(path)
    return [GatewayKey(INSIGHTS, path), GatewayKey(RAW, path)]


def from_etcd_key(etcd_key: str) -> GatewayKey | None:
    """The gateway key of an etcd key under one of the namespaces (None for anything else)."""
    for namespace, prefix in NAMESPACES.items():
        if etcd_key.startswith(prefix):
            return GatewayKey(namespace, etcd_key[len(prefix) :])
    return None
