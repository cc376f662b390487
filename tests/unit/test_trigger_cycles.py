"""Data trigger cycles (orchestrator/scheduling/trigger_cycles.py) on generated graphs: a chain is named exactly
when arming the trigger lets a run start itself again, and the chain named is a real one."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.scheduling.trigger_cycles import ArmedTrigger, describe, find_cycle

PIPELINES = [f"p{i}" for i in range(6)]
DATASETS = [f"d{i}" for i in range(6)]

graphs = st.fixed_dictionaries(
    {
        "outputs": st.fixed_dictionaries(
            {p: st.sets(st.sampled_from(DATASETS), max_size=3) for p in PIPELINES}
        ),
        "armed": st.lists(
            st.builds(ArmedTrigger, st.sampled_from(PIPELINES), st.sampled_from(DATASETS)), max_size=10
        ),
        "new": st.builds(ArmedTrigger, st.sampled_from(PIPELINES), st.sampled_from(DATASETS)),
    }
)


def reaches(start: str, goal_dataset: str, outputs: dict[str, set[str]], armed: list[ArmedTrigger]) -> bool:
    """Reference: the pipelines a run of ``start`` eventually starts (closure), one of which writes
    ``goal_dataset``."""
    seen, frontier = {start}, [start]
    while frontier:
        pipeline = frontier.pop()
        if goal_dataset in outputs[pipeline]:
            return True
        for trigger in armed:
            if trigger.dataset in outputs[pipeline] and trigger.pipeline not in seen:
                seen.add(trigger.pipeline)
                frontier.append(trigger.pipeline)
    return False


@settings(max_examples=400, deadline=None, derandomize=True)
@given(graph=graphs)
def test_a_cycle_is_named_exactly_when_one_closes(graph: dict) -> None:
    outputs, armed, new = graph["outputs"], graph["armed"], graph["new"]
    asked: list[str] = []

    async def written(name: str) -> set[str]:
        asked.append(name)
        return outputs[name]

    chain = asyncio.run(find_cycle(new, armed, written))
    assert (chain is not None) == reaches(new.pipeline, new.dataset, outputs, armed)
    if chain is None:
        return
    # [P, d, P', d', ..., P]: each pipeline writes the dataset after it, each dataset starts the next.
    assert chain[0] == chain[-1] == new.pipeline and len(chain) % 2 == 1
    triggers = {*armed, new}
    for i in range(0, len(chain) - 2, 2):
        pipeline, dataset, following = chain[i], chain[i + 1], chain[i + 2]
        assert dataset in outputs[pipeline]
        assert ArmedTrigger(following, dataset) in triggers
    assert describe(chain)
    assert len(asked) == len(set(asked))  # each pipeline's outputs read once


def test_the_messages_name_the_chain() -> None:
    two = describe(["a", "d1", "b", "d2", "a"])
    assert "a -> d1 -> b -> d2 -> a" in two and "cycle" in two
    assert "writes 'd' itself" in describe(["a", "d", "a"])
