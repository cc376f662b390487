"""The etcd keyspace: one versioned prefix, one function per kind of key.

Values are JSON. etcd values stay small (its limit is about 1.5 MiB): files travel through git.
"""

from __future__ import annotations

PREFIX = "/mao/v1"

TOOLS = f"{PREFIX}/tools/"
DATASETS = f"{PREFIX}/datasets/"
PIPELINES = f"{PREFIX}/pipelines/"
MEMBERS = f"{PREFIX}/members/"
LOCKS = f"{PREFIX}/locks/"
SCHEDULES = f"{PREFIX}/schedules/"
TICKS = f"{PREFIX}/ticks/"
CATCHUPS = f"{PREFIX}/catchups/"
# One key per dataset, put by every ground-truth merge: data triggers watch this prefix.
GROUND_TRUTH = f"{PREFIX}/ground-truth/"
TRIGGER_FIRES = f"{PREFIX}/trigger-fires/"
# The gateway's namespaces: the only keys /write, /read and /inspect can reach.
RAW = f"{PREFIX}/raw/"
INSIGHTS = f"{PREFIX}/insights/"
AUDITS = f"{PREFIX}/audits/"  # the records only: every instance watches this prefix
AUDIT_ANSWERS = f"{PREFIX}/audit-answers/"  # apart, so that the watchers do not receive every answer
AUDIT_RESULTS = f"{PREFIX}/audit-results/"
# One key per instance, written after it compacted etcd near its quota (federation/space.py).
SPACE = f"{PREFIX}/space/"


def tool(name: str) -> str:
    return TOOLS + name


def dataset(name: str) -> str:
    return DATASETS + name


def pipeline(name: str) -> str:
    return PIPELINES + name


def member(instance: str) -> str:
    return MEMBERS + instance


def dataset_lock(name: str) -> str:
    return f"{LOCKS}datasets/{name}"


def schedule(schedule_id: str) -> str:
    return SCHEDULES + schedule_id


def ticks(schedule_id: str) -> str:
    """Prefix of one federation schedule's tick records."""
    return f"{TICKS}{schedule_id}/"


def tick(schedule_id: str, due: str) -> str:
    """One tick's record; ``due`` is a fixed-width UTC timestamp, so keys sort by time."""
    return ticks(schedule_id) + due


def catchup(schedule_id: str) -> str:
    """How far a federation schedule's catch-up has been decided (``{until, instance, ...}``)."""
    return f"{CATCHUPS}{schedule_id}"


def ground_truth(dataset: str) -> str:
    return GROUND_TRUTH + dataset


def trigger_fires(trigger_id: str) -> str:
    """Prefix of one federation-wide data trigger's fire records."""
    return f"{TRIGGER_FIRES}{trigger_id}/"


def trigger_fire(trigger_id: str, revision: int) -> str:
    """The record of one ground-truth advance (the etcd revision that announced it) for a trigger."""
    return f"{trigger_fires(trigger_id)}{revision:020d}"


def raw(path: str) -> str:
    """A gateway raw entry (``path`` inside the raw namespace; "" for the whole namespace)."""
    return RAW + path


def insight(path: str) -> str:
    """A tool's published insights (``path`` inside the insights namespace; "" for the whole namespace)."""
    return INSIGHTS + path


def audit(audit_id: str) -> str:
    return AUDITS + audit_id


def audit_answers(audit_id: str) -> str:
    """Prefix of one audit's answers: ``<prefix><instance>/<branch>``."""
    return f"{AUDIT_ANSWERS}{audit_id}/"


def audit_answers_of(audit_id: str, instance: str) -> str:
    """Prefix of one instance's answers to one audit: ``<prefix><branch>``."""
    return f"{audit_answers(audit_id)}{instance}/"


def audit_answer(audit_id: str, instance: str, branch: str) -> str:
    return audit_answers_of(audit_id, instance) + branch


def audit_result(audit_id: str) -> str:
    return AUDIT_RESULTS + audit_id


def last_segment(key: str) -> str:
    return key.rsplit("/", 1)[-1]
