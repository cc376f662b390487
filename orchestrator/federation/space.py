"""etcd's space: what keeps a federation from filling etcd's quota, and what says when it is close.

etcd refuses every write once its database file reaches ``--quota-backend-bytes`` (2 GiB by default;
``MAO_ETCD_QUOTA_BYTES`` says what it is here) and raises a ``NOSPACE`` alarm that stays until an
operator disarms it: the federation then stops (no lock, no registration, no tick). The file grows
only when the data in it (live keys and the history compaction has not dropped yet) outgrows the
pages it has; freed pages are reused. So the bound is on the bytes in use, by two rules:

- every ``CHECK_EVERY`` seconds each instance reads the size of the database it talks to (etcd's
  status) and its alarms;
- when the bytes in use reach half the quota (``HIGH_WATER``), the instance compacts etcd's history up
  to the current revision at once (``Compactor.compact_once(keep=0)``, at most once a check), and its gateway refuses new raw entries (503 ``etcd_near_quota``) until they are below
  it again. Raw entries expire within ``MAO_RAW_TTL`` and their history goes with the compaction, so
  the bytes in use come down by themselves.

Between two checks a federation of N instances writes at most N x (CHECK_EVERY + the budget's burst)
x ``MAO_GATEWAY_BYTES_PER_SECOND`` through its gateways (N x 3.5 MiB with the defaults): 100
instances stay under 350 MiB, far below the other half of a 2 GiB quota. docs/operations.md says
what to do when it is reached all the same (a quota set lower than etcd's, another writer).

``GET /health`` answers 503 for etcd when a ``NOSPACE`` alarm is raised or the file is at
``NEAR_QUOTA`` of the quota or more; ``/metrics`` carries the sizes and alarms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ..errors import MaoError, Unavailable
from ..services import LoopService
from . import keys
from .compaction import Compactor
from .etcd import Etcd

log = logging.getLogger(__name__)

CHECK_EVERY = 10.0
HIGH_WATER = 0.5  # of the quota, in use: compact now, the gateway pauses
NEAR_QUOTA = 0.9  # of the quota, the file: GET /health says etcd is not ok
COMPACT_PAUSE = CHECK_EVERY
RELEASE_WAIT = 0.3  # etcd commits its backend every 100 ms
OPERATIONS = 'docs/operations.md, "etcd\'s quota"'


class EtcdNearQuota(Unavailable):
    code = "etcd_near_quota"


@dataclass(frozen=True)
class Reading:
    db_bytes: int
    in_use_bytes: int
    alarms: tuple[str, ...]


class EtcdSpace(LoopService):
    what = "etcd space check"
    interval = CHECK_EVERY
    quiet = (MaoError,)  # etcd away: its client says so once, the next round tries again

    def __init__(self, etcd: Etcd, quota: int, compactor: Compactor, instance: str = "") -> None:
        self.etcd = etcd
        self.instance = instance
        self.quota = quota
        self.compactor = compactor
        self.reading: Reading | None = None
        self._compacted_at = 0.0

    async def read(self) -> Reading:
        db_bytes, in_use = await self.etcd.space()
        reading = Reading(db_bytes, in_use, tuple(sorted(set(await self.etcd.alarms()))))
        self.reading = reading
        return reading

    def problem(self, reading: Reading) -> str | None:
        """Why etcd is not ok for the federation's writes, or None."""
        if "NOSPACE" in reading.alarms:
            return (
                f"etcd raised a NOSPACE alarm (its database reached its quota of {_mib(self.quota)}): it "
                f"refuses every write until an operator compacts, defragments and disarms it ({OPERATIONS})"
            )
        if "CORRUPT" in reading.alarms:
            return f"etcd raised a CORRUPT alarm: a member's data differs from the others' ({OPERATIONS})"
        if reading.db_bytes >= NEAR_QUOTA * self.quota:
            return (
                f"etcd's database is {_mib(reading.db_bytes)} of its {_mib(self.quota)} quota "
                f"({_mib(reading.in_use_bytes)} in use): compact and defragment it before it refuses "
                f"writes ({OPERATIONS})"
            )
        return None

    def refuse_gateway_writes(self) -> None:
        """``EtcdNearQuota`` while the last reading had half the quota in use (no I/O here)."""
        reading = self.reading
        if reading is not None and (
            reading.in_use_bytes >= HIGH_WATER * self.quota or "NOSPACE" in reading.alarms
        ):
            raise EtcdNearQuota(
                f"etcd holds {_mib(reading.in_use_bytes)} of its {_mib(self.quota)} quota: the gateway "
                "takes no new entries until older ones expire and are compacted away (seconds to minutes)",
                headers={"Retry-After": str(int(CHECK_EVERY * 3))},
            )

    async def check_once(self) -> Reading:
        reading = await self.read()
        if reading.in_use_bytes >= HIGH_WATER * self.quota:
            now = time.monotonic()
            if now - self._compacted_at >= COMPACT_PAUSE:
                self._compacted_at = now
                log.warning(
                    "etcd holds %s of its %s quota: compacting its history up to now, and the gateway "
                    "pauses until it is below half",
                    _mib(reading.in_use_bytes),
                    _mib(self.quota),
                )
                if await self.compactor.compact_once(keep=0) is not None:
                    reading = await self._after_compaction()
        return reading

    async def _after_compaction(self) -> Reading:
        """etcd's backend gives the pages a compaction freed back at its next write (not at the
        compaction itself): one small write once the compaction has run, then read again, so that
        the gateway resumes as soon as there is room, even in a federation that writes nothing else."""
        await asyncio.sleep(RELEASE_WAIT)
        await self.etcd.put(keys.SPACE + (self.instance or "unnamed"), {"compacted": time.time()})
        await asyncio.sleep(RELEASE_WAIT)
        return await self.read()

    async def run_once(self) -> str | None:
        await self.check_once()  # says what it does about a full etcd itself
        return None


def _mib(size: int) -> str:
    return f"{size / 1024**2:.0f} MiB"
