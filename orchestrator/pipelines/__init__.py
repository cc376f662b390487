"""Pipelines: initialising them on an instance and running their steps."""
