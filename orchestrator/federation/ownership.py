"""Who owns a registration (a tool, a dataset, a pipeline), and how a reader knows.

A registration is owned by the instance that created it. Its value in etcd carries ``owner``,
``revision`` (1 at creation, one more at each change) and ``signed_at``, sealed by the instance that
wrote it (``seals``): over TLS signed with that instance's etcd client certificate, so that no other
member can write a value that passes as the owner's. The fields several instances change are left
out of the seal (``SHARED``): a dataset's ``nodes`` (each instance adds its node branches), a
pipeline registration's ``instances`` and ``updated_at`` (each instance that initialises it joins).

Only the owner changes or deletes a registration through the API (403 ``not_owner`` for the others);
it hands ownership over explicitly (``POST /registry/{kind}/{name}/owner``), which it seals, naming
the new owner. A registration written before owners existed has none (``owner`` absent): any instance
may claim it, once, by registering it again or with ``maoctl registry claim``; until then it is read
as it is (``proof: "none"``). A value whose ownership does not check out (an owner that is not a
name, a seal that does not verify) is not a registration: lists skip it, reading it alone is a 502,
and any instance may replace it through the API (as one that cannot be decoded).

What the seal cannot stop, since every certificate may write every key: a member deleting a key or
putting back an older value its owner once sealed. The pins (``merging.pins``) catch both for the
pipelines of every instance that uses the registration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from executor.wire.names import name_problem

from ..errors import Forbidden
from .seals import SEAL_FIELDS, Sealer

MAX_REVISION = 2**53  # JSON numbers stay exact up to here in every client


class Kind(StrEnum):
    TOOL = "tool"
    DATASET = "dataset"
    PIPELINE = "pipeline"

    @property
    def plural(self) -> str:
        return f"{self.value}s"


SHARED: dict[Kind, frozenset[str]] = {
    Kind.TOOL: frozenset(),
    Kind.DATASET: frozenset({"nodes"}),
    Kind.PIPELINE: frozenset({"instances", "updated_at"}),
}
OWNERSHIP_FIELDS = ("owner", "revision", "signed_at", "signed_by", *sorted(SEAL_FIELDS))
UNOWNED = "none"


class NotOwner(Forbidden):
    code = "not_owner"


@dataclass(frozen=True)
class Provenance:
    """Who owns a registration and how that is known: ``proof`` is ``signature`` (verified against
    the federation CA), ``claim`` (etcd without TLS: a name anyone reaching etcd could have written)
    or ``none`` (registered before owners existed: nobody owns it)."""

    owner: str | None
    revision: int
    signed_by: str | None
    signed_at: str | None
    proof: str
    # The end of the signing certificate (``Seal.valid_until``): a verdict kept past it is checked again.
    valid_until: datetime | None = field(default=None, compare=False, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "revision": self.revision,
            "signed_by": self.signed_by,
            "signed_at": self.signed_at,
            "proof": self.proof,
        }


LEGACY = Provenance(None, 0, None, None, UNOWNED)


def provenance(value: Any, kind: Kind, sealer: Sealer) -> Provenance | str:
    """The ownership of a stored registration, or why it does not check out."""
    if not isinstance(value, dict):
        return "it is not a JSON object"
    if "owner" not in value and "signed_by" not in value:
        return LEGACY
    owner = value.get("owner")
    if not isinstance(owner, str) or name_problem(owner, "owner") is not None:
        return "its owner is not an instance name"
    revision = value.get("revision")
    if isinstance(revision, bool) or not isinstance(revision, int) or not 1 <= revision <= MAX_REVISION:
        return f"its revision is not a whole number from 1 to {MAX_REVISION}"
    signed_at = value.get("signed_at")
    if signed_at is not None and (not isinstance(signed_at, str) or len(signed_at) > 64):
        return "its signed_at is not a time"
    seal = sealer.check(value, SHARED[kind])
    if isinstance(seal, str):
        return seal
    return Provenance(owner, revision, seal.signed_by, signed_at, seal.proof.value, seal.valid_until)


def owned(fields: dict[str, Any], kind: Kind, owner: str, revision: int, sealer: Sealer) -> dict[str, Any]:
    """A registration's value as this instance writes it: its fields, its ownership, sealed."""
    body = {k: v for k, v in fields.items() if k not in OWNERSHIP_FIELDS}
    body.update(owner=owner, revision=revision, signed_at=datetime.now(UTC).isoformat())
    return sealer.seal(body, SHARED[kind])


def without_ownership(value: dict[str, Any]) -> dict[str, Any]:
    """A stored value without its ownership fields (what the registration itself says)."""
    return {k: v for k, v in value.items() if k not in OWNERSHIP_FIELDS}


def may_change(current: Provenance | str | None, instance: str, kind: Kind, name: str) -> int:
    """The revision this instance's change of a registration gets, or ``NotOwner``. Absent, not a
    valid registration, or never owned: anyone may (re)register it, and owns it from then on."""
    if current is None or isinstance(current, str) or current.owner is None:
        return 1 if current is None or isinstance(current, str) else current.revision + 1
    if current.owner != instance:
        raise not_owner(kind, name, current.owner)
    return current.revision + 1


def not_owner(kind: Kind, name: str, owner: str | None) -> NotOwner:
    if owner is None:
        return NotOwner(
            f"{kind} {name!r} was registered before registrations had owners: claim it first "
            f"(POST /registry/{kind.plural}/{name}/owner, maoctl registry claim)",
            owner=None,
        )
    return NotOwner(
        f"{kind} {name!r} is owned by {owner!r}: only its owner changes or deletes it (ask its operator "
        "to change it, or to hand it over: maoctl registry owner --to)",
        owner=owner,
    )
