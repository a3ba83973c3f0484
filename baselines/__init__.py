"""Baseline agents. Importing this package registers them with `usbpo_cli.registry`."""

from baselines import mbpo, sac  # noqa: F401
