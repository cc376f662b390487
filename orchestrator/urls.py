"""URLs from configuration, requests or etcd, split without surprises.

``urlsplit`` and ``SplitResult.port`` raise ValueError on input such as ``http://[::1`` or a port out
of range; a bad URL must become a clear configuration problem or a 400, never a traceback or a 500.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def split_url(url: str) -> SplitResult | None:
    """The parts of ``url``, or None when it cannot be parsed (port included)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return None
    return parts
