"""Insights: what a step tells the outside world, published under ``/mao/v1/insights/<tool>``.

After a step succeeds, an ``insights.json`` at the top of its output folder that is valid JSON of at
most 256 KiB, nesting arrays and objects at most ``MAX_NESTING`` levels deep, is published as ``{value, tool, pipeline, run, step, instance, commit, published_at}``
(the latest one of each tool stays; ``/read`` returns it). Anything else is recorded in the step's
``insights`` field ("ignored: <why>") and never fails the step.

The file is written by the tool, so it is read defensively: not followed if it is a symbolic link
(a tool could point it at a file of the host), only if it is a regular file (a FIFO would block
the read), and never more than the limit plus one byte.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import EtcdUnavailable
from ..federation import keys
from ..federation.etcd import Etcd
from .limits import MAX_NESTING, nested_too_deeply

INSIGHTS_FILE = "insights.json"
MAX_INSIGHTS_BYTES = 256 * 1024
PUBLISHED = "published"
TOO_DEEP = f"ignored: nested too deeply (at most {MAX_NESTING} levels of arrays and objects)"


@dataclass(frozen=True)
class Insights:
    value: Any = None
    ignored: str | None = None  # why the file is not published


Stamp = tuple[int, int, int, int]


def insights_stamp(folder: Path) -> Stamp | None:
    """What ``insights.json`` in ``folder`` is now (device, inode, mtime, size), None when absent:
    taken before the tool's container, so that a file that only came in with the work folder (from
    the node branch, e.g. ground-truth's) is not published as this attempt's. Blocking."""
    try:
        info = os.lstat(folder / INSIGHTS_FILE)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size


def read_insights(folder: Path, before: Stamp | None = None) -> Insights | None:
    """The step's insights (None when it wrote no ``insights.json``: absent, or still exactly the
    file ``before`` describes). Blocking: run it in a thread."""
    if before is not None and insights_stamp(folder) == before:
        return None
    try:
        fd = os.open(folder / INSIGHTS_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Insights(ignored="ignored: insights.json is a symbolic link")
        return Insights(ignored=f"ignored: insights.json cannot be read ({exc.strerror})")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return Insights(ignored="ignored: insights.json is not a regular file")
    with os.fdopen(fd, "rb") as file:
        data = file.read(MAX_INSIGHTS_BYTES + 1)
    if len(data) > MAX_INSIGHTS_BYTES:
        size = max(info.st_size, len(data))
        return Insights(
            ignored=f"ignored: {math.ceil(size / 1024)} KiB is over the {MAX_INSIGHTS_BYTES // 1024} KiB limit"
        )
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError) as exc:
        return Insights(ignored=f"ignored: not valid JSON ({_first_line(exc)})")
    except RecursionError:  # json recurses once per level
        return Insights(ignored=TOO_DEEP)
    if nested_too_deeply(value):  # parsed here, but etcd's watchers and /read could not decode it
        return Insights(ignored=TOO_DEEP)
    return Insights(value=value)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


class InsightsPublisher:
    def __init__(self, etcd: Etcd, instance: str) -> None:
        self.etcd = etcd
        self.instance = instance

    async def publish(
        self, insights: Insights, *, tool: str, pipeline: str, run: str, step: str, commit: str | None
    ) -> str:
        """Publish (or not) and return what the step record says about it."""
        if insights.ignored is not None:
            return insights.ignored
        record = {
            "value": insights.value,
            "tool": tool,
            "pipeline": pipeline,
            "run": run,
            "step": step,
            "instance": self.instance,
            "commit": commit,
            "published_at": datetime.now(UTC).isoformat(),
        }
        try:
            await self.etcd.put(keys.insight(tool), record)
        except EtcdUnavailable as exc:
            return f"not published: {exc.message[:300]}"
        return PUBLISHED
