"""Model-free TD3 (Fujimoto et al. 2018): `updates_per_step` critic updates on real data per env
step, the actor and targets every `td3_policy_delay` of them (the policy is `usbpo_cli/td3.py`)."""

from usbpo_cli.config import TD3Config
from usbpo_cli.loop import OffPolicyAgent
from usbpo_cli.registry import register


class TD3Agent(OffPolicyAgent):
    def learn(self, step: int) -> None:
        self.update_policy(self.config.updates_per_step)


register("td3", TD3Agent, TD3Config, "TD3: model-free twin delayed DDPG", model_based=False)
