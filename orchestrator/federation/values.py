"""The one decoding edge for what etcd holds: bytes in, a JSON value or the reason there is none.

Anyone holding a federation certificate (and, without TLS, anyone reaching etcd's port) can put any
bytes under any key. Every value this instance reads from etcd (``get``, listings, watches) is decoded
here, once, with the same bounds, so that no reader further in ever meets a value that would make it
raise:

- at most ``MAX_VALUE_BYTES`` (etcd's own default request limit is 1.5 MiB; anything larger was put
  into an etcd configured otherwise, and no MAO instance writes that much into one key);
- UTF-8 JSON (the prototype's Python ``repr`` values, binary data: not decodable), without ``NaN`` or
  ``Infinity`` (not JSON: a client reading our answers would choke on them), without integers of
  more than 4,300 digits (Python refuses to convert them), without lone UTF-16 surrogates (they
  cannot be encoded again: an answer carrying one would fail half-way);
- nested at most ``MAX_NESTING`` levels of arrays and objects: Python's ``json`` recurses once per
  level and shares the interpreter's recursion limit with whatever stack it runs on, so a value
  nested ~950 deep decodes in one place and raises ``RecursionError`` in another.

A key that is not UTF-8 has no name to act on and is refused the same way. Readers skip what is
refused: listings answer the rest, watches move past it, and a single ``get`` reports it (the
registries answer 502 naming the key). ``warn_once`` says so once per key and version, never at
every re-list or resync.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("orchestrator.federation.etcd")

MAX_VALUE_BYTES = 2 * 1024 * 1024
# The gateway refuses deeper values on write (gateway/limits.py): far below the recursion limit, any
# value of this depth can be encoded and decoded anywhere.
MAX_NESTING = 100
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_WARNED_KEEP = 10_000


@dataclass(frozen=True)
class Decoded:
    """A value read from etcd: ``value`` when decodable, else ``problem`` says why not."""

    value: Any = None
    problem: str | None = None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_value(raw: bytes | None) -> Decoded:
    """``raw`` as JSON within the bounds above; never raises. Empty bytes decode to None (a key put
    with no value)."""
    if not raw:
        return Decoded(None)
    if len(raw) > MAX_VALUE_BYTES:
        return Decoded(problem=f"{len(raw)} bytes, more than the {MAX_VALUE_BYTES} a value may have")
    try:
        # Strict UTF-8 first: json.loads on bytes would also take UTF-16 and encoded surrogates.
        value = json.loads(raw.decode(), parse_constant=_refuse_constant)
    except RecursionError:
        return Decoded(problem=f"nested too deeply (at most {MAX_NESTING} levels)")
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError and json's errors are ValueErrors
        return Decoded(problem=f"not JSON ({_first_line(exc)})")
    except Exception as exc:  # noqa: BLE001 - whatever the bytes hold, the reader goes on
        return Decoded(problem=f"cannot be decoded ({type(exc).__name__})")
    problem = shape_problem(value, check_strings=_SURROGATE_ESCAPE.search(raw) is not None)
    return Decoded(problem=problem) if problem else Decoded(value)


def shape_problem(value: Any, limit: int = MAX_NESTING, check_strings: bool = True) -> str | None:
    """Why ``value`` cannot travel on (nested deeper than ``limit``, or a string that is not valid
    Unicode), walked level by level without recursion; None when it can."""
    level = [value]
    depth = 0
    while level:
        if check_strings:
            for item in level:
                if isinstance(item, str) and not _encodable(item):
                    return "holds a string that is not valid Unicode (a lone surrogate)"
                if isinstance(item, dict) and not all(_encodable(k) for k in item):
                    return "holds a key that is not valid Unicode (a lone surrogate)"
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            return None
        depth += 1
        if depth > limit:
            return f"nested too deeply (at most {limit} levels of arrays and objects)"
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return None


def decode_key(raw: bytes) -> str | None:
    """A key as text; None when it is not UTF-8 (written by something other than MAO)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def encode_value(value: Any) -> bytes:
    """What this instance writes: compact JSON, keys sorted."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:120]


_warned: OrderedDict[tuple[str, int], None] = OrderedDict()


def warn_once(key: str, revision: int, problem: str) -> None:
    """Log that the value of ``key`` at ``revision`` is skipped, once per key and version."""
    marker = (key, revision)
    if marker in _warned:
        return
    _warned[marker] = None
    if len(_warned) > _WARNED_KEEP:
        _warned.popitem(last=False)
    log.warning("skipping the etcd value of %s (version %d): %s", shown_key(key), revision, problem)


def shown_key(key: str) -> str:
    """A key as it may appear in a log line or a message: bounded, control characters escaped."""
    text = key if len(key) <= 300 else key[:300] + "..."
    return text.encode("unicode_escape", errors="backslashreplace").decode("ascii", errors="replace")
