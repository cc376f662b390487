"""Fan-out: one container per shard of a step's input files (docs/fan-out.md).

- ``coordinator``: which shard's container runs when (parallelism, retries, speculation); no Docker.
- ``files``: the files side: listing and splitting the input, materialising a shard, combining outputs.
- ``step``: one fan-out step from input snapshot to combined output (files + coordinator).
- ``attempt``: the step in the run engine: attempt records, commit and vote (``runs.attempt``'s parts).
"""
