"""An audit's keys in etcd, and how long each lives.

```
/mao/v1/audits/<id>                              {id, dataset, file, auditor, deadline, created_at}
/mao/v1/audit-answers/<id>/<instance>/<branch>   {instance, branch, commit, sha256, size,
                                                  content | content_base64 | fetch: {commit, path}}
                                                 or {instance, branch, missing: true | error}
/mao/v1/audit-results/<id>                       the decision (see ``service``), kept 30 days
```
The record and every answer ride on one lease, granted by the auditor for the wait plus
``LEASE_MARGIN``: revoked once the result is stored, and expiring by itself if the auditor dies, so
no audit leaves anything behind. Answers are compare-and-create: an instance answers once per
branch. They live apart from the records because every instance watches ``/mao/v1/audits/`` for
records only: under it, each instance would receive every answer (up to 64 KiB each).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from executor.wire.names import name_problem

from ..datasets.files import path_problem
from ..errors import BadRequest
from ..federation import keys, records
from ..federation.answers import KeyValue
from ..federation.etcd import Etcd
from ..federation.records import AuditAnswer
from ..federation.seals import SEAL_FIELDS, Proof, Sealer

MIN_WAIT, MAX_WAIT, DEFAULT_WAIT = 5, 3600, 30
LEASE_MARGIN = 60  # seconds the temporary keys outlive the deadline: time to fetch, score and store
RESULT_TTL = 30 * 86400
INLINE_LIMIT = 64 * 1024  # larger copies are fetched from the dataset's master through git
_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def check_id(audit_id: str) -> str:
    if not _ID_RE.fullmatch(audit_id):
        raise BadRequest(f"invalid audit id {audit_id[:80]!r}: 32 hexadecimal digits", code="invalid_id")
    return audit_id


def audit_id_of(key: str) -> str | None:
    """The id when ``key`` is an audit's record."""
    rest = key.removeprefix(keys.AUDITS)
    return rest if rest != key and _ID_RE.fullmatch(rest) else None


def deadline_of(record: object) -> datetime | None:
    """An audit record's deadline; None when it is missing, not ISO 8601, or without a time zone."""
    value = record.get("deadline") if isinstance(record, dict) else None
    if not isinstance(value, str):
        return None
    try:
        deadline = datetime.fromisoformat(value)
    except ValueError:
        return None
    return deadline if deadline.utcoffset() is not None else None


def record_problem(record: object, lease: int) -> str | None:
    """Why a value under ``/mao/v1/audits/`` is no audit this instance can answer or decide (None
    when it is one). Anyone with access to etcd can write there: nothing is taken on trust."""
    if not isinstance(record, dict):
        return "it is not a JSON object"
    if not lease:
        return "it is on no lease (its answers would never be removed)"
    if deadline_of(record) is None:
        return "its deadline is missing, not ISO 8601, or without a time zone"
    if problem := name_problem(record.get("dataset"), "dataset"):
        return problem
    if problem := path_problem(record.get("file")):
        return problem
    if not isinstance(record.get("auditor"), str):
        return "its auditor is not a string"
    return None


class AuditBook:
    """The audit's keys, sealed (``federation.seals``): a record by its auditor, an answer by the
    instance that answers, a result by the auditor. A value whose seal does not check out is not
    acted on: a member cannot start an audit in another's name (that instance would decide it), nor
    answer for another instance's branch, nor store another auditor's result."""

    def __init__(self, etcd: Etcd, sealer: Sealer | None = None) -> None:
        self.etcd = etcd
        self.sealer = sealer or Sealer("unnamed", None)

    def seal(self, value: dict[str, Any]) -> dict[str, Any]:
        return self.sealer.seal(value) if self.sealer.proof is Proof.SIGNATURE else value

    def sealed_by(self, key: str, revision: int, value: Any, writer: object) -> bool:
        """Whether ``value`` was written by ``writer`` (over TLS: sealed by its certificate; without,
        a ``signed_by`` it carries must name it). Said once when not."""
        if self.sealer.proof is not Proof.SIGNATURE and not (isinstance(value, dict) and "signed_by" in value):
            return True
        seal = self.sealer.check(value, signer=writer if isinstance(writer, str) else "?")
        if isinstance(seal, str):
            records.refuse(key, revision, f"not written by {str(writer)[:80]}: {seal}")
            return False
        return True

    async def create(self, record: dict[str, Any], ttl: int) -> int:
        """Store a new audit on a fresh lease; returns the lease."""
        lease = await self.etcd.grant_lease(ttl)
        if not await self.etcd.create(keys.audit(record["id"]), self.seal(record), lease=lease):
            await self.etcd.revoke_lease(lease)
            raise BadRequest(f"audit {record['id']} exists already")  # 128 random bits: never happens
        return lease

    async def record(self, audit_id: str) -> KeyValue | None:
        """The audit's record, if its auditor wrote it (None otherwise, or when there is none)."""
        kv = await self.etcd.get(keys.audit(audit_id))
        if kv is None or kv.problem or not isinstance(kv.value, dict):
            return None
        return kv if self.sealed_by(kv.key, kv.mod_revision, kv.value, kv.value.get("auditor")) else None

    async def answers(self, audit_id: str) -> list[dict[str, Any]]:
        """The answers, each under its own instance's and branch's key and sealed by that instance;
        the others are left out (said once)."""
        found = []
        for kv in await self.etcd.list_prefix(keys.audit_answers(audit_id)):
            answer = records.parse(AuditAnswer, kv.key, kv.mod_revision, kv.value)
            if answer is None:
                continue
            if kv.key != keys.audit_answer(audit_id, answer.instance, answer.branch):
                records.refuse(kv.key, kv.mod_revision, "an answer under another instance's or branch's key")
                continue
            if self.sealed_by(kv.key, kv.mod_revision, kv.value, answer.instance):
                found.append(answer.model_dump(exclude_none=True))
        return found

    async def answered(self, audit_id: str, instance: str) -> set[str]:
        """The branches ``instance`` has answered for."""
        prefix = keys.audit_answers_of(audit_id, instance)
        return {kv.key.removeprefix(prefix) for kv in await self.etcd.list_prefix(prefix)}

    async def answer(self, audit_id: str, answer: dict[str, Any], lease: int) -> bool:
        key = keys.audit_answer(audit_id, answer["instance"], answer["branch"])
        return await self.etcd.create(key, self.seal(answer), lease=lease)

    async def result(self, audit_id: str) -> dict[str, Any] | None:
        kv = await self.etcd.get(keys.audit_result(audit_id))
        if kv is None or kv.problem or not isinstance(kv.value, dict):
            return None
        if not self.sealed_by(kv.key, kv.mod_revision, kv.value, kv.value.get("auditor")):
            return None
        return {k: v for k, v in kv.value.items() if k not in SEAL_FIELDS}

    async def result_lease(self) -> int:
        """A lease of ``RESULT_TTL`` for one audit's result (granted once, kept across retries)."""
        return await self.etcd.grant_lease(RESULT_TTL)

    async def store_result(self, audit_id: str, result: dict[str, Any], lease: int) -> bool:
        """Store the result on ``lease`` unless another is stored already (an audit is decided once);
        True when stored, also when this is a retry of a store whose answer was lost (the same
        result on the same lease)."""
        return await self.etcd.create(keys.audit_result(audit_id), result, lease=lease)

    async def end(self, lease: int) -> None:
        """Revoke ``lease``: the audit's removes its record and answers at once (they would expire
        with it anyway)."""
        await self.etcd.revoke_lease(lease)
