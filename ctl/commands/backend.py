"""``maoctl backend``: where this instance's steps can run (``MAO_BACKENDS``, docs/backends.md)."""

from __future__ import annotations

import click

from ..context import Ctl, json_option, pass_ctl


@click.group()
def backend() -> None:
    """The backends steps run on: the local Docker executor, a cluster (MAO_BACKENDS)."""


@backend.command("list")
@json_option
@pass_ctl
def list_backends(ctl: Ctl) -> None:
    """Every backend: name, kind, health, attempts running there, its GPUs and what it enforces."""
    backends = ctl.api.get("/backends")
    ctl.out.show(
        backends,
        lambda: ctl.out.table(
            ["name", "kind", "default", "health", "running", "gpus", "enforces"],
            [
                [
                    b.get("name"),
                    b.get("kind"),
                    "yes" if b.get("default") else "",
                    "ok" if (b.get("health") or {}).get("ok") else (b.get("health") or {}).get("message"),
                    b.get("running"),
                    _gpus((b.get("capabilities") or {}).get("gpus")),
                    ", ".join((b.get("capabilities") or {}).get("enforces") or []),
                ]
                for b in backends
            ],
            title="backends",
        ),
    )


def _gpus(value: object) -> str:
    # None: the engine does not say how many (a Kubernetes account that may not list nodes).
    return "?" if value is None else str(value)
