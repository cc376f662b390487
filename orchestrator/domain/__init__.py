"""Value types at the bottom of the house: pipeline, step and fan-out definitions, run/step/attempt
states and their transition tables, the step graph, sizes and the pure checks of a dataset's master.

Imports nothing of ``orchestrator`` outside this package (only ``executor.wire``'s names rule, the
rule both services share), so every layer above may use it.
"""
