"""Reading a step's insights.json defensively: size, JSON, links, FIFOs."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.gateway.insights import MAX_INSIGHTS_BYTES, TOO_DEEP, read_insights
from orchestrator.gateway.limits import MAX_NESTING


def test_no_file_is_nothing(tmp_path: Path) -> None:
    assert read_insights(tmp_path) is None


def test_valid_json_is_read(tmp_path: Path) -> None:
    (tmp_path / "insights.json").write_text('{"mean": 21.5, "samples": [1, 2]}')
    found = read_insights(tmp_path)
    assert found is not None and found.ignored is None
    assert found.value == {"mean": 21.5, "samples": [1, 2]}


def test_the_limit_is_inclusive(tmp_path: Path) -> None:
    (tmp_path / "insights.json").write_text('"' + "x" * (MAX_INSIGHTS_BYTES - 2) + '"')
    found = read_insights(tmp_path)
    assert found is not None and found.ignored is None
    (tmp_path / "insights.json").write_text("x" * (300 * 1024))
    found = read_insights(tmp_path)
    assert found is not None and found.ignored == "ignored: 300 KiB is over the 256 KiB limit"


def test_invalid_json_says_why(tmp_path: Path) -> None:
    for text in ("{not json", "NaN", '{"a": Infinity}', ""):
        (tmp_path / "insights.json").write_text(text)
        found = read_insights(tmp_path)
        assert found is not None and found.ignored is not None
        assert found.ignored.startswith("ignored: not valid JSON (")
    (tmp_path / "insights.json").write_bytes(b'"\xff"')
    assert read_insights(tmp_path).ignored.startswith("ignored: not valid JSON (")  # type: ignore[union-attr]


def test_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.json"
    secret.write_text('{"password": "hunter2"}')
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "insights.json").symlink_to(secret)
    found = read_insights(folder)
    assert found is not None and found.value is None
    assert found.ignored == "ignored: insights.json is a symbolic link"


def test_a_fifo_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "insights.json")
    found = read_insights(tmp_path)
    assert found is not None and found.ignored == "ignored: insights.json is not a regular file"


def test_a_directory_is_not_insights(tmp_path: Path) -> None:
    (tmp_path / "insights.json").mkdir()
    found = read_insights(tmp_path)
    assert found is not None and found.ignored is not None and found.value is None


def test_deeply_nested_json_is_ignored_not_an_error(tmp_path: Path) -> None:
    # 1000 levels: json itself raises RecursionError (not a ValueError) on the way in.
    for depth in (1000, 50_000, MAX_NESTING + 1):
        (tmp_path / "insights.json").write_text("[" * depth + "]" * depth)
        found = read_insights(tmp_path)
        assert found is not None and found.value is None and found.ignored == TOO_DEEP
    assert TOO_DEEP.startswith("ignored: nested too deeply")
    (tmp_path / "insights.json").write_text('{"a": ' * (MAX_NESTING - 1) + "[1]" + "}" * (MAX_NESTING - 1))
    found = read_insights(tmp_path)
    assert found is not None and found.ignored is None
