"""Model-free SAC (Haarnoja et al. 2018) and TD3 (Fujimoto et al. 2018): the off-policy loop
with `updates_per_step` updates on real data per env step and nothing else. One agent class,
registered twice: the config says which policy optimiser it builds (`usbpo_cli/agents/sac.py`,
`usbpo_cli/agents/td3.py`); TD3's actor and targets move every `td3_policy_delay` updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from usbpo_cli.agents.offpolicy import OffPolicyAgent, OffPolicyConfig
from usbpo_cli.agents.registry import Algorithm
from usbpo_cli.agents.sac import SACSettings
from usbpo_cli.agents.td3 import TD3Settings
from usbpo_cli.util.settings import param


def _one_policy(name: str) -> dict[str, str]:
    """`--set policy=...` on a model-free algo: say which algo trains that policy."""
    message = f"algo {name} trains {name} only: for model-free {{value}} use --algo {{value}}"
    return {"policy": message}


@dataclass
class SACConfig(SACSettings, OffPolicyConfig):
    """Model-free SAC as in its paper: one update per env step, target entropy -action_dim."""

    refused_keys: ClassVar[dict[str, str]] = _one_policy("sac")

    updates_per_step: int = param(1, "policy gradient updates per real env step")

    def policy_optimiser(self) -> str:
        return "sac"


@dataclass
class TD3Config(TD3Settings, OffPolicyConfig):
    """Model-free TD3 as in its paper: one update per env step; the random initial steps are
    SAC's (5000), so the two model-free baselines start learning at the same point."""

    refused_keys: ClassVar[dict[str, str]] = _one_policy("td3")

    updates_per_step: int = param(1, "critic updates per real env step")

    def policy_optimiser(self) -> str:
        return "td3"


class ModelFreeAgent(OffPolicyAgent):
    """`updates_per_step` policy updates on real data after every env step."""

    def learn(self, step: int) -> None:
        self.update_policy(self.config.updates_per_step)


SAC_ALGORITHM = Algorithm("sac", ModelFreeAgent, SACConfig, "SAC: model-free soft actor-critic")
TD3_ALGORITHM = Algorithm("td3", ModelFreeAgent, TD3Config, "TD3: model-free twin delayed DDPG")
