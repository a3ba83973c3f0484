"""Baseline algorithms. Each module publishes an `Algorithm` value that pyproject.toml lists as
an entry point of the group `usbpo.algorithms`; importing a module registers nothing."""
