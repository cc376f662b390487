"""The run engine: a pipeline run as a graph of steps, each a series of attempts (see engine.py)."""
