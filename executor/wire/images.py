"""Image references: the validity check and the normal form used by the Docker-socket allow-list.

The check is deliberately coarse (the engine enforces the full grammar); it exists to keep option-like
(``-x``) or whitespace-bearing strings away from the engine and out of log lines.
"""

from __future__ import annotations

import re

# A letter or digit first (never '-'), then the characters of name, tag and digest.
_REFERENCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,510}$")
_DOCKER_HUB_PREFIXES = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def image_problem(value: object) -> str | None:
    """Why ``value`` is not an acceptable image reference, or None when it is."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if value.startswith("-"):
        return "must not start with '-'"
    if any(ch.isspace() for ch in value):
        return "must not contain whitespace"
    if not _REFERENCE_RE.fullmatch(value):
        return (
            "is not a docker image reference: use e.g. 'busybox:latest' or 'registry.example.org/team/tool:1.2' "
            "(letters, digits and . _ : / @ + -, at most 511 characters)"
        )
    return None


def normalize_image(reference: str) -> str:
    """The canonical short form, so 'busybox', 'busybox:latest' and 'docker.io/library/busybox' compare equal.

    Used only to match the allow-list: without it an operator listing 'busybox' would be surprised that
    'busybox:latest' is refused.
    """
    name, sep, digest = reference.partition("@")
    for prefix in _DOCKER_HUB_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if name.startswith("library/") and name.count("/") == 1:
        name = name[len("library/") :]
    # A ':' after the last '/' is a tag; one before it belongs to a registry host:port.
    if not sep and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}{sep}{digest}"
