"""MBPO (Janner et al. 2019): exactly the shared Dyna loop, with no phase 2."""

from usbpo_cli.config import DynaConfig
from usbpo_cli.dyna import DynaAgent
from usbpo_cli.registry import register


class MBPOAgent(DynaAgent):
    """The shared loop says it all; this class exists so MBPO has a name of its own."""


register(
    "mbpo", MBPOAgent, DynaConfig, "MBPO: ensemble model, branched rollouts, SAC", model_based=True
)
