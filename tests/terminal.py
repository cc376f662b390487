"""Interactive terminal programs in tests, read as the operator sees them: through a terminal emulator.

The bytes a full-screen or prompt program writes depend on what was on the screen before it (a
renderer redraws only the cells that change: a prompt drawn over a line that already held part of it
arrives as a few characters, not as its text), so matching the byte stream is flaky by nature. A
``Terminal`` feeds everything the program writes into ``pyte`` (a VT100/xterm emulator) and matches
what the screen *shows*.

``expect(text)`` waits until ``text`` is on a screen row drawn after the previous match: a row below
that match (drawn with it or later), or any row drawn again since. So a prompt asked a second time is
the new one, never the first one still on the screen, and a list that collapses after its answer
(the next prompt drawn where the list was) is still seen. The screen is tall enough that nothing scrolls; a test
that would scroll fails saying so rather than matching shifted rows.
"""

from __future__ import annotations

import time

import pexpect
import pyte

COLUMNS, LINES = 240, 400


class Terminal:
    """A ``pexpect.spawn`` child (``encoding="utf-8"``, ``dimensions=(LINES, COLUMNS)``) and its screen."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.Stream(self.screen)
        self._fresh: set[int] = set()  # rows drawn after the last match (below it, or since)
        self.ended = False

    def send(self, keys: str) -> None:
        self.child.send(keys)

    def answer(self, prompt: str, keys: str, timeout: float = 30) -> None:
        """Wait for ``prompt`` on the screen, then type ``keys``."""
        self.expect(prompt, timeout)
        self.send(keys)

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            row = self._find(text)
            if row is not None:
                self._fresh = {r for r in self._fresh if r > row}
                return
            if self.ended:
                raise AssertionError(f"the program ended without showing {text!r}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear within {timeout:.0f} s:\n{self.text()}")
            self._read(min(0.2, max(0.01, deadline - time.monotonic())))

    def finish(self, timeout: float = 60) -> str:
        """Wait for the program's end; the whole screen as text."""
        deadline = time.monotonic() + timeout
        while not self.ended:
            if time.monotonic() > deadline:
                raise AssertionError(f"the program did not end within {timeout:.0f} s:\n{self.text()}")
            self._read(0.2)
        self.child.close()
        return self.text()

    @property
    def exitstatus(self) -> int | None:
        return self.child.exitstatus

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display).rstrip()

    def _find(self, text: str) -> int | None:
        display = self.screen.display  # built anew at each access: once per search
        for row in sorted(self._fresh):
            if text in display[row]:
                return row
        return None

    def _read(self, timeout: float) -> None:
        try:
            data = self.child.read_nonblocking(size=65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            self.ended = True
            return
        self.screen.dirty.clear()
        self.stream.feed(data)
        if self.screen.cursor.y >= LINES - 1:
            raise AssertionError(f"the screen filled up ({LINES} rows): make LINES larger\n{self.text()}")
        self._fresh |= self.screen.dirty
