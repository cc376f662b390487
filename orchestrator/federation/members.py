"""Who is in the federation right now: one lease-bound key per live instance.

``/mao/v1/members/<instance>`` holds ``{name, api_url, version, labels, started_at}`` and is bound to a
lease of ``MAO_MEMBER_TTL`` seconds that a heartbeat refreshes every TTL/3. An instance that dies
stops refreshing, so its key vanishes within the TTL: the key's presence *is* liveness.

Contracts:
- ``claim()`` (at start) refuses with ``NameTaken`` when a live instance holds the name. The lease id
  is remembered in ``<data_dir>/member-lease``, so an instance restarted within the TTL after a crash
  takes over the key of its own previous lease instead of locking itself out.
- When etcd does not answer at start, the instance starts anyway; the heartbeat keeps trying to
  register, and re-registers whenever its lease was lost (etcd unreachable for longer than the TTL).
- ``close()`` revokes the lease, so a clean shutdown leaves the member list at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Settings
from ..errors import Conflict, EtcdUnavailable
from ..tasks import spawn
from . import keys, records
from .answers import KeyValue
from .etcd import Etcd
from .records import MemberRecord
from .seals import Sealer

log = logging.getLogger(__name__)

VERDICTS_KEPT = 1024


class NameTaken(Conflict):
    code = "instance_name_taken"


class Membership:
    def __init__(self, etcd: Etcd, settings: Settings, sealer: Sealer | None = None) -> None:
        self.etcd = etcd
        self.settings = settings
        self.name = settings.instance_name
        self.sealer = sealer or Sealer(self.name, None)
        self.ttl = settings.member_ttl
        self.key = keys.member(self.name)
        # Sealed: no other member can write a record that passes as this instance's (seals.py).
        self.record: dict[str, Any] = self.sealer.seal(
            {
                "name": self.name,
                "api_url": settings.advertise_url,
                "version": __version__,
                "labels": dict(settings.labels),
                "started_at": datetime.now(UTC).isoformat(),
            }
        )
        self.lease: int | None = None
        self._lease_file = settings.data_dir / "member-lease"
        self._heartbeat: asyncio.Task[None] | None = None
        self._verdicts: dict[tuple[str, int, int], MemberRecord | None] = {}
        self._last_problem: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Claim the name (``NameTaken`` if a live instance holds it), then keep the claim alive.
        An unreachable etcd is not fatal: the heartbeat registers as soon as etcd answers."""
        try:
            await self._register()
        except EtcdUnavailable as exc:
            self._say(
                f"etcd is unreachable, so instance {self.name} starts without registering and keeps trying: {exc.message}"
            )
        self._heartbeat = spawn(self._keep_alive(), name="membership heartbeat")

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self.lease is not None:
            # Leaving on purpose: the key goes now rather than when the TTL runs out.
            with contextlib.suppress(EtcdUnavailable):
                await self.etcd.revoke_lease(self.lease)
                _forget_lease(self._lease_file)
                log.info("instance %s left the federation's member list", self.name)

    async def live(self) -> list[dict[str, Any]]:
        """The live instances' records, by name: each on a lease (a key without one would outlive
        its instance), under its own name and sealed by that instance; others are skipped, said once."""
        live = []
        for kv in await self.etcd.list_prefix(keys.MEMBERS):
            if (record := self._checked(kv)) is not None:
                live.append(record.model_dump())
        return live

    def _checked(self, kv: KeyValue) -> MemberRecord | None:
        """The member record, if it checks out; the verdict is kept per key version (a seal is
        verified once, not at every tick that asks who is alive)."""
        marker = (kv.key, kv.mod_revision, kv.lease)
        if kv.mod_revision and marker in self._verdicts:
            return self._verdicts[marker]
        verdict = self._check(kv)
        if kv.mod_revision:
            self._verdicts[marker] = verdict
            while len(self._verdicts) > VERDICTS_KEPT:
                self._verdicts.pop(next(iter(self._verdicts)))
        return verdict

    def _check(self, kv: KeyValue) -> MemberRecord | None:
        record = records.parse(MemberRecord, kv.key, kv.mod_revision, kv.value)
        if record is None:
            return None
        if record.name != keys.last_segment(kv.key) or kv.key != keys.member(record.name):
            records.refuse(kv.key, kv.mod_revision, f"a member record named {record.name!r} under another key")
            return None
        if not kv.lease:
            records.refuse(kv.key, kv.mod_revision, "a member record on no lease: it would outlive its instance")
            return None
        seal = self.sealer.check(kv.value, signer=record.name)
        if isinstance(seal, str):
            records.refuse(kv.key, kv.mod_revision, f"a member record not written by {record.name}: {seal}")
            return None
        return record

    # -- registration ---------------------------------------------------------------------------
    async def _register(self) -> None:
        """Bind our record to a fresh lease, taking over a key only from our own previous lease."""
        remembered = _remembered_lease(self._lease_file)
        for _ in range(5):  # a key that vanishes or appears between our read and write: read again
            current = await self.etcd.get(self.key)
            if current is not None and current.lease not in (remembered, self.lease):
                if self._checked(current) is not None:
                    raise _name_taken(self.name, current)
                # Not a record this instance's name could have written (no seal of ours, no lease,
                # not even a member record): it does not hold the name; taken over below.
                log.warning("instance %s takes over its member key from a record it did not write", self.name)
            lease = await self.etcd.grant_lease(self.ttl)
            if current is None:
                written = await self.etcd.create(self.key, self.record, lease=lease)
            else:
                written = await self.etcd.put_if(self.key, self.record, current.mod_revision, lease=lease)
            if not written:
                await self._revoke_quietly(lease)
                continue
            _remember_lease(self._lease_file, lease)
            if current is not None and current.lease != lease and current.lease in (remembered, self.lease):
                # Our previous process (killed within the TTL) or our own expired lease. Never a lease
                # a foreign record named: it may be anybody's, and revoking it would drop their keys.
                await self._revoke_quietly(current.lease)
                log.info("instance %s took over its member key from its previous lease", self.name)
            self.lease = lease
            self._last_problem = None
            log.info(
                "instance %s joined the federation's member list as %s (lease TTL %d s)",
                self.name,
                self.record["api_url"],
                self.ttl,
            )
            return
        raise EtcdUnavailable(f"member key {self.key} kept changing under us; will try again")

    async def _keep_alive(self) -> None:
        interval = max(self.ttl / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            try:
                if self.lease is None:
                    await self._register()
                    continue
                if await self.etcd.refresh_lease(self.lease) > 0:
                    self._last_problem = None
                    await self._restore_record()
                    continue
                self.lease = None
                self._say(
                    f"the member lease of {self.name} expired (etcd was unreachable for longer than "
                    f"{self.ttl} s), registering again"
                )
                await self._register()
            except NameTaken as exc:
                self._say(f"{exc.message}; this instance stays out of the member list until the name is free")
            except EtcdUnavailable as exc:
                self._say(
                    f"cannot reach etcd to keep instance {self.name} registered, will keep trying: {exc.message}"
                )
            except Exception as exc:  # noqa: BLE001 - the heartbeat must outlive any one bad beat
                # E.g. the lease file could not be written (disk full): dying here would silently drop
                # this instance from the member list while it keeps serving.
                log.exception("membership heartbeat of %s failed, will try again", self.name)
                self._say(f"could not keep instance {self.name} registered: {exc}")

    async def _restore_record(self) -> None:
        """Put our record back if something else was written over it (any member's certificate can
        write our key): the member list shows the truth again within a heartbeat."""
        current = await self.etcd.get(self.key)
        if current is not None and current.lease == self.lease and current.value == self.record:
            return
        if current is None or current.lease in (self.lease, 0) or self._checked(current) is None:
            revision = current.mod_revision if current is not None else 0
            if await self.etcd.put_if(self.key, self.record, revision, lease=self.lease):
                log.warning("instance %s put its member record back: something else was written over it", self.name)

    def _say(self, sentence: str) -> None:
        """Log a problem once, not at every heartbeat while it lasts."""
        if sentence != self._last_problem:
            log.warning("%s", sentence)
            self._last_problem = sentence

    async def _revoke_quietly(self, lease: int) -> None:
        with contextlib.suppress(EtcdUnavailable):
            await self.etcd.revoke_lease(lease)


def _name_taken(name: str, current: KeyValue) -> NameTaken:
    holder = current.value if isinstance(current.value, dict) else {}
    return NameTaken(
        f"instance name {name!r} is held by a live instance at {holder.get('api_url', '?')} "
        f"(started {holder.get('started_at', '?')}); stop that instance or choose another MAO_INSTANCE_NAME",
        holder=holder,
    )


def _remembered_lease(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _remember_lease(path: Path, lease: int) -> None:
    # Written atomically: a crash mid-write must not leave a number that is not our lease.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{lease}\n")
    os.replace(tmp, path)


def _forget_lease(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
