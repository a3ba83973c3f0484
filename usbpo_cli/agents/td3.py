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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from usbpo_cli.agents.buffers import Batch
from usbpo_cli.errors import UsageError
from usbpo_cli.models.distributions import seed_normal
from usbpo_cli.models.nets import BatchedMLP, seed_mlp, stacked_mlp, twin_q
from usbpo_cli.models.optim import make_adam
from usbpo_cli.models.seed_axis import (
    adam_seed_state,
    load_adam_seed_state,
    load_module_seed_state,
    module_axes,
    module_seed_state,
    parameter_axes,
)
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
    which is what PDML needs to compare two snapshots of a TD3 policy. One actor per seed, as
    one network with a seed axis.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_size: int,
        act_low: torch.Tensor,
        act_high: torch.Tensor,
        exploration_noise: float = 0.1,
        generators: Sequence[torch.Generator | None] = (None,),
    ) -> None:
        super().__init__()
        self.seeds = len(generators)
        self.body = seed_mlp(self.seeds, obs_dim, hidden_size, act_dim, generators=generators)
        act_scale = (act_high - act_low) / 2.0
        self.register_buffer("act_scale", act_scale)
        self.register_buffer("act_bias", (act_high + act_low) / 2.0)
        self.register_buffer("act_low", act_low.clone())
        self.register_buffer("act_high", act_high.clone())
        self.register_buffer("exploration_std", exploration_noise * act_scale)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """mu(s) for [S, N, obs] (one actor per seed), or a lone seed's [N, obs]."""
        return torch.tanh(self.body(obs)) * self.act_scale + self.act_bias

    def clip(self, action: torch.Tensor) -> torch.Tensor:
        """Clip to the action bounds, per dimension."""
        return torch.clamp(action, self.act_low, self.act_high)


class TD3:
    """TD3 for S seeds at once (`generators`: one per seed; one seed is S = 1): S actors and 2S
    critics as batched networks, each seed's slice updated on its own batch exactly as a lone
    TD3 would be. Inputs carry a leading seed axis ([S, N, ...]); with one seed it may be left
    out."""

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
        generators: Sequence[torch.Generator | None] = (None,),
        init_generators: Sequence[torch.Generator | None] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.generators = list(generators)  # exploration and target-smoothing noise, per seed
        self.seeds = len(self.generators)
        init_generators = list(init_generators or self.generators)
        self.gamma, self.tau = gamma, tau
        self.policy_noise, self.noise_clip, self.policy_delay = (
            policy_noise,
            noise_clip,
            policy_delay,
        )
        self.actor = DeterministicActor(
            obs_dim, act_dim, hidden_size, act_low, act_high, exploration_noise, init_generators
        ).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        critics = [
            BatchedMLP(2, obs_dim + act_dim, 1, hidden_size, 2, generator=g)
            for g in init_generators
        ]
        self.critic = stacked_mlp(critics).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = make_adam(self.actor.parameters(), lr)
        self.critic_opt = make_adam(self.critic.parameters(), lr)
        # Online and target parameters in matching order, for one fused Polyak step.
        self._online_params = [*self.critic.parameters(), *self.actor.parameters()]
        self._target_params = [*self.critic_target.parameters(), *self.actor_target.parameters()]
        self.updates = 0  # critic updates so far; the actor moves when it is a multiple of delay

    def _q1_detached(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Each seed's first critic alone, its parameters cut from autograd (the actor's loss:
        TD3 ascends Q1, not the minimum of the twins, and only the actor may get gradients):
        [S, N]."""
        x = torch.cat([obs, act], dim=-1)
        seeds = x.shape[0]
        layers = self.critic.layers
        for i, layer in enumerate(layers):
            weight = layer.weight.detach().view(seeds, 2, *layer.weight.shape[1:])[:, 0]
            bias = layer.bias.detach().view(seeds, 2, *layer.bias.shape[1:])[:, 0]
            x = torch.baddbmm(bias, x, weight)
            if i < len(layers) - 1:
                x = self.critic.activation(x)
        return x.squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """mu(s), plus N(0, exploration_noise * action scale) clipped to the bounds when
        exploring."""
        action = self.actor(obs)
        if deterministic:
            return action
        noise = seed_normal(action, self.generators)
        return self.actor.clip(action + noise * self.actor.exploration_std)

    @torch.no_grad()
    def target_actions(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Target policy smoothing: the target actor's action plus N(0, policy_noise) clipped to
        +-noise_clip (both in units of the action scale), then clipped to the bounds."""
        action = self.actor_target(next_obs)
        noise = (seed_normal(action, self.generators) * self.policy_noise).clamp(
            -self.noise_clip, self.noise_clip
        )
        return self.actor.clip(action + noise * self.actor.act_scale)

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """Clipped double-Q: r + gamma (1 - done) min_i Q'_i(s', smoothed target action)."""
        next_act = self.target_actions(batch.next_obs)
        next_q = twin_q(self.critic_target, batch.next_obs, next_act).min(-2).values  # twins
        return batch.rew + self.gamma * (1.0 - batch.done) * next_q

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One critic step; every `policy_delay`-th call also an actor step and the Polyak
        update of all targets. Returns only the losses computed in this call (no `actor_loss`
        on critic-only calls), so the logged actor loss is a mean over real actor updates;
        each seed's ([S]; scalars when the batch has no seed axis)."""
        lone = batch.obs.dim() == 2
        if lone:
            batch = Batch(*(field.unsqueeze(0) for field in batch))
        target = self.td_target(batch)
        q = twin_q(self.critic, batch.obs, batch.act)
        # The same scale as SAC's critic loss (half the summed twin MSEs), so the CSV column
        # compares across policy optimisers; Adam makes the factor irrelevant to learning.
        critic_loss = 0.5 * ((q - target.unsqueeze(-2)) ** 2).mean(2).sum(1)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.sum().backward()  # seeds share no parameters: each gets its own gradient
        self.critic_opt.step()
        self.updates += 1
        losses = {"critic_loss": critic_loss.detach()}
        if self.updates % self.policy_delay == 0:
            actor_loss = -self._q1_detached(batch.obs, self.actor(batch.obs)).mean(1)
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.sum().backward()
            self.actor_opt.step()
            with torch.no_grad():
                torch_private.lerp_(self._target_params, self._online_params, self.tau)
            losses["actor_loss"] = actor_loss.detach()
        return {key: value[0] for key, value in losses.items()} if lone else losses

    # --- checkpoints: one seed at a time, in a lone run's layout -------------------------
    def _axes(self) -> dict:
        actor, critic = module_axes(self.actor, self.seeds), module_axes(self.critic, self.seeds)
        return {
            "actor": actor,
            "critic": critic,
            "actor_opt": parameter_axes(self.actor, actor),
            "critic_opt": parameter_axes(self.critic, critic),
        }

    def state_dict(self, seed: int = 0) -> dict:
        axes = self._axes()
        return {
            "actor": module_seed_state(self.actor, axes["actor"], seed),
            "actor_target": module_seed_state(self.actor_target, axes["actor"], seed),
            "critic": module_seed_state(self.critic, axes["critic"], seed),
            "critic_target": module_seed_state(self.critic_target, axes["critic"], seed),
            "actor_opt": adam_seed_state(self.actor_opt, axes["actor_opt"], seed),
            "critic_opt": adam_seed_state(self.critic_opt, axes["critic_opt"], seed),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict, seed: int = 0) -> None:
        axes = self._axes()
        load_module_seed_state(self.actor, axes["actor"], state["actor"], seed)
        load_module_seed_state(self.actor_target, axes["actor"], state["actor_target"], seed)
        load_module_seed_state(self.critic, axes["critic"], state["critic"], seed)
        load_module_seed_state(self.critic_target, axes["critic"], state["critic_target"], seed)
        load_adam_seed_state(self.actor_opt, axes["actor_opt"], state["actor_opt"], seed)
        load_adam_seed_state(self.critic_opt, axes["critic_opt"], state["critic_opt"], seed)
        self.updates = int(state["updates"])
