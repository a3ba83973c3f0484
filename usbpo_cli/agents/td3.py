"""TD3, Twin Delayed DDPG (Fujimoto et al. 2018, "Addressing Function Approximation Error in
Actor-Critic Methods"): the second policy optimiser, beside SAC, behind the same interface.

Three changes to DDPG, each against the overestimation a learned critic feeds its actor:
1. clipped double-Q: the TD target takes the smaller of two target critics;
2. target policy smoothing: the target action gets clipped Gaussian noise, so the target is an
   average over nearby actions and a narrow peak of the critic cannot be exploited;
3. delayed updates: the actor and all target networks move once per `policy_delay` critic
   updates, so the actor follows a critic whose error has had time to shrink.
Twin critics are one `BatchedMLP` with a member axis, as in SAC.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from usbpo_cli.agents.buffers import Batch
from usbpo_cli.errors import UsageError
from usbpo_cli.models.distributions import normal_like
from usbpo_cli.models.nets import BatchedMLP, mlp, twin_q
from usbpo_cli.models.optim import make_adam
from usbpo_cli.util import torch_private
from usbpo_cli.util.settings import Settings, param


@dataclass
class TD3Settings(Settings):
    """TD3's own settings, for every config whose agent may build a TD3 policy optimiser."""

    td3_exploration_noise: float = param(
        0.1, "TD3: std of the Gaussian action noise when acting, in units of the action scale"
    )
    td3_policy_noise: float = param(
        0.2, "TD3: std of the target-policy smoothing noise, in units of the action scale"
    )
    td3_noise_clip: float = param(0.5, "TD3: the smoothing noise is clipped to +-this")
    td3_policy_delay: int = param(2, "TD3: critic updates per actor and target update")

    def validate(self) -> None:
        super().validate()
        self.require_non_negative("td3_exploration_noise", "td3_policy_noise", "td3_noise_clip")
        if self.td3_policy_delay < 1:
            raise UsageError(f"td3_policy_delay must be >= 1, got {self.td3_policy_delay}")


class DeterministicActor(nn.Module):
    """A deterministic policy: tanh output rescaled to the action bounds.

    It also carries the standard deviation of its exploration noise (`exploration_std`, in
    action units): with it the actor *is* the behaviour policy N(mu(s), std^2) (then clipped),
    which is what PDML needs to compare two snapshots of a TD3 policy.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_size: int,
        act_low: torch.Tensor,
        act_high: torch.Tensor,
        exploration_noise: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.body = mlp(obs_dim, hidden_size, act_dim, generator=generator)
        act_scale = (act_high - act_low) / 2.0
        self.register_buffer("act_scale", act_scale)
        self.register_buffer("act_bias", (act_high + act_low) / 2.0)
        self.register_buffer("act_low", act_low.clone())
        self.register_buffer("act_high", act_high.clone())
        self.register_buffer("exploration_std", exploration_noise * act_scale)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(obs)) * self.act_scale + self.act_bias

    def clip(self, action: torch.Tensor) -> torch.Tensor:
        """Clip to the action bounds, per dimension."""
        return torch.clamp(action, self.act_low, self.act_high)


class TD3:
    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        act_low: torch.Tensor,
        act_high: torch.Tensor,
        *,
        hidden_size: int = 256,
        lr: float = 3e-4,
        gamma: float = 0.99,
        tau: float = 5e-3,
        exploration_noise: float = 0.1,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_delay: int = 2,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        init_generator: torch.Generator | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.generator = generator  # exploration and target-smoothing noise
        self.gamma, self.tau = gamma, tau
        self.policy_noise, self.noise_clip, self.policy_delay = (
            policy_noise,
            noise_clip,
            policy_delay,
        )
        self.actor = DeterministicActor(
            obs_dim, act_dim, hidden_size, act_low, act_high, exploration_noise, init_generator
        ).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = BatchedMLP(
            2, obs_dim + act_dim, 1, hidden_size, 2, generator=init_generator
        ).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = make_adam(self.actor.parameters(), lr)
        self.critic_opt = make_adam(self.critic.parameters(), lr)
        # Online and target parameters in matching order, for one fused Polyak step.
        self._online_params = [*self.critic.parameters(), *self.actor.parameters()]
        self._target_params = [*self.critic_target.parameters(), *self.actor_target.parameters()]
        self.updates = 0  # critic updates so far; the actor moves when it is a multiple of delay

    def _q1_detached(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """The first critic alone, its parameters cut from autograd (the actor's loss: TD3
        ascends Q1, not the minimum of the twins, and only the actor may get gradients)."""
        x = torch.cat([obs, act], dim=-1)
        layers = self.critic.layers
        for layer in layers[:-1]:
            x = self.critic.activation(
                torch.addmm(layer.bias[0].detach(), x, layer.weight[0].detach())
            )
        last = layers[-1]
        return torch.addmm(last.bias[0].detach(), x, last.weight[0].detach()).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """mu(s), plus N(0, exploration_noise * action scale) clipped to the bounds when
        exploring."""
        action = self.actor(obs)
        if deterministic:
            return action
        noise = normal_like(action, self.generator)
        return self.actor.clip(action + noise * self.actor.exploration_std)

    @torch.no_grad()
    def target_actions(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Target policy smoothing: the target actor's action plus N(0, policy_noise) clipped to
        +-noise_clip (both in units of the action scale), then clipped to the bounds."""
        action = self.actor_target(next_obs)
        noise = (normal_like(action, self.generator) * self.policy_noise).clamp(
            -self.noise_clip, self.noise_clip
        )
        return self.actor.clip(action + noise * self.actor.act_scale)

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """Clipped double-Q: r + gamma (1 - done) min_i Q'_i(s', smoothed target action)."""
        next_act = self.target_actions(batch.next_obs)
        next_q = twin_q(self.critic_target, batch.next_obs, next_act).min(0).values
        return batch.rew + self.gamma * (1.0 - batch.done) * next_q

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One critic step; every `policy_delay`-th call also an actor step and the Polyak
        update of all targets. Returns only the losses computed in this call (no `actor_loss`
        on critic-only calls), so the logged actor loss is a mean over real actor updates."""
        target = self.td_target(batch)
        q = twin_q(self.critic, batch.obs, batch.act)
        # The same scale as SAC's critic loss (half the summed twin MSEs), so the CSV column
        # compares across policy optimisers; Adam makes the factor irrelevant to learning.
        critic_loss = 0.5 * ((q - target) ** 2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.updates += 1
        losses = {"critic_loss": critic_loss.detach()}
        if self.updates % self.policy_delay == 0:
            actor_loss = -self._q1_detached(batch.obs, self.actor(batch.obs)).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            with torch.no_grad():
                torch_private.lerp_(self._target_params, self._online_params, self.tau)
            losses["actor_loss"] = actor_loss.detach()
        return losses

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.updates = int(state["updates"])
