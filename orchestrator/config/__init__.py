"""The orchestrator's settings, read from ``MAO_*`` environment variables.

An optional env-style file (``MAO_CONFIG_FILE``, ``KEY=VALUE`` lines, the same file ``maoctl instance
install`` writes) supplies values the environment does not set. Everything is validated at start and a
configuration that cannot work is refused with every problem listed at once.
"""

from .checks import is_loopback, parse_pools
from .load import load_settings, read_env_file
from .settings import Settings

__all__ = ["Settings", "is_loopback", "load_settings", "parse_pools", "read_env_file"]
