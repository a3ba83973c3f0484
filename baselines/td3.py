"""Model-free TD3 (Fujimoto et al. 2018): `updates_per_step` critic updates on real data per env
step, the actor and targets every `td3_policy_delay` of them
(the policy is `usbpo_cli/agents/td3.py`)."""

from usbpo_cli.agents.offpolicy import OffPolicyAgent
from usbpo_cli.agents.registry import register
from usbpo_cli.runs.config import TD3Config


class TD3Agent(OffPolicyAgent):
    def learn(self, step: int) -> None:
        self.update_policy(self.config.updates_per_step)


register("td3", TD3Agent, TD3Config, "TD3: model-free twin delayed DDPG", model_based=False)
