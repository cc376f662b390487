"""What maoctl prints never drives the operator's terminal: the one sanitiser at its output edge.

Text maoctl did not write itself (a tool's log, a step's log tail, an error message, a name or a
description read from etcd or a marketplace) can hold terminal control sequences: CSI (``ESC [``,
colours, cursor moves, erasing the screen), OSC (``ESC ]``: the window title, hyperlinks, the
clipboard on some terminals), DCS/SOS/PM/APC strings, their 8-bit C1 forms (``0x9b`` is CSI), and
lone controls (BEL, backspace, a carriage return that rewrites the line already shown). Any of them
can hide or fake what the operator reads, and some terminals act on them.

``clean`` removes whole escape sequences (a colourful tool log reads as plain text) and shows every
other control character as a visible escape (``\\x07``); a carriage return becomes a line break (a
progress bar's updates show one per line instead of overwriting each other), tabs and line breaks
stay. Bidirectional overrides (U+202A-U+202E, U+2066-U+2069), which reorder what is shown, are made
visible too. ``LogStream`` does the same to a byte stream that arrives in chunks (``maoctl pipeline
logs``): a sequence or a UTF-8 character split between two chunks is held until it is whole.
``json_text`` escapes what JSON itself leaves raw (DEL, C1, the bidi overrides), so ``--json`` output
is as safe on a terminal and decodes to the same values.

Everything maoctl shows goes through here: ``Output`` (lines, notes, tables, fields, JSON),
``RunProgress``, the run tree, the wizards' prompts, ``maoctl pipeline logs`` and error messages.
"""

from __future__ import annotations

import codecs
import re

# The 8-bit introducers: CSI, and the string controls DCS, SOS, OSC, PM, APC.
_C1_CSI = "\x9b"
_C1_STRINGS = "\x90\x98\x9d\x9e\x9f"
_CSI = r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
# A string runs to BEL or ST (ESC \, or 0x9c); OSC is ESC ], DCS ESC P, SOS ESC X, PM ESC ^, APC ESC _.
# (A C1 control inside one ends it: the string is cut there, as the terminal would have to.)
_STRING = r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x80-\x9f]*(?:\x07|\x1b\\|\x9c)"
# Any other escape: intermediates, then a final byte that does not open a CSI or a string.
_OTHER = r"\x1b[ -/]*(?![\[\]PX^_])[0-~]"
_SEQUENCE = re.compile(f"{_CSI}|{_STRING}|{_OTHER}")
# What could still become a sequence if more input came (a stream's last chunk ends inside one).
_OPEN = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x80-\x9f]*\x1b?|\x1b[ -/]*"
)
_INTRODUCERS = "\x1b" + _C1_CSI + _C1_STRINGS
# C0 but tab and line feed, DEL, C1, and the bidirectional overrides and isolates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_JSON_RAW = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# A stream holds back at most this much of an unfinished sequence before showing it as text.
MAX_HELD = 4096


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str) -> str:
    """``text`` as it may reach a terminal: no escape sequence, no control but tab and line feed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(_visible, _SEQUENCE.sub("", text))


def json_text(document: str) -> str:
    """A JSON document with DEL, C1 and the bidi controls escaped (``\\u009b``): the same values."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", document)


class LogStream:
    """``clean`` over bytes that arrive in chunks: ``feed`` each chunk, then ``close``."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""

    def feed(self, chunk: bytes) -> str:
        text = self._held + self._decoder.decode(chunk)
        cut = _unfinished(text)
        self._held = text[cut:]
        return clean(text[:cut])

    def close(self) -> str:
        text, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return clean(text)


def _unfinished(text: str) -> int:
    """Where a tail that could still become a sequence (or a CR LF) begins; ``len(text)`` if none.
    An unfinished sequence holds at most two introducers (its own, and an ESC that may start its
    string terminator), so it starts at one of the last two."""
    starts: list[int] = []
    for i in range(len(text) - 1, max(-1, len(text) - 1 - MAX_HELD), -1):
        if text[i] in _INTRODUCERS:
            starts.append(i)
            if len(starts) == 2:
                break
    for start in reversed(starts):  # the earlier one first: a string whose terminator is coming
        if _OPEN.fullmatch(text, start):
            return start
    if text.endswith("\r"):
        return len(text) - 1
    return len(text)
