"""maoctl's output edge (ctl/safe_text.py) on generated text: whatever a tool, a server or a file
holds, what reaches the terminal has no escape sequence and no control character but tab and line
feed, plain text passes unchanged, and a stream cut anywhere reads as the whole text would."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ctl.output import Output
from ctl.safe_text import LogStream, clean, json_text

FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
PIECES = [
    "\x1b", "\x1b[", "31m", "\x1b[2J", "\x1b[0m", "\x1b]", "0;title", "\x07", "\x1b\\", "\x1b]8;;http://x.example",
    "\x9b", "\x9c", "\x90", "\x9d", "\x1bP", "\x1b_", "\x1bc", "\x1b(B", "\r", "\n", "\t", "\r\n", "\x08", "\x7f",
    "\x00", "\u202e", "\u2066", ";", "[", "]", "\\", "m", "é", "日本", "text", " ",
]  # fmt: skip
texts = st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=40).map("".join)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(text=texts)
def test_nothing_that_drives_a_terminal_passes(text: str) -> None:
    shown = clean(text)
    assert not FORBIDDEN.search(shown), repr(shown)
    assert clean(shown) == shown  # what is shown is stable


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    text=st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs")) | st.sampled_from("\t\n"))
)
def test_plain_text_is_unchanged(text: str) -> None:
    assert clean(text) == text


@settings(max_examples=500, deadline=None, derandomize=True)
@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_a_stream_cut_anywhere_reads_as_the_whole(text: str, cuts: list[int]) -> None:
    """Chunks split inside an escape sequence or a UTF-8 character: the same as the whole text."""
    data = text.encode()
    points = sorted({min(c, len(data)) for c in cuts})
    stream = LogStream()
    out, last = [], 0
    for point in [*points, len(data)]:
        out.append(stream.feed(data[last:point]))
        last = point
    out.append(stream.close())
    assert "".join(out) == clean(text)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    value=st.recursive(
        texts | st.integers(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
        max_leaves=8,
    )
)
def test_json_output_is_escaped_and_decodes_to_the_same_values(value: object) -> None:
    document = json_text(json.dumps(value, indent=2, ensure_ascii=False))
    assert not FORBIDDEN.search(document.replace("\n", " "))
    assert json.loads(document) == value


def test_colours_go_and_titles_hyperlinks_and_clears_never_reach_the_terminal() -> None:
    log = "\x1b[32mok\x1b[0m \x1b]0;pwned\x07\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\ \x9b2J\r\nend\rover\x07"
    assert clean(log) == "ok click \nend\nover\\x07"


def test_the_output_methods_clean_what_they_show() -> None:
    evil = "name\x1b]0;pwned\x07\x1b[2J\x9b31m"

    def show() -> None:
        out = Output()
        out.line(evil)
        out.note(evil)
        out.table(["a", "b"], [[evil, {"k": evil}], [[evil], None]], title=evil)
        out.fields([(evil, evil)], title=evil)

    result = CliRunner().invoke(_command(show), [])
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\x9b" not in stream and "\x07" not in stream
        assert "name" in stream
    as_json = CliRunner().invoke(_command(lambda: Output(as_json=True).json({"v": evil})), [])
    assert (
        json.loads(as_json.stdout) == {"v": evil}
        and "\x1b" not in as_json.stdout
        and "\x9b" not in as_json.stdout
    )


# Values as ids, names and timestamps are: no spaces, up to 80 characters (drawn by length, so that
# wide tables are common, not only the small ones hypothesis favours).
_TOKEN = st.integers(min_value=1, max_value=80).flatmap(
    lambda size: st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-:.+", min_size=size, max_size=size)
)
# maoctl tool list-scheduled on a node holding many schedules (the row that once wrapped its id).
_SCHEDULES = [
    [f"{n:032x}", "federation", f"pipeline-of-a-test-{n:08x}", "on data-5f2a9c advancing", "Europe/Zurich",
     "2026-01-02T03:04:05.123456+00:00", "2026-01-01T03:04:05.123456+00:00"]
    for n in range(40)
]  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(min_value=1, max_value=8).flatmap(
        lambda width: st.lists(st.lists(_TOKEN, min_size=width, max_size=width), min_size=1, max_size=30)
    )
)
@example(rows=_SCHEDULES)
def test_a_piped_table_keeps_every_row_on_one_line_and_every_value_whole(rows: list[list[str]]) -> None:
    """Whatever the number and width of rows, piped output (as in a script, or click's test runner)
    never wraps: each row is one line holding each of its values whole (an id to copy, to grep)."""
    columns = [f"c{i}" for i in range(len(rows[0]))]
    result = CliRunner().invoke(_command(lambda: Output().table(columns, rows)), [])
    lines = result.stdout.splitlines()
    for row in rows:
        assert any(all(value in line for value in row) for line in lines), (row, result.stdout)


def _command(body):  # type: ignore[no-untyped-def]
    import click

    @click.command()
    def command() -> None:
        body()

    return command


def test_error_messages_are_cleaned_wherever_they_were_raised() -> None:
    """An error quoting something foreign (here the URL, in the 'cannot reach' message)."""
    from ctl.cli import cli

    url = "http://127.0.0.1:9/\x1b]0;pwned\x07\x1b[2J"
    result = CliRunner().invoke(cli, ["--url", url, "--token", "t", "tool", "get"], catch_exceptions=False)
    assert result.exit_code == 1 and "cannot reach" in result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
