"""Deciding an audit: strangeness, winners, joint winners, draws."""

from __future__ import annotations

import hashlib
import json
import random

from orchestrator.audit.scoring import Candidate, decide, entries


def cand(instance: str, content: str | bytes) -> Candidate:
    data = content.encode() if isinstance(content, str) else content
    return Candidate(instance, f"crawl-{instance}", "c" * 40, hashlib.sha256(data).hexdigest(), data)


def lines(*values: object) -> str:
    return "".join(f"{v}\n" for v in values)


def test_entries_of_arrays_objects_and_text() -> None:
    assert entries(b'[1, {"b": 2, "a": 1}, 1]') == {"1", '{"a":1,"b":2}'}
    assert entries(b'{"x": [1, 2], "y": null}') == {'["x",[1,2]]', '["y",null]'}
    assert entries(b"one\ntwo\n\n  \ntwo\r\n") == {"one", "two"}
    assert entries(b'"just a string"') == {'"just a string"'}
    assert entries(b"\xff\xfe binary\n") == {"\udcff\udcfe binary"}


def test_the_corrupted_copy_loses_to_two_good_ones() -> None:
    good = lines(1, 2, 3, 4)
    decision = decide([cand("a", good), cand("b", good), cand("c", lines(1, 2, "garbage", "more garbage"))])
    assert decision.outcome == "joint_winners"
    assert [s.candidate.instance for s in decision.winners] == ["a", "b"]
    by_instance = {s.candidate.instance: s for s in decision.scored}
    assert by_instance["c"].strangeness == 2 and by_instance["a"].strangeness == 0
    assert decision.scored[-1].candidate.instance == "c"


def test_a_half_failed_copy_is_not_strange_but_the_complete_ones_win_together() -> None:
    # c only lacks entries: it has nothing no one else has, so it ties with the complete copies,
    # and since they differ the audit is a draw for a person to look at.
    full = lines(1, 2, 3)
    decision = decide([cand("a", full), cand("b", full), cand("c", lines(1, 2))])
    assert decision.outcome == "draw"
    assert {s.candidate.instance for s in decision.drawn} == {"a", "b", "c"}


def test_identical_copies_are_joint_winners() -> None:
    same = json.dumps([{"id": 1}, {"id": 2}])
    decision = decide([cand(i, same) for i in ("c", "a", "b")])
    assert decision.outcome == "joint_winners"
    assert [s.candidate.instance for s in decision.winners] == ["a", "b", "c"]
    assert all(s.strangeness == 0 and s.entries == 2 for s in decision.scored)


def test_differing_copies_equally_strange_are_a_draw() -> None:
    decision = decide([cand("a", lines(1, 2, 3)), cand("b", lines(1, 2, 4))])
    assert decision.outcome == "draw" and decision.winners == []
    assert [s.strangeness for s in decision.drawn] == [1, 1]


def test_one_least_strange_copy_wins_alone() -> None:
    decision = decide([cand("a", lines(1, 2)), cand("b", lines(1, 2, "x")), cand("c", lines(1, "y", "z"))])
    assert decision.outcome == "winner"
    assert [s.candidate.instance for s in decision.winners] == ["a"]


def test_a_single_candidate_wins_and_none_is_no_candidates() -> None:
    assert decide([cand("a", "x")]).outcome == "winner"
    assert decide([]).outcome == "no_candidates"


def test_object_key_order_does_not_matter() -> None:
    decision = decide([cand("a", '{"a": 1, "b": 2}'), cand("b", '{"b": 2, "a": 1}')])
    # Same entries, different bytes: equally (not) strange, but not identical files.
    assert [s.strangeness for s in decision.scored] == [0, 0]
    assert decision.outcome == "draw"


def test_json_too_deep_for_the_parser_counts_its_lines() -> None:
    deep = b"[" * 5000 + b"]" * 5000  # json raises RecursionError, not a ValueError
    assert entries(deep) == {deep.decode()}
    assert entries(b"[" * 3000 + b"\n" + b"]" * 3000 + b"\n") == {"[" * 3000, "]" * 3000}
    assert decide([cand("a", deep), cand("b", deep)]).outcome == "joint_winners"


def test_strangeness_counts_entries_no_other_candidate_has() -> None:
    rng = random.Random(5)
    contents = [lines(*rng.sample(range(40), rng.randint(0, 30))) for _ in range(12)]
    contents += [contents[0], contents[1]]  # identical copies share every entry
    decision = decide([cand(f"i{n:02d}", c) for n, c in enumerate(contents)])
    sets = [entries(c.encode()) for c in contents]
    for s in decision.scored:
        n = int(s.candidate.instance[1:])
        others = set().union(*(other for m, other in enumerate(sets) if m != n))
        assert (s.entries, s.strangeness) == (len(sets[n]), len(sets[n] - others))
