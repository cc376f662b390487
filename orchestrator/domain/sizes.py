"""Byte sizes as operators write them: ``1073741824``, ``512m``, ``2g`` (binary units, case-insensitive)."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^([0-9]{1,16})([kmgt]?)(i?b)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(raw: str) -> int:
    """``raw`` in bytes; raise ValueError for anything but digits with an optional k/m/g/t unit."""
    match = _SIZE_RE.fullmatch(raw.strip())
    if not match:
        raise ValueError(f"{raw!r} is not a size: use bytes or a number with k, m, g or t (e.g. 512m)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]
