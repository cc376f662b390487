"""The first rule of any path into a dataset that comes from outside (an audited file, a fan-out glob):
a non-empty string, not too long, with no control characters and no backslashes.

Each caller then adds its own rules (segments, a leading ``/`` or ``-``)."""

from __future__ import annotations


def plain_path_problem(value: object, what: str, max_length: int) -> str | None:
    """Why ``value`` (named ``what`` in the sentence) fails that first rule, or None."""
    if not isinstance(value, str) or not value:
        return f"{what} must be a non-empty string"
    if len(value) > max_length:
        return f"{what} is longer than {max_length} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 or ch == "\\" for ch in value):
        return f"{what} must not contain control characters or backslashes"
    return None
