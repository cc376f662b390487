"""A table of settings: each setting one row (its field, variable, parser, check, default, doc line and
whether it is a secret), read from the environment with every problem collected, never the first alone.

The orchestrator's configuration (``orchestrator/config/``) and the executor's (``executor/config.py``)
declare their settings as rows of this one kind, so that both read, check, describe and document a
variable the same way. It lives in ``executor/wire/`` because that is what both sides already share and
import downward (the names rule, the errors); it imports nothing of the project.

A parser takes the variable's name and its raw text (never empty: an unset or empty variable takes the
default) and returns the value, or raises ``Invalid`` with the whole problem sentence(s), the variable
named in each. A check takes the variable's name and the parsed value and returns a problem or None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
Parser = Callable[[str, str], T]
Check = Callable[[str, T], "str | None"]
MASK = "***"


class Invalid(ValueError):
    """A parser's refusal: one or more problem sentences, each naming the variable."""

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)
        self.problems = problems


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: ``name`` is its field on the settings object, ``variable`` the environment
    variable it is read from, ``default`` its value when the variable is unset or empty (or its raw
    text is refused by ``parse``: the problem is listed and reading goes on; a value ``check`` refuses
    is kept, its problem listed), ``doc`` one line for the operator."""

    name: str
    variable: str
    parse: Parser[T]
    default: T
    doc: str
    check: Check[T] | None = None
    secret: bool = False
    # An empty (set but blank) variable is judged by parse and check, not taken as unset: for the
    # settings whose empty value is a mistake worth naming (the executor's host and Docker socket).
    keep_empty: bool = False


class Reader:
    """Reads rows from one environment into values, appending every problem to ``problems``.

    ``strip``: surrounding blanks are dropped before a value is judged (the executor's habit; the
    orchestrator's values are taken as written, an empty one counting as unset)."""

    def __init__(self, environ: Mapping[str, str], problems: list[str], *, strip: bool = False) -> None:
        self.environ = environ
        self.problems = problems
        self.strip = strip

    def raw(self, variable: str) -> str | None:
        """The variable's text, or None when it is unset or empty."""
        value = self.environ.get(variable)
        if value is not None and self.strip:
            value = value.strip()
        return value or None

    def __call__(self, setting: Setting[T]) -> T:
        raw = self.environ.get(setting.variable)
        if raw is not None and self.strip:
            raw = raw.strip()
        if raw is None or (raw == "" and not setting.keep_empty):
            return setting.default
        try:
            value = setting.parse(setting.variable, raw)
        except Invalid as exc:
            self.problems.extend(exc.problems)
            return setting.default
        if setting.check is not None and (problem := setting.check(setting.variable, value)):
            # Kept as given: the start fails anyway, and the checks across settings judge what the
            # operator wrote (an empty host is also not loopback), not a default they did not write.
            self.problems.append(problem)
        return value


def shown(setting: Setting[object], value: object) -> object:
    """A value as ``--check-config`` shows it: a secret masked (never any part of it)."""
    if setting.secret:
        return MASK if value else None
    return value


# -- parsers ---------------------------------------------------------------------------------------------


def text(variable: str, raw: str) -> str:
    """The raw text itself."""
    return raw


def integer(low: int, high: int, style: str = "orchestrator") -> Parser[int]:
    """A whole number in [low, high]; ``style`` picks the wording of the two sides' problems."""

    def parse(variable: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            if style == "executor":
                raise Invalid(f"{variable} must be an integer between {low} and {high}, got {raw!r}") from None
            raise Invalid(f"{variable}={raw!r} is not an integer") from None
        if not low <= value <= high:
            if style == "executor":
                raise Invalid(f"{variable} must be between {low} and {high}, got {value}")
            raise Invalid(f"{variable}={raw} must be between {low:g} and {high:g}")
        return value

    return parse


def number(low: float, high: float) -> Parser[float]:
    """A number in [low, high]."""

    def parse(variable: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise Invalid(f"{variable}={raw!r} is not a number") from None
        if not low <= value <= high:
            raise Invalid(f"{variable}={raw} must be between {low:g} and {high:g}")
        return value

    return parse


def choice(options: tuple[str, ...], problem: str, *, fold: Callable[[str], str] = str.lower) -> Parser[str]:
    """One of ``options`` after ``fold``; ``problem`` is the refusal, formatted with ``variable`` and
    ``value`` (the folded text)."""

    def parse(variable: str, raw: str) -> str:
        value = fold(raw)
        if value not in options:
            raise Invalid(problem.format(variable=variable, value=value))
        return value

    return parse


TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no")


def flag(variable: str, raw: str) -> bool:
    """1/true/yes or 0/false/no, any case."""
    value = raw.lower()
    if value not in TRUE + FALSE:
        raise Invalid(f"{variable}={value!r} must be 1 or 0")
    return value in TRUE
