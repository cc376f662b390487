"""The backends an instance is configured with (``MAO_BACKENDS``), read and checked: each kind's
settings model, never the backends themselves (those are built in ``registry.py``).

Adding a kind is one line in ``KINDS`` here (its settings model, pydantic ``extra="forbid"``) and
one in ``registry.BUILDERS`` (the function that builds it). The operator names backends and gives each a kind:

    MAO_BACKENDS=local=docker,cluster=swarm      (default: local=docker)
    MAO_DEFAULT_BACKEND=local                    (default: the first)
    MAO_BACKEND_CLUSTER_SHARED_ROOT=/mnt/scratch (a setting of backend "cluster": its kind's key)

Every backend's settings are validated at start with its kind's model, each problem listed like
every other setting's. A kind may take a key it lacks from an instance-wide variable (``fallback``:
``docker`` takes ``TOKEN`` from ``MAO_EXECUTOR_TOKEN``; without a ``URL`` of its own it is the
instance's executor, ``MAO_EXECUTOR_URL`` with its transport settings).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from .docker import DockerSettings
from .kubernetes import KubernetesSettings
from .slurm import SlurmSettings
from .swarm import SwarmSettings

DEFAULT_BACKENDS = "local=docker"
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class Kind:
    settings: type[BaseModel]
    # Keys taken from an instance-wide variable when the backend's own is not set.
    fallback: Mapping[str, str] = field(default_factory=dict)
    # Keys that must be given (by the backend's variable or its fallback).
    required: frozenset[str] = frozenset()


KINDS: dict[str, Kind] = {
    "docker": Kind(DockerSettings, {"token": "MAO_EXECUTOR_TOKEN"}, frozenset({"token"})),
    "swarm": Kind(SwarmSettings),
    "slurm": Kind(SlurmSettings),
    "kubernetes": Kind(KubernetesSettings),
}


@dataclass(frozen=True)
class BackendConfig:
    """One configured backend: the operator's name, its kind and its validated settings."""

    name: str
    kind: str
    settings: BaseModel
    fallbacks: frozenset[str] = frozenset()  # instance-wide variables its settings came from


def variable_prefix(name: str) -> str:
    return f"MAO_BACKEND_{name.upper().replace('-', '_')}_"


def backend_values(name: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The ``MAO_BACKEND_<NAME>_<KEY>`` variables of backend ``name`` alone, by key in lower case (what
    its kind's model validates; ``parse_backends`` also tells apart names that share a prefix)."""
    prefix = variable_prefix(name)
    return {key[len(prefix) :].lower(): value for key, value in environ.items() if key.startswith(prefix)}


def parse_backends(
    get: Callable[[str], str | None], environ: Mapping[str, str], problems: list[str]
) -> tuple[tuple[BackendConfig, ...], str]:
    """``MAO_BACKENDS``, each backend's ``MAO_BACKEND_<NAME>_<KEY>`` and ``MAO_DEFAULT_BACKEND``:
    (the backends, the default's name); every problem goes into ``problems``."""
    pairs: list[tuple[str, str]] = []
    for item in (part.strip() for part in (get("MAO_BACKENDS") or DEFAULT_BACKENDS).split(",")):
        if not item:
            continue
        name, sep, kind = (x.strip() for x in item.partition("="))
        if not sep or not name or not kind:
            problems.append(f"MAO_BACKENDS: {item!r} is not name=kind (e.g. local=docker,cluster=swarm)")
        elif not _NAME_RE.fullmatch(name):
            problems.append(
                f"MAO_BACKENDS: backend name {name!r} must be 1-31 lowercase letters, digits or '-', "
                "starting with a letter"
            )
        elif kind not in KINDS:
            problems.append(f"MAO_BACKENDS: backend {name!r} has kind {kind!r}; kinds: {', '.join(sorted(KINDS))}")
        elif any(name == n for n, _ in pairs):
            problems.append(f"MAO_BACKENDS: backend {name!r} is given twice")
        else:
            pairs.append((name, kind))
    if not pairs and not any(p.startswith("MAO_BACKENDS") for p in problems):
        problems.append("MAO_BACKENDS is empty: give at least one name=kind (e.g. local=docker)")
    # A variable belongs to the backend with the longest matching prefix ("a" and "a-b" both fit
    # MAO_BACKEND_A_B_URL: it is a-b's URL).
    prefixes = sorted(((variable_prefix(n), n) for n, _ in pairs), key=lambda p: -len(p[0]))
    given: dict[str, dict[str, str]] = {n: {} for n, _ in pairs}
    for variable, value in environ.items():
        if not variable.startswith("MAO_BACKEND_") or value in (None, ""):
            continue
        owner = next(((p, n) for p, n in prefixes if variable.startswith(p)), None)
        if owner is None:
            problems.append(f"{variable}: no backend of MAO_BACKENDS has that prefix ({_names(pairs)})")
            continue
        given[owner[1]][variable[len(owner[0]) :].lower()] = value
    backends = []
    for name, kind in pairs:
        backend = _validate(name, kind, given[name], get, problems)
        if backend is not None:
            backends.append(backend)
    default = get("MAO_DEFAULT_BACKEND") or (pairs[0][0] if pairs else "local") or "local"
    if pairs and default not in given:
        problems.append(f"MAO_DEFAULT_BACKEND={default!r} is not a backend of MAO_BACKENDS ({_names(pairs)})")
    return tuple(backends), default


def _validate(
    name: str, kind: str, values: dict[str, str], get: Callable[[str], str | None], problems: list[str]
) -> BackendConfig | None:
    spec = KINDS[kind]
    prefix = variable_prefix(name)
    known = set(spec.settings.model_fields)
    unknown = sorted(set(values) - known)
    for key in unknown:
        problems.append(
            f"{prefix}{key.upper()} is not a setting of kind {kind} (its settings: "
            f"{', '.join(prefix + k.upper() for k in sorted(known))})"
        )
    borrowed: set[str] = set()
    for key, variable in spec.fallback.items():
        if key not in values and (value := get(variable)):
            values[key] = value
            borrowed.add(key)
    for key in sorted(spec.required - set(values)):
        instance_wide = spec.fallback.get(key)
        problems.append(
            f"{instance_wide} is not set (nor {prefix}{key.upper()}): backend {name} ({kind}) needs it"
            if instance_wide
            else f"{prefix}{key.upper()} is not set: backend {name} ({kind}) needs it"
        )
    if unknown or spec.required - set(values):
        return None
    try:
        settings = spec.settings.model_validate(values)
    except ValidationError as exc:
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            if key in borrowed:
                continue  # an instance-wide variable: its own check reports it
            where = f"{prefix}{key.upper()}" if key else f"backend {name} ({prefix}*)"
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        return None
    used = frozenset(spec.fallback[k] for k in borrowed)
    return BackendConfig(name, kind, settings, used)


def _names(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(n for n, _ in pairs) or "none"
