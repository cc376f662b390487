"""The interactive wizards: ``instance install`` and ``instance init``."""
