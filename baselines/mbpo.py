"""MBPO (Janner et al. 2019): exactly the shared Dyna loop, with no phase 2."""

from usbpo_cli.agents.dyna import DynaAgent, DynaConfig
from usbpo_cli.agents.registry import Algorithm


class MBPOAgent(DynaAgent):
    """The shared loop says it all; this class exists so MBPO has a name of its own."""


ALGORITHM = Algorithm("mbpo", MBPOAgent, DynaConfig, "MBPO: ensemble model, branched rollouts, SAC")
