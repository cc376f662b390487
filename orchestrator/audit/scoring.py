"""Deciding an audit: the least strange copy of a file wins. A pure function, no I/O; CPU-bound on
copies of up to 64 MiB each, so the caller runs it in a worker thread.

A candidate's *entries* are the elements of a JSON array, the key/value pairs of a JSON object (both
as canonical JSON), or otherwise the non-empty lines of the text. Its *strangeness* is the number of
its entries that no other candidate has: a crawler that half-failed, or wrote garbage, has entries
nobody else has, while complete copies only have entries others share.

- the candidate with the lowest strangeness wins (``winner``);
- candidates tied at the lowest strangeness with identical content are ``joint_winners``;
- candidates tied at the lowest strangeness whose contents differ are a ``draw``: nobody wins,
  a person has to look;
- one candidate alone wins; none at all is ``no_candidates``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

WINNER, JOINT_WINNERS, DRAW, NO_CANDIDATES = "winner", "joint_winners", "draw", "no_candidates"


@dataclass(frozen=True)
class Candidate:
    instance: str
    branch: str
    commit: str
    sha256: str
    content: bytes


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    entries: int
    strangeness: int


@dataclass(frozen=True)
class Decision:
    outcome: str
    winners: list[Scored] = field(default_factory=list)
    drawn: list[Scored] = field(default_factory=list)  # tied at the lowest strangeness, contents differ
    scored: list[Scored] = field(default_factory=list)  # every candidate, least strange first


def entries(content: bytes) -> frozenset[str]:
    """The entries of one copy of a file (see the module's docstring)."""
    text = content.decode("utf-8", errors="surrogateescape")
    try:
        document = json.loads(text)
        if isinstance(document, list):
            return frozenset(_canonical(item) for item in document)
        if isinstance(document, dict):
            return frozenset(_canonical([key, value]) for key, value in document.items())
    except (ValueError, RecursionError):  # not JSON, or nested too deeply for json: its lines count
        pass
    return frozenset(line for line in text.splitlines() if line.strip())


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decide(candidates: Sequence[Candidate]) -> Decision:
    if not candidates:
        return Decision(NO_CANDIDATES)
    sets = [entries(c.content) for c in candidates]
    # How many candidates have each entry: an entry counted once is one nobody else has.
    counts = Counter(entry for s in sets for entry in s)
    scored = [
        Scored(candidate, len(s), sum(counts[entry] == 1 for entry in s))
        for candidate, s in zip(candidates, sets, strict=True)
    ]
    scored.sort(key=lambda s: (s.strangeness, s.candidate.instance, s.candidate.branch))
    lowest = [s for s in scored if s.strangeness == scored[0].strangeness]
    if len(lowest) == 1:
        return Decision(WINNER, winners=lowest, scored=scored)
    if len({s.candidate.sha256 for s in lowest}) == 1:
        return Decision(JOINT_WINNERS, winners=lowest, scored=scored)
    return Decision(DRAW, drawn=lowest, scored=scored)
