"""Proximal Policy Optimization (Schulman et al. 2017): the model-free, on-policy baseline.

PPO alternates two phases. It collects a rollout of `ppo_num_steps` steps in each of
`ppo_num_envs` environments with the current Gaussian policy, then takes `ppo_epochs` passes of
`ppo_num_minibatches` minibatches over it, each an Adam step on the clipped surrogate objective
plus a value loss. The continuous-control recipe is the well-known one ("The 37 implementation
details of PPO", Huang et al. 2022), written here for our env layer and run loop:

- separate actor and critic, two tanh layers of 64, orthogonal init (gain sqrt(2) in hidden
  layers, 0.01 for the policy mean head, 1 for the value head), zero biases, and a
  state-independent log-std (a free parameter, initialised at 0);
- GAE (gamma 0.99, lambda 0.95); advantages normalised per minibatch;
- clipped surrogate (clip 0.2); value loss clipped to the same range around the rollout's values,
  as in OpenAI's ppo2 (`ppo_clip_value_loss=false` gives the plain squared error); joint loss
  `policy + 0.5 value - 0.0 entropy`; one Adam (eps 1e-5) over both networks, lr 3e-4 annealed
  linearly to 0 over the run, global gradient norm clipped at 0.5;
- observations normalised by a running mean/std and clipped at +-10; rewards divided by the
  running std of the discounted return and clipped at +-10; actions sampled from the unbounded
  Gaussian, clipped to the bounds only on their way into the env (the stored action, and its
  log-probability, are the unclipped sample).

Choices where the paper and DESIGN.md are silent (also in the README):

- Time limits are not terminations. A step that ends an episode by `terminated` contributes no
  bootstrap; a step cut by `truncated` (the 1000-step limit) bootstraps from the critic's value of
  the final observation (gymnasium's SAME_STEP autoreset hands it over in `info["final_obs"]`,
  normalised with the current statistics). Either way the GAE recursion stops at the episode end.
  (CleanRL treats both as terminal.)
- One observation normaliser for all envs (CleanRL's per-env wrappers keep one each); it is
  updated with every observation the policy acts on and frozen for evaluation.
- The discounted return behind reward scaling restarts at every episode end, truncations
  included (gymnasium 1.x's NormalizeReward restarts it only on termination).
- Rows: one per evaluation, at the first rollout end at or after each multiple of
  `epoch_length` (and at the end), logged with the true env step. With the default 2048-step
  rollouts that is every rollout, e.g. 2048, 4096, ... on every task; each row evaluates a new
  policy, and all seeds share one step grid, so `compare`'s per-step mean and AUC stay
  well-defined. The last rollout is shortened so the run ends at `--steps` (rounded up to a
  multiple of `ppo_num_envs`), and it is used for one last update before the final evaluation.
- Checkpoints are taken at rows, which are rollout ends: the rollout storage is empty there and
  is not saved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from usbpo_cli.agents.base import (
    AgentConfig,
    BaseAgent,
    Checkpointer,
    LoopState,
    Reporter,
    RowWriter,
    RunSummary,
    no_report,
    per_seed,
)
from usbpo_cli.agents.registry import Algorithm
from usbpo_cli.envs.state import capture_env, restore_env
from usbpo_cli.envs.tasks import make_env
from usbpo_cli.errors import UsageError
from usbpo_cli.models.distributions import gaussian_entropy, gaussian_log_prob, normal_like
from usbpo_cli.models.nets import linear
from usbpo_cli.util.settings import param

NORMALISER_EPS = 1e-8  # added to the variance before dividing, as gymnasium's wrappers do


@dataclass
class PPOConfig(AgentConfig):
    """On-policy PPO, a family of its own: none of the off-policy settings (replay, updates per
    step, initial random steps) apply; the evaluation settings are every agent's, so presets
    and the per-task epoch_length reach it."""

    epoch_length: int = param(
        1000, "env steps between evaluations; a row is logged at the first rollout end after each"
    )
    hidden_size: int = param(64, "width of the two tanh hidden layers of actor and critic")
    gamma: float = param(0.99, "discount factor")
    ppo_num_envs: int = param(1, "envs stepped together (SyncVectorEnv) to collect each rollout")
    ppo_num_steps: int = param(2048, "env steps per env in each rollout")
    ppo_gae_lambda: float = param(0.95, "GAE lambda")
    ppo_epochs: int = param(10, "passes over each rollout per policy update")
    ppo_num_minibatches: int = param(32, "minibatches per pass")
    ppo_clip: float = param(0.2, "clip range of the probability ratio (and of the value change)")
    ppo_clip_value_loss: bool = param(True, "clip the value change to +-ppo_clip (as ppo2)")
    ppo_value_coef: float = param(0.5, "weight of the value loss in the joint loss")
    ppo_entropy_coef: float = param(0.0, "weight of the entropy bonus in the joint loss")
    ppo_lr: float = param(3e-4, "Adam learning rate (Adam eps 1e-5)")
    ppo_anneal_lr: bool = param(True, "anneal the learning rate linearly to 0 over the run")
    ppo_max_grad_norm: float = param(0.5, "clip of the global gradient norm of each step")
    ppo_obs_clip: float = param(10.0, "normalised observations are clipped to +-this")
    ppo_reward_clip: float = param(10.0, "normalised rewards are clipped to +-this")

    def validate(self) -> None:
        super().validate()
        self.require_positive(
            "hidden_size",
            "ppo_num_envs",
            "ppo_num_steps",
            "ppo_epochs",
            "ppo_num_minibatches",
            "ppo_clip",
            "ppo_lr",
            "ppo_max_grad_norm",
            "ppo_obs_clip",
            "ppo_reward_clip",
        )
        self.require_non_negative("ppo_value_coef", "ppo_entropy_coef")
        if not 0.0 < self.gamma <= 1.0:
            raise UsageError(f"gamma must lie in (0, 1], got {self.gamma}")
        if not 0.0 <= self.ppo_gae_lambda <= 1.0:
            raise UsageError(f"ppo_gae_lambda must lie in [0, 1], got {self.ppo_gae_lambda}")
        rollout = self.ppo_num_envs * self.ppo_num_steps
        if self.ppo_num_minibatches > rollout:
            raise UsageError(
                f"ppo_num_minibatches ({self.ppo_num_minibatches}) cannot exceed the rollout "
                f"size ppo_num_envs * ppo_num_steps ({rollout})"
            )


# ---------------------------------------------------------------------------------------------
# normalisation (env side, numpy float64 like gymnasium's wrappers)


class RunningMeanStd:
    """Mean and variance of a stream of batches, merged batch by batch (Chan et al. 1979), in
    float64 so a million updates do not drift. It starts from a pseudo-count of 1e-4 at mean 0
    and variance 1, so the first normalisations are finite."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = epsilon

    def update(self, batch: np.ndarray) -> None:
        """Fold in a batch whose first axis indexes samples."""
        batch = np.asarray(batch, dtype=np.float64)
        batch_count = batch.shape[0]
        batch_mean, batch_var = batch.mean(axis=0), batch.var(axis=0)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        sum_of_squares = (
            self.var * self.count
            + batch_var * batch_count
            + np.square(delta) * self.count * batch_count / total
        )
        self.var = sum_of_squares / total
        self.count = total

    def normalise(self, x: np.ndarray, clip: float) -> np.ndarray:
        scaled = (np.asarray(x, dtype=np.float64) - self.mean) / np.sqrt(self.var + NORMALISER_EPS)
        return np.clip(scaled, -clip, clip).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = state["mean"].copy(), state["var"].copy(), state["count"]


class RewardScaler:
    """Divides each reward by the running std of the discounted return it belongs to (not of
    the reward itself): the critic's targets then stay near unit scale on every task."""

    def __init__(self, num_envs: int, gamma: float, clip: float) -> None:
        self.gamma, self.clip = gamma, clip
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.stats = RunningMeanStd()

    def __call__(self, rewards: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + rewards
        self.stats.update(self.returns)
        scaled = np.clip(rewards / np.sqrt(self.stats.var + NORMALISER_EPS), -self.clip, self.clip)
        self.returns[episode_end] = 0.0
        return scaled.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"returns": self.returns.copy(), "stats": self.stats.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns = state["returns"].copy()
        self.stats.load_state_dict(state["stats"])


# ---------------------------------------------------------------------------------------------
# networks


def orthogonal_linear(
    in_dim: int, out_dim: int, gain: float, generator: torch.Generator | None = None
) -> nn.Linear:
    """A linear layer with orthogonal weights of the given gain and zero bias."""
    layer = linear(in_dim, out_dim, generator)
    nn.init.orthogonal_(layer.weight, gain, generator=generator)
    nn.init.zeros_(layer.bias)
    return layer


def tanh_mlp(
    in_dim: int,
    hidden_size: int,
    out_dim: int,
    out_gain: float,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """Two tanh hidden layers (gain sqrt 2) and a linear head of gain `out_gain`."""
    return nn.Sequential(
        orthogonal_linear(in_dim, hidden_size, math.sqrt(2.0), generator),
        nn.Tanh(),
        orthogonal_linear(hidden_size, hidden_size, math.sqrt(2.0), generator),
        nn.Tanh(),
        orthogonal_linear(hidden_size, out_dim, out_gain, generator),
    )


class ActorCritic(nn.Module):
    """Separate actor and critic networks. The small policy head (gain 0.01) makes the initial
    policy mean nearly zero everywhere, so early actions are the log-std's noise."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden_size: int, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.actor_mean = tanh_mlp(obs_dim, hidden_size, act_dim, 0.01, generator)
        self.actor_log_std = nn.Parameter(torch.zeros(act_dim))
        self.critic = tanh_mlp(obs_dim, hidden_size, 1, 1.0, generator)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# advantages and losses


def next_state_values(
    values: torch.Tensor,
    last_values: torch.Tensor,
    truncated: torch.Tensor,
    truncation_values: torch.Tensor,
) -> torch.Tensor:
    """V(s_{t+1}) for every step of a [T, N] rollout: the next step's value, the value after the
    rollout for the last step, and for a step cut by the time limit the value of its final
    observation (the next row then holds a new episode's first state, not s_{t+1})."""
    following = torch.cat([values[1:], last_values.unsqueeze(0)])
    return torch.where(truncated.bool(), truncation_values, following)


def generalised_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    episode_end: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016) over [T, N] tensors; returns (advantages, value targets).

    delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t): a termination has no future,
    a time limit does. The recursion A_t = delta_t + gamma lambda A_{t+1} stops at any episode
    end (terminated or truncated), since A_{t+1} then belongs to the next episode.
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        running = delta + gamma * gae_lambda * (1.0 - episode_end[t]) * running
        advantages[t] = running
    return advantages, advantages + values


def clipped_surrogate_loss(
    ratio: torch.Tensor, advantages: torch.Tensor, clip: float
) -> torch.Tensor:
    """PPO's clipped objective as a loss: mean of max(-A r, -A clip(r, 1-eps, 1+eps)). Once the
    ratio leaves the clip range in the direction the advantage favours, the gradient is zero."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    return torch.max(unclipped, clipped).mean()


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor, clip: float | None
) -> torch.Tensor:
    """0.5 x mean squared error to the GAE targets; with `clip`, the larger of that and the error
    of the prediction moved at most `clip` from the rollout's value (ppo2's value clipping)."""
    squared = (values - targets).square()
    if clip is None:
        return 0.5 * squared.mean()
    moved = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.max(squared, (moved - targets).square()).mean()


# ---------------------------------------------------------------------------------------------
# the agent


@dataclass
class Rollout:
    """Preallocated [ppo_num_steps, ppo_num_envs] storage; a shortened rollout uses the first
    rows. `obs` are normalised; `rewards` are scaled."""

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    truncation_values: torch.Tensor

    @classmethod
    def empty(
        cls, steps: int, envs: int, obs_dim: int, act_dim: int, device: torch.device
    ) -> Rollout:
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(steps, envs, *shape, device=device)

        return cls(zeros(obs_dim), zeros(act_dim), *(zeros() for _ in range(6)))


class PPOAgent(BaseAgent):
    """Owns the vector of training envs, actor-critic, optimiser, normalisers and the rollout;
    the evaluation env, rows and checkpoint plumbing are the base agent's."""

    single_seed_reason = "it is on-policy, with its own vectorised envs"

    config: PPOConfig

    def __init__(self, env_id: str, config: PPOConfig, **kwargs: Any) -> None:
        """`kwargs`: BaseAgent's seed, total_steps, device and truncate_obs."""
        super().__init__(env_id, config, **kwargs)
        seed, truncate_obs = self.seed, self.truncate_obs
        num_envs = config.ppo_num_envs

        def env_maker(index: int) -> Callable[[], gym.Env]:
            return lambda: make_env(env_id, seed=seed + index, truncate_obs=truncate_obs)

        self.envs = gym.vector.SyncVectorEnv(
            [env_maker(i) for i in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
        obs_dim = int(np.prod(self.envs.single_observation_space.shape))
        act_dim = int(np.prod(self.envs.single_action_space.shape))
        self.act_low = torch.as_tensor(self.envs.single_action_space.low, device=self.device)
        self.act_high = torch.as_tensor(self.envs.single_action_space.high, device=self.device)
        self.model = ActorCritic(obs_dim, act_dim, config.hidden_size, self.init_generator).to(
            self.device
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.ppo_lr, eps=1e-5)
        self.obs_stats = RunningMeanStd((obs_dim,))
        self.reward_scaler = RewardScaler(num_envs, config.gamma, config.ppo_reward_clip)
        self.rollout = Rollout.empty(config.ppo_num_steps, num_envs, obs_dim, act_dim, self.device)
        self.episode_returns = np.zeros(num_envs)
        self.obs: torch.Tensor | None = None  # normalised observations the policy acts on next

    # --- acting ----------------------------------------------------------------------------
    def observe(self, raw_obs: np.ndarray) -> torch.Tensor:
        """Fold new observations into the normaliser, then normalise them for the policy."""
        self.obs_stats.update(raw_obs)
        normalised = self.obs_stats.normalise(raw_obs, self.config.ppo_obs_clip)
        return torch.as_tensor(normalised, device=self.device)

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        return torch.max(torch.min(action, self.act_high), self.act_low).cpu().numpy()

    def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic policy (the Gaussian's mean) with the normaliser frozen."""
        normalised = self.obs_stats.normalise(obs[None], self.config.ppo_obs_clip)
        with torch.no_grad():
            mean = self.model.actor_mean(torch.as_tensor(normalised, device=self.device))
        return self.env_action(mean[0])

    def collect(self, steps: int, train_returns: list[float]) -> torch.Tensor:
        """Step all envs `steps` times with the sampled policy into `self.rollout`; returns the
        values of the observations that follow the rollout (for the last step's bootstrap)."""
        rollout, model = self.rollout, self.model
        for t in range(steps):
            obs = self.obs
            with torch.no_grad():
                mean = model.actor_mean(obs)
                log_std = model.actor_log_std.expand_as(mean)
                action = mean + log_std.exp() * normal_like(mean, self.generator)
                rollout.log_probs[t] = gaussian_log_prob(action, mean, log_std)
                rollout.values[t] = model.value(obs)
            rollout.obs[t], rollout.actions[t] = obs, action
            raw_next, reward, terminated, truncated, info = self.envs.step(self.env_action(action))
            episode_end = terminated | truncated
            self.episode_returns += reward
            for i in np.flatnonzero(episode_end):
                train_returns.append(float(self.episode_returns[i]))
                self.episode_returns[i] = 0.0
            scaled = self.reward_scaler(reward, episode_end)
            rollout.rewards[t] = torch.as_tensor(scaled, device=self.device)
            rollout.terminated[t] = torch.as_tensor(terminated, device=self.device)
            rollout.truncated[t] = torch.as_tensor(truncated, device=self.device)
            self.obs = self.observe(raw_next)  # a finished env's row is its next episode's start
            cut = np.flatnonzero(truncated & ~terminated)
            if cut.size:
                final = np.stack([info["final_obs"][i] for i in cut])
                final = self.obs_stats.normalise(final, self.config.ppo_obs_clip)
                with torch.no_grad():
                    final_values = model.value(torch.as_tensor(final, device=self.device))
                rollout.truncation_values[t, torch.as_tensor(cut, device=self.device)] = (
                    final_values
                )
        with torch.no_grad():
            return model.value(self.obs)

    # --- learning --------------------------------------------------------------------------
    def update(self, steps: int, last_values: torch.Tensor) -> None:
        """`ppo_epochs` passes of minibatch Adam steps on the first `steps` rows of the
        rollout."""
        config, rollout, model = self.config, self.rollout, self.model
        values = rollout.values[:steps]
        next_values = next_state_values(
            values, last_values, rollout.truncated[:steps], rollout.truncation_values[:steps]
        )
        terminated = rollout.terminated[:steps]
        advantages, targets = generalised_advantages(
            rollout.rewards[:steps],
            values,
            next_values,
            terminated,
            torch.maximum(terminated, rollout.truncated[:steps]),
            config.gamma,
            config.ppo_gae_lambda,
        )
        obs = rollout.obs[:steps].flatten(0, 1)
        actions = rollout.actions[:steps].flatten(0, 1)
        old_log_probs = rollout.log_probs[:steps].flatten(0, 1)
        old_values, advantages, targets = values.flatten(), advantages.flatten(), targets.flatten()
        size = obs.shape[0]
        value_clip = config.ppo_clip if config.ppo_clip_value_loss else None
        for _ in range(config.ppo_epochs):
            order = torch.randperm(size, device=self.device, generator=self.generator)
            for index in order.tensor_split(min(config.ppo_num_minibatches, size)):
                mean = model.actor_mean(obs[index])
                log_std = model.actor_log_std.expand_as(mean)
                log_probs = gaussian_log_prob(actions[index], mean, log_std)
                ratio = (log_probs - old_log_probs[index]).exp()
                advantage = advantages[index]
                if index.numel() > 1:  # a 1-sample minibatch has no spread to normalise by
                    advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
                policy_loss = clipped_surrogate_loss(ratio, advantage, config.ppo_clip)
                critic_loss = value_loss(
                    model.value(obs[index]), old_values[index], targets[index], value_clip
                )
                entropy = gaussian_entropy(model.actor_log_std)
                loss = (
                    policy_loss
                    + config.ppo_value_coef * critic_loss
                    - config.ppo_entropy_coef * entropy
                )
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), config.ppo_max_grad_norm)
                self.optimizer.step()
                self.add_losses(
                    {"actor_loss": policy_loss.detach(), "critic_loss": critic_loss.detach()}
                )

    # --- the loop --------------------------------------------------------------------------
    def begin(self) -> None:
        """Start a fresh run: seeded resets (env i gets seed + i; the eval env was seeded when
        made) and the first observations."""
        raw_obs, _ = self.envs.reset(seed=self.seed)
        self.obs = self.observe(raw_obs)
        self.loop = LoopState(obs=self.obs.cpu().numpy())

    def train(
        self,
        logger: RowWriter | Sequence[RowWriter],
        report: Reporter | Sequence[Reporter] = no_report,
        checkpoint: Checkpointer | Sequence[Checkpointer] | None = None,
    ) -> RunSummary:
        """Rollout, update, and at the first rollout end past each multiple of `epoch_length`
        (and at the end) evaluate, checkpoint (with the row inside), then append the row.
        `logger`, `report` and `checkpoint` as every agent takes them (for its one seed)."""
        [logger], [report] = per_seed(logger, 1), per_seed(report, 1)
        [checkpoint] = per_seed(checkpoint, 1)
        if self.loop is None:
            self.begin()
        loop, config = self.loop, self.config
        num_envs, epoch = config.ppo_num_envs, config.epoch_length
        start_time = time.perf_counter() - loop.wall_time_s
        self.timers.on_phase = lambda phase: report(self._step, phase, None)
        step = loop.next_step
        while step < self.total_steps:
            self._step = step
            steps = min(config.ppo_num_steps, math.ceil((self.total_steps - step) / num_envs))
            if config.ppo_anneal_lr:
                for group in self.optimizer.param_groups:
                    group["lr"] = config.ppo_lr * (1.0 - step / self.total_steps)
            with self.timers("env"):
                last_values = self.collect(steps, loop.train_returns)
            step += steps * num_envs
            self._step = step
            with self.timers("policy"):
                self.update(steps, last_values)
            if step // epoch == loop.next_step // epoch and step < self.total_steps:
                report(step, None, None)
                continue
            row = self._row(step, loop.train_returns, time.perf_counter() - start_time)
            self.commit_row(row, self.obs.cpu().numpy(), logger, report, checkpoint)
        return self.summary(step, start_time)

    # --- checkpoints -----------------------------------------------------------------------
    def state_dict(self, seed: int = 0) -> dict[str, Any]:
        """Everything needed to continue bit-exactly from the last row (a rollout end)."""
        return {
            **super().state_dict(seed),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_stats": self.obs_stats.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict(),
            "episode_returns": self.episode_returns.copy(),
            "envs": [capture_env(env) for env in self.envs.envs],
        }

    def load_state_dict(self, state: dict[str, Any], seed: int = 0) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_stats.load_state_dict(state["obs_stats"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.episode_returns = state["episode_returns"].copy()
        for env, env_state in zip(self.envs.envs, state["envs"], strict=True):
            restore_env(env, env_state)
        super().load_state_dict(state, seed)
        self.obs = torch.as_tensor(self.loop.obs, device=self.device)


ALGORITHM = Algorithm("ppo", PPOAgent, PPOConfig, "PPO: model-free on-policy clipped surrogate")
