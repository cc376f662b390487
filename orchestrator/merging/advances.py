"""Announcing that a dataset's ground-truth advanced: the key data triggers watch.

Every merge into ground-truth (a step's vote, a queued merge done later, the gateway's raw entries)
puts ``/mao/v1/ground-truth/<dataset>`` = ``{commit, instance, pipeline, run, merged_at}`` in the
transaction that releases the dataset's lock, so the puts come in the order of the merges. Each put is
a new etcd revision: watchers see one event per advance (``federation.watch.PrefixWatch`` may hand an
event over twice; the revision tells them apart).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from ..datasets.bare import OID_RE
from ..errors import MaoError
from ..federation import keys
from ..federation.answers import KeyValue
from ..federation.etcd import Etcd
from ..federation.locks import HeldLock, Locks

log = logging.getLogger(__name__)


def announced_commit(last: KeyValue | None) -> str | None:
    """The commit an advance announced (read under the lock: no merge that keeps the lock came
    since); None when etcd has none, or none that reads as a commit id."""
    value = last.value if last is not None else None
    commit = value.get("commit") if isinstance(value, dict) else None
    return commit if isinstance(commit, str) and OID_RE.fullmatch(commit) else None


async def announce(
    locks: Locks,
    held: HeldLock,
    etcd: Etcd,
    dataset: str,
    commit: str,
    trailers: Mapping[str, str],
    last: KeyValue | None,
) -> None:
    """Put the advance and release ``held`` in one transaction (``last``: the advance as the lock
    found it). Best effort: the merge is done and pushed whatever etcd says now (a trigger then misses
    this advance, which the log says)."""
    key = keys.ground_truth(dataset)
    value = {
        "commit": commit,
        "instance": trailers.get("MAO-Instance"),
        "pipeline": trailers.get("MAO-Pipeline"),
        "run": trailers.get("MAO-Run"),
        "merged_at": datetime.now(UTC).isoformat(),
    }
    try:
        if await locks.release(held, {key: value}):
            return
        # The lock ran out before its release: announced unless an advance was announced since the
        # lock was taken. That one was merged later, onto this merge (the push is leased on the tip
        # it merged onto), so it contains this advance: announcing this one after it would move the
        # key back and fire triggers out of order.
        if await etcd.put_if(key, value, last.mod_revision if last is not None else 0):
            return
        log.warning(
            "ground-truth of %s advanced to %s, but a later advance, which contains it, was announced "
            "first (this instance's lock ran out before its release): data triggers see that one",
            dataset,
            commit,
        )
    except MaoError as exc:
        log.warning(
            "ground-truth of %s advanced to %s, but the advance could not be announced (data triggers "
            "miss it): %s",
            dataset,
            commit,
            exc.message,
        )
