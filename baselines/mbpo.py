"""MBPO (Janner et al. 2019): exactly the shared Dyna loop, with no phase 2."""

from usbpo_cli.agents.dyna import DynaAgent
from usbpo_cli.agents.registry import register
from usbpo_cli.runs.config import DynaConfig


class MBPOAgent(DynaAgent):
    """The shared loop says it all; this class exists so MBPO has a name of its own."""


register(
    "mbpo", MBPOAgent, DynaConfig, "MBPO: ensemble model, branched rollouts, SAC", model_based=True
)
