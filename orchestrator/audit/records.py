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
from ..federation import keys
from ..federation.etcd import Etcd, KeyValue

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
    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd

    async def create(self, record: dict[str, Any], ttl: int) -> int:
        """Store a new audit on a fresh lease; returns the lease."""
        lease = await self.etcd.grant_lease(ttl)
        if not await self.etcd.create(keys.audit(record["id"]), record, lease=lease):
            await self.etcd.revoke_lease(lease)
            raise BadRequest(f"audit {record['id']} exists already")  # 128 random bits: never happens
        return lease

    async def record(self, audit_id: str) -> KeyValue | None:
        return await self.etcd.get(keys.audit(audit_id))

    async def answers(self, audit_id: str) -> list[dict[str, Any]]:
        return [
            kv.value
            for kv in await self.etcd.list_prefix(keys.audit_answers(audit_id))
            if isinstance(kv.value, dict)
        ]

    async def answered(self, audit_id: str, instance: str) -> set[str]:
        """The branches ``instance`` has answered for."""
        prefix = keys.audit_answers_of(audit_id, instance)
        return {kv.key.removeprefix(prefix) for kv in await self.etcd.list_prefix(prefix)}

    async def answer(self, audit_id: str, answer: dict[str, Any], lease: int) -> bool:
        key = keys.audit_answer(audit_id, answer["instance"], answer["branch"])
        return await self.etcd.create(key, answer, lease=lease)

    async def result(self, audit_id: str) -> dict[str, Any] | None:
        kv = await self.etcd.get(keys.audit_result(audit_id))
        return kv.value if kv is not None and isinstance(kv.value, dict) else None

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
