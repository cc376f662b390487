"""The backends' settings (``MAO_BACKENDS`` and each backend's ``MAO_BACKEND_<NAME>_<KEY>``): one
pydantic model per kind, read and checked at start without importing the backends themselves."""
