"""Soft Actor-Critic (Haarnoja et al. 2018) with twin critics as one batched network and
automatic entropy tuning. Used by the model-free SAC baseline and as the Dyna loop's policy."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from usbpo_cli.buffers import Batch
from usbpo_cli.nets import BatchedMLP, mlp, twin_q

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def make_adam(params, lr: float) -> torch.optim.Adam:
    """Adam with the fastest available step implementation (fused, else foreach)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


class TanhGaussianActor(nn.Module):
    """State-conditioned Gaussian squashed by tanh and rescaled to the action bounds."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_size: int,
        act_low: torch.Tensor,
        act_high: torch.Tensor,
    ) -> None:
        super().__init__()
        self.body = mlp(obs_dim, hidden_size, 2 * act_dim)
        self.register_buffer("act_scale", (act_high - act_low) / 2.0)
        self.register_buffer("act_bias", (act_high + act_low) / 2.0)

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Action and its log-probability (the latter meaningless when deterministic)."""
        mean, log_std = self.body(obs).chunk(2, dim=-1)
        if deterministic:
            return torch.tanh(mean) * self.act_scale + self.act_bias, torch.zeros_like(mean[..., 0])
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        noise = torch.randn_like(mean)
        pre_tanh = mean + std * noise
        squashed = torch.tanh(pre_tanh)
        # log N(pre_tanh) minus the log-det of tanh (numerically stable form) and of the scale.
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(
            -1
        )
        log_prob = log_prob - torch.log(self.act_scale).sum()
        return squashed * self.act_scale + self.act_bias, log_prob


class SAC:
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
        target_entropy: float | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.gamma, self.tau = gamma, tau
        self.target_entropy = float(-act_dim if target_entropy is None else target_entropy)
        self.actor = TanhGaussianActor(obs_dim, act_dim, hidden_size, act_low, act_high).to(device)
        self.critic = BatchedMLP(2, obs_dim + act_dim, 1, hidden_size, 2).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=self.device, requires_grad=True)
        self.actor_opt = make_adam(self.actor.parameters(), lr)
        self.critic_opt = make_adam(self.critic.parameters(), lr)
        self.alpha_opt = make_adam([self.log_alpha], lr)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor(obs, deterministic)[0]

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step on critics, actor and temperature; returns detached losses."""
        alpha = self.alpha
        with torch.no_grad():
            next_act, next_log_prob = self.actor(batch.next_obs)
            next_q = twin_q(self.critic_target, batch.next_obs, next_act).min(0).values
            target = batch.rew + self.gamma * (1.0 - batch.done) * (next_q - alpha * next_log_prob)
        q = twin_q(self.critic, batch.obs, batch.act)
        critic_loss = 0.5 * ((q - target) ** 2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        new_act, log_prob = self.actor(batch.obs)
        x = torch.cat([batch.obs, new_act], dim=-1).unsqueeze(0).expand(2, -1, -1)
        q_new = self.critic.forward_detached(x).squeeze(-1).min(0).values
        actor_loss = (alpha * log_prob - q_new).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, self.tau)
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "alpha": alpha,
        }

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
