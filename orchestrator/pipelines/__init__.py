"""Pipelines: initialising them on an instance (with the check of every step) and deleting them."""
