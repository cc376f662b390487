"""What the executor and the orchestrator share: the /run, /kill and /image models, the names and image
rules, and the error hierarchy (one JSON error shape on both sides).

Imports nothing of ``orchestrator`` and nothing beyond the standard library and pydantic; this face
imports nothing at all, so maoctl can read the names rule without pydantic.
"""
