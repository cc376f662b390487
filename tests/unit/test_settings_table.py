"""The settings table both configurations share (executor/wire/settings.py): a row is read the same way
whatever its parser, any text gives its value or problems naming its variable (never an exception), and
the orchestrator's and the executor's tables name each variable once and document it."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from executor import config as executor_config
from executor.wire.settings import Invalid, Reader, Setting, choice, flag, integer, number, shown, text
from orchestrator.config import table as orchestrator_table

ROWS: list[Setting[object]] = [*orchestrator_table.TABLE, *executor_config.TABLE]
VALUES = st.text(alphabet=string.printable + "é\x00", max_size=30)


@given(row=st.sampled_from(ROWS), raw=VALUES, strip=st.booleans())
def test_any_text_gives_a_value_or_problems_naming_the_variable(row: Setting[object], raw: str, strip: bool) -> None:
    problems: list[str] = []
    value = Reader({row.variable: raw}, problems, strip=strip)(row)
    assert all(row.variable in problem for problem in problems), problems
    if not problems and (raw.strip() if strip else raw):
        assert value is not None or row.default is None


@given(row=st.sampled_from(ROWS), empty=st.sampled_from(["", None]))
def test_an_unset_or_empty_variable_takes_the_default(row: Setting[object], empty: str | None) -> None:
    problems: list[str] = []
    environ = {} if empty is None else {row.variable: empty}
    if row.keep_empty and empty == "":
        return  # judged on purpose: the executor's host and Docker socket
    assert Reader(environ, problems)(row) == row.default and problems == []


@given(low=st.integers(-1000, 1000), span=st.integers(0, 1000), value=st.integers(-3000, 3000))
def test_an_integer_is_taken_inside_its_bounds_only(low: int, span: int, value: int) -> None:
    high = low + span
    for style in ("orchestrator", "executor"):
        row = Setting("n", "MAO_N", integer(low, high, style), low, "a number")
        problems: list[str] = []
        read = Reader({"MAO_N": str(value)}, problems)(row)
        assert (read == value and not problems) if low <= value <= high else (read == low and len(problems) == 1)


def test_the_problems_read_as_each_side_always_wrote_them() -> None:
    problems: list[str] = []
    read = Reader({"MAO_A": "x", "MAO_B": "70000", "MAO_C": "x", "MAO_D": "maybe", "MAO_E": "loud"}, problems)
    read(Setting("a", "MAO_A", integer(1, 65535), 1, ""))
    read(Setting("b", "MAO_B", integer(1, 65535, "executor"), 1, ""))
    read(Setting("c", "MAO_C", number(0.1, 5), 1.0, ""))
    read(Setting("d", "MAO_D", flag, False, ""))
    read(Setting("e", "MAO_E", choice(("text", "json"), "{variable}={value} must be text or json"), "text", ""))
    assert problems == [
        "MAO_A='x' is not an integer",
        "MAO_B must be between 1 and 65535, got 70000",
        "MAO_C='x' is not a number",
        "MAO_D='maybe' must be 1 or 0",
        "MAO_E=loud must be text or json",
    ]


def test_a_parser_may_list_several_problems_and_a_check_one() -> None:
    def two(variable: str, raw: str) -> str:
        raise Invalid(f"{variable}: first", f"{variable}: second")

    problems: list[str] = []
    read = Reader({"MAO_X": "v", "MAO_Y": "v"}, problems)
    assert read(Setting("x", "MAO_X", two, "d", "")) == "d"
    checked = Setting("y", "MAO_Y", text, "d", "", check=lambda variable, value: f"{variable}: no {value}")
    assert read(checked) == "v"  # kept as written: the checks across settings judge it
    assert problems == ["MAO_X: first", "MAO_X: second", "MAO_Y: no v"]


def test_a_secret_is_never_shown() -> None:
    secret = Setting("t", "MAO_T", text, "", "a token", secret=True)
    assert shown(secret, "hunter2") == "***" and shown(secret, "") is None
    assert shown(Setting("p", "MAO_P", text, "", "a path"), "/x") == "/x"


def test_each_table_reads_a_variable_once_with_a_doc_line() -> None:
    for table in (orchestrator_table.TABLE, executor_config.TABLE):
        variables = [row.variable for row in table]
        assert len(variables) == len(set(variables)), variables
        assert all(row.variable.startswith("MAO_") and row.doc for row in table)
