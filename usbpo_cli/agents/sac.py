"""Soft Actor-Critic (Haarnoja et al. 2018) with twin critics as one batched network and
automatic entropy tuning. Used by the model-free SAC baseline and as the Dyna loop's policy.

The update writes its gradients by hand instead of calling autograd: on a CPU an MBPO-family
run spends most of its time in SAC updates (20-40 per env step) whose matrices are small, so
the autograd graph's per-op overhead is a large share of each one. The losses are SAC's, stated
beside each gradient, and tests/test_sac.py checks every gradient against autograd on them.
With `compiled` (`--compile`) the same update runs through `torch.compile`, which fuses its
elementwise work into a few kernels; Adam, the noise draw and the Polyak step stay eager.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from usbpo_cli.agents.buffers import Batch
from usbpo_cli.models.distributions import seed_normal
from usbpo_cli.models.nets import (
    BatchedMLP,
    Layer,
    SeedLinear,
    relu_backward,
    relu_forward,
    seed_mlp,
    stacked_mlp,
    twin_input,
)
from usbpo_cli.models.optim import adam_step, make_adam
from usbpo_cli.models.seed_axis import (
    SeedAxis,
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
class SACSettings(Settings):
    """SAC's own setting, for every config whose agent may build a SAC policy optimiser."""

    target_entropy: float | None = param(None, "SAC target entropy; None means -action_dim")


LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class SquashedSample(NamedTuple):
    """A reparameterised tanh-Gaussian sample and what its hand-written backward needs."""

    action: torch.Tensor
    log_prob: torch.Tensor
    squashed: torch.Tensor  # tanh(mean + std * noise)
    std: torch.Tensor
    noise: torch.Tensor
    raw_log_std: torch.Tensor  # before clamping to [LOG_STD_MIN, LOG_STD_MAX]

    def rows(self, index: slice) -> SquashedSample:
        """The rows `index` of every seed (the axis after the seed axis)."""
        return SquashedSample(*(t[:, index] for t in self))


class TanhGaussianActor(nn.Module):
    """State-conditioned Gaussian squashed by tanh and rescaled to the action bounds; one per
    seed, as one network with a seed axis (inputs [S, N, obs]; [N, obs] when S = 1)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_size: int,
        act_low: torch.Tensor,
        act_high: torch.Tensor,
        generators: Sequence[torch.Generator | None] = (None,),
    ) -> None:
        super().__init__()
        self.seeds = len(generators)
        self.body = seed_mlp(self.seeds, obs_dim, hidden_size, 2 * act_dim, generators=generators)
        self.register_buffer("act_scale", (act_high - act_low) / 2.0)
        self.register_buffer("act_bias", (act_high + act_low) / 2.0)

    def forward(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Action and its log-probability (the latter meaningless when deterministic)."""
        mean, raw_log_std = self.body(obs).chunk(2, dim=-1)
        if deterministic:
            return torch.tanh(mean) * self.act_scale + self.act_bias, torch.zeros_like(mean[..., 0])
        sample = self.squash(mean, raw_log_std, seed_normal(mean, generators))
        return sample.action, sample.log_prob

    def layers(self) -> list[Layer]:
        """The body's (weight, bias) as [S, in, out] and [S, 1, out] views, for `relu_forward`."""
        return [(m.weight.mT, m.bias.unsqueeze(1)) for m in self.linears()]

    def linears(self) -> list[SeedLinear]:
        return [m for m in self.body if isinstance(m, SeedLinear)]

    def squash(
        self, mean: torch.Tensor, raw_log_std: torch.Tensor, noise: torch.Tensor
    ) -> SquashedSample:
        log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        pre_tanh = torch.addcmul(mean, std, noise)
        squashed = torch.tanh(pre_tanh)
        # log N(pre_tanh) minus the log-det of tanh (numerically stable form) and of the scale.
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(
            -1
        )
        log_prob = log_prob - torch.log(self.act_scale).sum()
        action = torch.addcmul(self.act_bias, squashed, self.act_scale)
        return SquashedSample(action, log_prob, squashed, std, noise, raw_log_std)

    def squash_backward(
        self, sample: SquashedSample, grad_action: torch.Tensor, grad_log_prob: float | torch.Tensor
    ) -> torch.Tensor:
        """Gradient w.r.t. the body's output [mean, raw log-std] from those w.r.t. each action
        and each log-probability (`grad_log_prob` the same for every row).

        With u = mean + std * noise: d log_prob / du = 2 tanh(u) (the derivative of
        -log(1 - tanh(u)^2)), d action / du = scale * (1 - tanh(u)^2), du / d log_std =
        std * noise, and log_prob also holds -log_std directly; the clamp passes gradient only
        inside its bounds (bounds included, as autograd's clamp).
        """
        squashed = sample.squashed
        grad_pre_tanh = (2.0 * grad_log_prob) * squashed + grad_action * self.act_scale * (
            1.0 - squashed * squashed
        )
        inside = (sample.raw_log_std >= LOG_STD_MIN) & (sample.raw_log_std <= LOG_STD_MAX)
        grad_log_std = (grad_pre_tanh * sample.std * sample.noise - grad_log_prob) * inside
        return torch.cat([grad_pre_tanh, grad_log_std], dim=-1)


def _as_grad(param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A hand-written gradient in its parameter's dtype: under `--precision bf16` the products
    that made it ran in bf16 (autocast) while the parameters stay float32 (no copy when the
    dtypes agree)."""
    return grad.to(param.dtype)


class SAC:
    """SAC for S seeds at once (`generators`: one per seed; one seed is S = 1): S actors, 2S
    critics and S temperatures as batched networks, each seed's slice updated on its own batch
    exactly as a lone SAC would be. Inputs carry a leading seed axis ([S, N, ...]); with one
    seed it may be left out. `compiled`: run `update` through torch.compile (compiled at its
    first call; same maths, floating-point sums in another order)."""

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
        generators: Sequence[torch.Generator | None] = (None,),
        init_generators: Sequence[torch.Generator | None] | None = None,
        compiled: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.generators = list(generators)  # noise of actions and updates, one per seed
        self.seeds = len(self.generators)
        init_generators = list(init_generators or self.generators)
        self.obs_dim = obs_dim
        self.gamma, self.tau = gamma, tau
        self.target_entropy = float(-act_dim if target_entropy is None else target_entropy)
        self.actor = TanhGaussianActor(
            obs_dim, act_dim, hidden_size, act_low, act_high, init_generators
        ).to(device)
        # Each seed's twin critics drawn after its actor, from its generator, as a lone run.
        self.critic = stacked_mlp(
            [
                BatchedMLP(2, obs_dim + act_dim, 1, hidden_size, 2, generator=g)
                for g in init_generators
            ]
        ).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros(self.seeds, device=self.device, requires_grad=True)
        self.actor_opt = make_adam(self.actor.parameters(), lr)
        self.critic_opt = make_adam(self.critic.parameters(), lr)
        self.alpha_opt = make_adam([self.log_alpha], lr)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        # static shapes: a policy batch has the same shape at every update of a run
        self._update = torch.compile(self._update_eager, dynamic=False) if compiled else None

    @property
    def alpha(self) -> torch.Tensor:
        """Each seed's temperature: [S]."""
        return self.log_alpha.detach().exp()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor(obs, deterministic, self.generators)[0]

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step on critics, then actor (against the updated critics), then
        temperature, then the Polyak step of the target critics; returns each seed's losses
        ([S]; scalars when the batch has no seed axis)."""
        return (self._update or self._update_eager)(batch)

    @torch.no_grad()
    def _update_eager(self, batch: Batch) -> dict[str, torch.Tensor]:
        lone = batch.obs.dim() == 2
        if lone:
            batch = Batch(*(field.unsqueeze(0) for field in batch))
        seeds, n = batch.obs.shape[:2]
        alpha = self.alpha.view(seeds, 1)
        critic = [(layer.weight, layer.bias) for layer in self.critic.layers]
        target = [(layer.weight, layer.bias) for layer in self.critic_target.layers]
        actor = self.actor.layers()
        # One actor pass over [next_obs; obs]: both halves use the actor's current weights.
        actor_inputs, head = relu_forward(actor, torch.cat([batch.next_obs, batch.obs], dim=1))
        mean, raw_log_std = head.chunk(2, dim=-1)
        sample = self.actor.squash(mean, raw_log_std, self._noise(mean))
        next_sample, sample = sample.rows(slice(None, n)), sample.rows(slice(n, None))

        # Critics: 0.5 * sum_i mean_b (Q_i(s, a) - y)^2 with the soft target
        # y = r + gamma (1 - done) (min_i Qtarget_i(s', a') - alpha log pi(a' | s')).
        _, next_q = relu_forward(target, twin_input(batch.next_obs, next_sample.action))
        next_q = next_q.view(seeds, 2, n)
        soft_next_value = next_q.min(1).values - alpha * next_sample.log_prob
        y = batch.rew + self.gamma * (1.0 - batch.done) * soft_next_value
        critic_inputs, q = relu_forward(critic, twin_input(batch.obs, batch.act))
        error = q.view(seeds, 2, n) - y.unsqueeze(1)
        critic_loss = 0.5 * error.pow(2).mean(2).sum(1)
        grads, _ = relu_backward(critic, critic_inputs, (error / n).view(2 * seeds, n, 1))
        for layer, (weight_grad, bias_grad) in zip(self.critic.layers, grads):
            layer.weight.grad = _as_grad(layer.weight, weight_grad)
            layer.bias.grad = _as_grad(layer.bias, bias_grad)
        self._step("critic")

        # Actor: mean_b (alpha log pi(a | s) - min_i Q_i(s, a)) with a the reparameterised
        # sample; the critics' parameters get no gradient from it, only their input a does.
        q_inputs, q_new = relu_forward(critic, twin_input(batch.obs, sample.action))
        q_new = q_new.view(seeds, 2, n)
        first = q_new[:, 0] <= q_new[:, 1]  # min over the twins, ties to the first (torch.min)
        smaller = torch.where(first, q_new[:, 0], q_new[:, 1])
        actor_loss = (alpha * sample.log_prob - smaller).mean(1)
        grad_q = torch.stack([first, ~first], dim=1).to(q_new.dtype).mul_(-1.0 / n)
        _, grad_x = relu_backward(
            critic,
            q_inputs,
            grad_q.view(2 * seeds, n, 1),
            param_grads=False,
            input_columns=slice(self.obs_dim, None),
        )
        grad_action = grad_x.view(seeds, 2, n, -1).sum(1)
        grad_head = self.actor.squash_backward(sample, grad_action, (alpha / n).unsqueeze(-1))
        obs_half = [x[:, n:] for x in actor_inputs]
        grads, _ = relu_backward(actor, obs_half, grad_head)
        for linear, (weight_grad, bias_grad) in zip(self.actor.linears(), grads):
            linear.weight.grad = _as_grad(linear.weight, weight_grad.mT)
            linear.bias.grad = _as_grad(linear.bias, bias_grad.squeeze(1))
        self._step("actor")

        # Temperature: -mean_b log_alpha * (log pi(a | s) + target_entropy), per seed.
        self.log_alpha.grad = _as_grad(
            self.log_alpha, -(sample.log_prob + self.target_entropy).mean(1)
        )
        self._step("alpha")

        self._polyak()
        losses = {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha": alpha.view(-1)}
        return {key: value[0] for key, value in losses.items()} if lone else losses

    # --- run eagerly inside a compiled update (`--compile`) -------------------------------
    # Fused Adam and the Polyak step are one multi-tensor kernel each already, and dynamo
    # cannot trace a draw from a torch.Generator. None of them takes an optimiser or generator
    # as an argument: dynamo would guard on that object's identity, compile the update again
    # for every new SAC, and after eight of them run it uncompiled.
    @torch.compiler.disable
    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise of `like`'s shape, each seed's part from its own generator."""
        return seed_normal(like, self.generators)

    @torch.compiler.disable
    def _step(self, optimiser: str) -> None:
        """The Adam step of the "critic", "actor" or "alpha" optimiser."""
        adam_step(getattr(self, f"{optimiser}_opt"))

    @torch.compiler.disable
    def _polyak(self) -> None:
        """target <- target + tau (critic - target), for every target critic parameter."""
        torch_private.lerp_(self._target_params, self._critic_params, self.tau)

    # --- checkpoints: one seed at a time, in a lone run's layout -------------------------
    def _axes(self) -> dict:
        actor, critic = module_axes(self.actor, self.seeds), module_axes(self.critic, self.seeds)
        return {
            "actor": actor,
            "critic": critic,
            "actor_opt": parameter_axes(self.actor, actor),
            "critic_opt": parameter_axes(self.critic, critic),
            "alpha_opt": [SeedAxis(self.seeds, own=True)],
        }

    def state_dict(self, seed: int = 0) -> dict:
        axes = self._axes()
        return {
            "actor": module_seed_state(self.actor, axes["actor"], seed),
            "critic": module_seed_state(self.critic, axes["critic"], seed),
            "critic_target": module_seed_state(self.critic_target, axes["critic"], seed),
            "log_alpha": self.log_alpha.detach()[seed].clone(),
            "actor_opt": adam_seed_state(self.actor_opt, axes["actor_opt"], seed),
            "critic_opt": adam_seed_state(self.critic_opt, axes["critic_opt"], seed),
            "alpha_opt": adam_seed_state(self.alpha_opt, axes["alpha_opt"], seed),
        }

    def load_state_dict(self, state: dict, seed: int = 0) -> None:
        axes = self._axes()
        load_module_seed_state(self.actor, axes["actor"], state["actor"], seed)
        load_module_seed_state(self.critic, axes["critic"], state["critic"], seed)
        load_module_seed_state(self.critic_target, axes["critic"], state["critic_target"], seed)
        with torch.no_grad():
            self.log_alpha[seed].copy_(state["log_alpha"])
        load_adam_seed_state(self.actor_opt, axes["actor_opt"], state["actor_opt"], seed)
        load_adam_seed_state(self.critic_opt, axes["critic_opt"], state["critic_opt"], seed)
        load_adam_seed_state(self.alpha_opt, axes["alpha_opt"], state["alpha_opt"], seed)
