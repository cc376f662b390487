"""What the executor and the orchestrator share: the /run, /kill and /image models, the container API's
models (``containers.py``: submit, wait, list; the Docker backend's wire), the names and image rules,
and the error hierarchy (one JSON error shape on both sides).

Imports nothing of ``orchestrator`` and nothing beyond the standard library and pydantic; this face
imports nothing at all, so maoctl can read the names rule without pydantic.
"""
