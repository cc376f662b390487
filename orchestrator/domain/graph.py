"""A pipeline's steps as a graph: ``needs`` resolved (absent: the previous step; ``[]``: a root),
checked at ``POST /pipeline/init`` (unknown names, duplicates, cycles), and ordered for running.

Pure functions on names so they are unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class GraphError(ValueError):
    """The steps do not form a graph we can run; ``steps`` names the offending ones."""

    def __init__(self, message: str, steps: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.steps = steps


@dataclass(frozen=True)
class StepNode:
    name: str
    needs: tuple[str, ...]


def resolve(names: Sequence[str], declared: Sequence[Sequence[str] | None]) -> list[StepNode]:
    """Each step with its needs; a step that declares none needs the one before it (the prototype's
    straight line), the first step none. Raises GraphError for duplicates, unknown needs or cycles."""
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        raise GraphError(f"step names must be unique within a pipeline: {', '.join(duplicates)}", duplicates)
    nodes = []
    for index, (name, needs) in enumerate(zip(names, declared, strict=True)):
        if needs is None:
            resolved: tuple[str, ...] = (names[index - 1],) if index else ()
        else:
            resolved = tuple(dict.fromkeys(needs))
        nodes.append(StepNode(name, resolved))
    known = set(names)
    unknown = [f"{n.name} needs {need!r}" for n in nodes for need in n.needs if need not in known]
    if unknown:
        raise GraphError(
            "steps need steps that do not exist: " + "; ".join(unknown),
            sorted({n.name for n in nodes if any(x not in known for x in n.needs)}),
        )
    selfish = [n.name for n in nodes if n.name in n.needs]
    if selfish:
        raise GraphError(f"steps cannot need themselves: {', '.join(selfish)}", selfish)
    cycle = find_cycle({n.name: n.needs for n in nodes})
    if cycle:
        raise GraphError("the steps' needs form a cycle: " + " -> ".join([*cycle, cycle[0]]), cycle)
    return nodes


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle of the graph (as a list of names), or [] when there is none."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(needs, white)
    stack: list[str] = []

    def visit(name: str) -> list[str]:
        colour[name] = grey
        stack.append(name)
        for need in needs.get(name, ()):
            if colour.get(need) == grey:
                return stack[stack.index(need) :]
            if colour.get(need) == white:
                found = visit(need)
                if found:
                    return found
        stack.pop()
        colour[name] = black
        return []

    for name in needs:
        if colour[name] == white:
            found = visit(name)
            if found:
                return found
    return []


def dependants(nodes: Sequence[StepNode]) -> dict[str, list[str]]:
    """For each step, the steps that need it."""
    result: dict[str, list[str]] = {n.name: [] for n in nodes}
    for node in nodes:
        for need in node.needs:
            result[need].append(node.name)
    return result


def downstream(nodes: Sequence[StepNode], start: str) -> list[str]:
    """Every step that (transitively) needs ``start``, in pipeline order."""
    below = dependants(nodes)
    seen: set[str] = set()
    todo = [start]
    while todo:
        for child in below[todo.pop()]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return [n.name for n in nodes if n.name in seen]
