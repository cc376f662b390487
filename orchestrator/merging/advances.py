"""Announcing that a dataset's ground-truth advanced: the key data triggers watch.

Every merge into ground-truth (a step's vote, a queued merge done later, the gateway's raw entries)
puts ``/mao/v1/ground-truth/<dataset>`` = ``{commit, instance, pipeline, run, merged_at}`` while it
still holds the dataset's lock, so the puts come in the order of the merges. Each put is a new etcd
revision: watchers see one event per advance (``federation.watch.PrefixWatch`` may hand an event over
twice; the revision tells them apart).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from ..errors import MaoError
from ..federation import keys
from ..federation.etcd import Etcd

log = logging.getLogger(__name__)


async def announce(etcd: Etcd, dataset: str, commit: str, trailers: Mapping[str, str]) -> None:
    """Put the advance; best effort: the merge is done and pushed whatever etcd says now (a trigger
    then misses this advance, which the log says)."""
    value = {
        "commit": commit,
        "instance": trailers.get("MAO-Instance"),
        "pipeline": trailers.get("MAO-Pipeline"),
        "run": trailers.get("MAO-Run"),
        "merged_at": datetime.now(UTC).isoformat(),
    }
    try:
        await etcd.put(keys.ground_truth(dataset), value)
    except MaoError as exc:
        log.warning(
            "ground-truth of %s advanced to %s, but the advance could not be announced (data triggers "
            "miss it): %s",
            dataset,
            commit,
            exc.message,
        )
