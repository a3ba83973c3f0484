"""Model-free SAC (Haarnoja et al. 2018): `updates_per_step` updates on real data per env step."""

from usbpo_cli.agents.offpolicy import OffPolicyAgent
from usbpo_cli.agents.registry import register
from usbpo_cli.runs.config import SACConfig


class SACAgent(OffPolicyAgent):
    def learn(self, step: int) -> None:
        self.update_policy(self.config.updates_per_step)


register("sac", SACAgent, SACConfig, "SAC: model-free soft actor-critic", model_based=False)
