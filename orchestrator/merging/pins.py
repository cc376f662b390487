"""Pins: what this instance accepted of each registration its pipelines use.

When a pipeline is initialised, each tool it uses is pinned with its image and each dataset with its
master, both with the owner they had (``store.pins``). From then on a step uses a registration only
while it still says what was pinned: a tool whose image or owner changed, a dataset whose master or
owner changed, one that is gone or no longer checks out (its seal: ``federation.ownership``) fails
the run at once with ``registration_changed``, naming each difference, before any container starts
and before any private variable leaves this instance. ``POST /pipeline/{name}/accept`` (``maoctl
pipeline accept``) shows the differences and pins what is registered now; so does initialising the
pipeline again, an explicit act of its operator. ``POST /registry/{kind}/{name}/accept`` accepts one
registration in every scope that pinned it.

The same pins say which masters this instance accepted: it pushes to and reads from a dataset's master
only through them (a step's datasets, queued merges, the check that a ground-truth advance is real,
audits, the history route). The gateway's raw listener pins its dataset in the scope ``:raw`` when it
first uses it.

What is pinned is the registration as written (the image reference as registered, the master URL),
with its owner, revision and proof for the operator's view; the image id the executor resolves is not
compared (the step cache already follows a tag that moved, and an engine may pull it afresh).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..domain.pipeline import Dataset, Pipeline, Tool
from ..errors import Conflict, MalformedEntry, NotFound
from ..federation.registry import Registered
from ..store.pins import RAW_SCOPE, PinRecord, PinStore, pin_record
from .registrations import Registrations

log = logging.getLogger(__name__)

FIELD = {"tool": "image", "dataset": "master"}


@dataclass(frozen=True)
class Change:
    """One difference between a pin and the registration now."""

    kind: str
    name: str
    what: str  # "image", "master", "owner" or "registration" (gone, or no longer valid)
    pinned: str | None
    current: str | None

    def sentence(self) -> str:
        return f"{self.kind} {self.name}: {self.what} {_shown(self.pinned)} -> {_shown(self.current)}"

    def public(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "what": self.what,
            "pinned": self.pinned,
            "current": self.current,
        }


class RegistrationChanged(Conflict):
    code = "registration_changed"


def changed_error(scope: str, changes: list[Change]) -> RegistrationChanged:
    if scope == RAW_SCOPE:
        accept = f"maoctl {changes[0].kind} accept --name {changes[0].name}"
    else:
        accept = f"maoctl pipeline accept --name {scope}"
    return RegistrationChanged(
        "registration_changed: "
        + "; ".join(c.sentence() for c in changes)
        + f" (changed since this instance accepted it; review the change, then: {accept})",
        changes=[c.public() for c in changes],
    )


Current = Registered[Any] | str | None  # a registration, why it is not valid, or absent


def pin_value(kind: str, entry: Registered[Any]) -> dict[str, Any]:
    field = FIELD[kind]
    return {field: getattr(entry.value, field), **entry.provenance.public()}


def compare(kind: str, name: str, pin: dict[str, Any], current: Current) -> list[Change]:
    """The differences between what was pinned and the registration now (none: it may be used)."""
    field = FIELD[kind]
    if current is None:
        return [Change(kind, name, "registration", _described(kind, pin), "no longer registered")]
    if isinstance(current, str):
        return [Change(kind, name, "registration", _described(kind, pin), f"not valid: {current}")]
    changes = []
    now = getattr(current.value, field)
    if pin.get(field) != now:
        changes.append(Change(kind, name, field, _text(pin.get(field)), now))
    if pin.get("owner") != current.provenance.owner:
        changes.append(Change(kind, name, "owner", _owner(pin.get("owner")), _owner(current.provenance.owner)))
    return changes


class Pins:
    def __init__(self, store: PinStore, registrations: Registrations) -> None:
        self.store = store
        self.registrations = registrations
        self._scopes: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}  # scope -> pins, as stored
        # First-use pins being written, by (scope, kind, name): a second first use waits for it.
        self._pinning: dict[tuple[str, str, str], asyncio.Future[dict[str, Any]]] = {}

    # -- reading registrations through the pins -------------------------------------------------
    async def tool(self, scope: str, name: str) -> Tool:
        """The tool as registered now, if it is what ``scope`` accepted (``RegistrationChanged``)."""
        entry = await self._checked(scope, "tool", name)
        assert isinstance(entry.value, Tool)
        return entry.value

    async def dataset(self, scope: str, name: str) -> Dataset:
        entry = await self._checked(scope, "dataset", name)
        assert isinstance(entry.value, Dataset)
        return entry.value

    async def changes(self, pipeline: Pipeline) -> list[Change]:
        """Every difference between the pipeline's pins and its registrations now."""
        used = [(kind, name) for kind, names in (("tool", pipeline.tools()), ("dataset", pipeline.datasets()))
                for name in names]  # fmt: skip
        # The registrations read at once (one etcd round trip's wait, not one per registration); the
        # pins then in order (a missing one is written).
        read = await asyncio.gather(*(self.current(kind, name) for kind, name in used), return_exceptions=True)
        changes: list[Change] = []
        for (kind, name), current in zip(used, read, strict=True):
            if isinstance(current, BaseException):  # every read retrieved; the first failure told
                raise current
            pin = await self._pin(pipeline.name, kind, name, current)
            if pin is not None:
                changes += compare(kind, name, pin, current)
        return changes

    async def current(self, kind: str, name: str) -> Current:
        try:
            if kind == "tool":
                return await self.registrations.tool_entry(name)
            return await self.registrations.dataset_entry(name)
        except MalformedEntry as exc:
            return exc.message

    # -- accepting ------------------------------------------------------------------------------
    def snapshot(self, kind: str, entries: Iterable[Registered[Any]]) -> list[tuple[str, str, dict[str, Any]]]:
        """Pins of registrations just read (``PipelineService.init`` stores them with the pipeline)."""
        return [(kind, entry.value.name, pin_value(kind, entry)) for entry in entries]

    async def ensure(self, scope: str, kind: str, name: str) -> None:
        """Pin a registration in ``scope`` as it is now unless it is pinned there already (a data
        trigger's dataset: its advances are checked on the master accepted when it was armed)."""
        await self._pin(scope, kind, name, await self.current(kind, name))

    def forget(self, scope: str) -> None:
        """The scope's pins changed in the database (init, delete): read them again."""
        self._scopes.pop(scope, None)

    async def accept(self, pipeline: Pipeline, dry_run: bool = False) -> list[Change]:
        """Pin what the pipeline's registrations say now; the differences that were accepted."""
        changes = await self.changes(pipeline)
        if dry_run or not changes:
            return changes
        await self._repin(pipeline.name, {(c.kind, c.name) for c in changes})
        log.info(
            "pipeline %s: the operator accepted %s", pipeline.name, "; ".join(c.sentence() for c in changes)
        )
        return changes

    async def accept_registration(self, kind: str, name: str, dry_run: bool = False) -> dict[str, list[Change]]:
        """Accept one registration as it is now in every scope that pinned it: {scope: changes}."""
        current = await self.current(kind, name)
        accepted: dict[str, list[Change]] = {}
        for record in await self.store.of(kind, name):
            changes = compare(kind, name, record.value, current)
            if changes:
                accepted[record.scope] = changes
        if not accepted or dry_run:
            return accepted
        if not isinstance(current, Registered):
            raise Conflict(
                f"{kind} {name!r} cannot be accepted: it is "
                + (f"not valid ({current})" if current else "no longer registered"),
                code="nothing_to_accept",
            )
        await self.store.put([pin_record(scope, kind, name, pin_value(kind, current)) for scope in accepted])
        for scope in accepted:
            self.forget(scope)
        log.info("%s %s: the operator accepted it as registered now in %s", kind, name, ", ".join(accepted))
        return accepted

    async def pins(self, scope: str) -> list[PinRecord]:
        return await self.store.scope(scope)

    # -- masters --------------------------------------------------------------------------------
    async def master(self, dataset: str, scope: str | None = None) -> str | None:
        """The master this instance accepted for ``dataset``: ``scope``'s pin, else the newest pin
        of any scope; None when it never accepted one (then it reads and pushes nothing there)."""
        records = await self.store.of("dataset", dataset)
        own = [r for r in records if r.scope == scope]
        chosen = own or sorted(records, key=lambda r: r.pinned_at, reverse=True)
        master = chosen[0].value.get("master") if chosen else None
        return master if isinstance(master, str) else None

    async def masters(self, dataset: str) -> set[str]:
        """Every master of ``dataset`` some scope here accepted."""
        return {
            str(r.value["master"])
            for r in await self.store.of("dataset", dataset)
            if isinstance(r.value.get("master"), str)
        }

    # -- inside ---------------------------------------------------------------------------------
    async def _checked(self, scope: str, kind: str, name: str) -> Registered[Any]:
        current = await self.current(kind, name)
        pin = await self._pin(scope, kind, name, current)
        if pin is None:
            raise NotFound(f"{kind} {name!r} is no longer registered")
        changes = compare(kind, name, pin, current)
        if changes:
            raise changed_error(scope, changes)
        assert isinstance(current, Registered)
        return current

    async def _pin(self, scope: str, kind: str, name: str, current: Current) -> dict[str, Any] | None:
        """The scope's pin; a registration used without one (a pipeline initialised before pins
        existed, the raw listener's first batch) is pinned as it is now, once."""
        pins = self._scopes.get(scope)
        if pins is None:
            loaded = {(r.kind, r.name): r.value for r in await self.store.scope(scope)}
            # Reads of one scope run side by side (a step's registrations, parallel steps): the first
            # load kept, so a pin written below is never lost to a second load made before it.
            pins = self._scopes.setdefault(scope, loaded)
        pin = pins.get((kind, name))
        if pin is None and isinstance(current, Registered):
            pin = await self._first_pin(scope, kind, name, current, pins)
        return pin

    async def _first_pin(
        self,
        scope: str,
        kind: str,
        name: str,
        current: Registered[Any],
        pins: dict[tuple[str, str], dict[str, Any]],
    ) -> dict[str, Any]:
        """Pin ``current`` as the scope's first use of it. Two first uses at once (a step whose input
        is its output, parallel steps) write one pin: the second takes the first's, and is checked
        against it like any later use (two writes would race: a duplicate key on PostgreSQL, and a
        registration swapped between the two reads pinned as swapped)."""
        key = (scope, kind, name)
        if (under_way := self._pinning.get(key)) is not None:
            return await asyncio.shield(under_way)
        writing: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        writing.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody may be waiting
        self._pinning[key] = writing
        try:
            pin = pin_value(kind, current)
            await self.store.put([pin_record(scope, kind, name, pin)])
            pins[(kind, name)] = pin
            writing.set_result(pin)
        except BaseException as exc:
            writing.set_exception(
                exc if isinstance(exc, Exception) else RuntimeError(f"pinning {kind} {name} stopped")
            )
            raise
        finally:
            del self._pinning[key]
        log.info("%s: pinned %s %s as registered now (%s)", scope, kind, name, _described(kind, pin))
        return pin

    async def _repin(self, scope: str, wanted: set[tuple[str, str]]) -> None:
        records = []
        for kind, name in sorted(wanted):
            current = await self.current(kind, name)
            if isinstance(current, Registered):
                records.append(pin_record(scope, kind, name, pin_value(kind, current)))
        if len(records) != len(wanted):
            missing = sorted(f"{k} {n}" for k, n in wanted - {(r.kind, r.name) for r in records})
            raise Conflict(
                f"cannot accept: {', '.join(missing)} is no longer registered or not valid; register it "
                "again (its owner), or change the pipeline and initialise it again",
                code="nothing_to_accept",
            )
        await self.store.put(records)
        self.forget(scope)


def _described(kind: str, pin: dict[str, Any]) -> str:
    return f"{FIELD[kind]} {_text(pin.get(FIELD[kind]))}, owner {_owner(pin.get('owner'))}"


def _owner(owner: Any) -> str:
    return str(owner) if isinstance(owner, str) else "nobody"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _shown(value: str | None) -> str:
    return "-" if value is None else value
