"""MAO orchestrator: the node daemon of a MAO federation instance.

Kept import-light on purpose: maoctl imports ``orchestrator.__version__`` without the daemon's dependencies.
"""

__version__ = "0.1.0"
