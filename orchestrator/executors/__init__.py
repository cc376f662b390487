"""Where steps run: the seam every backend implements (``seam.py``), the kinds and the configured
backends (``registry.py``, ``backends.py``), and the kinds themselves (``docker.py``: the executor
service on this host). docs/backends.md says how an operator chooses."""
