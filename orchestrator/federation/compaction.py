"""Periodic compaction of etcd's history (docs/security.md, "etcd's size").

etcd keeps every version of every key until its history is compacted; without it, each gateway
write, lease renewal and lock stays on disk forever. Every ``MAO_ETCD_COMPACT_INTERVAL`` seconds each
instance compacts the history up to ``MAO_ETCD_COMPACT_KEEP`` revisions before the current one.
Several instances doing so is harmless: compacting to a revision already compacted is a no-op.

What must stay: the raw listener resumes its watch from a saved revision (up to ``MAO_RAW_TTL``
seconds of history) and the shared watches resume from the revision they read. The default keeps
100,000 revisions, hours of a busy federation's writes; a watch that finds its revision compacted
anyway lists the prefix again (``HistoryCompacted``), so compaction never loses state, at worst
entries whose lease expired during a long outage.

Compaction frees history, not disk: etcd's file shrinks only when defragmented, an operator's step
(``etcdctl defrag``, one member at a time; see docs/security.md).
"""

from __future__ import annotations

import logging

from ..errors import MaoError
from ..services import LoopService
from .etcd import Etcd

log = logging.getLogger(__name__)


class Compactor(LoopService):
    what = "etcd compaction"
    quiet = (MaoError,)  # etcd away: its client says so once, the next round tries again

    def __init__(self, etcd: Etcd, interval: float, keep: int) -> None:
        self.etcd = etcd
        self.interval = self.first_wait = interval
        self.keep = keep
        self.compacted = 0  # the revision this instance last compacted up to

    async def compact_once(self, keep: int | None = None) -> int | None:
        """Compact up to ``keep`` (default ``self.keep``) revisions before the current one; the
        revision, or None when there was nothing new to compact. ``keep=0``: all history (``space``
        when etcd nears its quota)."""
        keep = self.keep if keep is None else keep
        target = await self.etcd.revision() - keep
        if target <= self.compacted:
            return None
        done = await self.etcd.compact(target)
        self.compacted = target
        if done:
            log.info("etcd history compacted up to revision %d (keeping %d revisions)", target, keep)
        return target if done else None

    async def start(self) -> None:
        if self.interval > 0:
            await super().start()

    async def run_once(self) -> str | None:
        await self.compact_once()  # logs what it compacted: space.py calls it too
        return None
