"""Secrets out of every byte of output that leaves the orchestrator: a step's private values become
``***`` in logs, kept or followed, exactly as in the run record's log tail (``attempt.redact``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

MIN_SECRET = 4  # shorter values are not masked (they would mask half the log), as in the tails


class Masker:
    """Replaces secret values by ``***`` in a stream of bytes. ``feed`` holds back only the end of
    what it was given that is the start of a secret (the next chunk may complete it), so a follower
    is never kept waiting for output that cannot be a secret; ``flush`` gives it at the end."""

    def __init__(self, secrets: Mapping[str, str] | None) -> None:
        values = {v.encode() for v in (secrets or {}).values() if len(v) >= MIN_SECRET}
        self.values = sorted(values, key=len, reverse=True)
        self._carry = b""

    def _mask(self, data: bytes) -> bytes:
        for value in self.values:
            data = data.replace(value, b"***")
        return data

    def feed(self, chunk: bytes) -> bytes:
        if not self.values:
            return chunk
        data = self._mask(self._carry + chunk)
        # A secret still unmasked in ``data`` runs past its end: data ends with a proper prefix of it.
        hold = self._open_prefix(data)
        cut = len(data) - hold
        self._carry = data[cut:]
        return data[:cut]

    def _open_prefix(self, data: bytes) -> int:
        longest = 0
        for value in self.values:
            for size in range(min(len(value) - 1, len(data)), longest, -1):
                if data.endswith(value[:size]):
                    longest = size
                    break
        return longest

    def flush(self) -> bytes:
        out, self._carry = self._carry, b""
        return out


async def masked(chunks: AsyncIterator[bytes], secrets: Mapping[str, str] | None) -> AsyncIterator[bytes]:
    masker = Masker(secrets)
    async for chunk in chunks:
        if out := masker.feed(chunk):
            yield out
    if out := masker.flush():
        yield out
