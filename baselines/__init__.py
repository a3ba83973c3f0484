"""Baseline agents. Importing this package registers them with `usbpo_cli.agents.registry`."""

from baselines import alm, cmlo, mbpo, pdml, ppo, sac, td3  # noqa: F401
