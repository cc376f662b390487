"""Thin helpers over questionary: one validator style, a terminal check, Ctrl-C as a clean abort."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..safe_text import clean

Check = Callable[[str], str | None]  # returns why the answer is wrong, or None


def require_terminal(what: str, alternative: str) -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.UsageError(f"{what} asks its questions in a terminal; without one, {alternative}")


def _validator(check: Check | None) -> Callable[[str], bool | str]:
    def validate(text: str) -> bool | str:
        problem = check(text) if check else None
        return True if problem is None else problem

    return validate


def _ask(question: Any) -> Any:
    # unsafe_ask lets Ctrl-C raise KeyboardInterrupt, which click turns into "Aborted!" (exit 1).
    answer = question.unsafe_ask()
    if answer is None:
        raise click.Abort()
    return answer


def text(message: str, default: str = "", check: Check | None = None, instruction: str | None = None) -> str:
    import questionary

    return str(
        _ask(
            questionary.text(
                clean(message), default=default, validate=_validator(check), instruction=instruction
            )
        )
    ).strip()


def path(message: str, default: str = "", check: Check | None = None) -> str:
    import questionary

    return str(
        _ask(
            questionary.path(
                clean(message), default=default, validate=_validator(check), only_directories=True
            )
        )
    ).strip()


def secret(message: str) -> str:
    import questionary

    return str(
        _ask(
            questionary.password(
                clean(message), validate=_validator(lambda v: None if v else "a value is needed")
            )
        )
    )


def confirm(message: str, default: bool = False) -> bool:
    import questionary

    return bool(_ask(questionary.confirm(clean(message), default=default)))


def select(message: str, choices: Sequence[tuple[str, Any]], default: Any = None) -> Any:
    import questionary

    # Titles may quote a marketplace or etcd (federation descriptions, names): shown cleaned.
    options = [questionary.Choice(clean(title), value=value) for title, value in choices]
    chosen = next((c for c in options if c.value == default), None)
    return _ask(questionary.select(clean(message), choices=options, default=chosen))


def checkbox(message: str, choices: Sequence[tuple[str, Any, str | None]]) -> list[Any]:
    """``choices`` are ``(title, value, disabled_reason or None)``."""
    import questionary

    options = [
        questionary.Choice(clean(title), value=value, disabled=clean(disabled) if disabled else None)
        for title, value, disabled in choices
    ]
    return list(_ask(questionary.checkbox(clean(message), choices=options)))
