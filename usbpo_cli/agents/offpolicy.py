"""The environment loop every off-policy agent shares (Stable-Baselines3's `OffPolicyAlgorithm` in
spirit): act, step, store, learn, and once per epoch evaluate and append one CSV row.

Subclasses say only what differs in `learn` (model-free: G gradient steps; Dyna: model
training, rollouts, then G steps on mixed batches) and add their own columns through `record`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from usbpo_cli.agents.base import (
    AgentConfig,
    BaseAgent,
    LoopState,
    Reporter,
    RowWriter,
    RunSummary,
    no_report,
)
from usbpo_cli.agents.buffers import Batch, ReplayBuffer
from usbpo_cli.agents.sac import SAC, SACSettings
from usbpo_cli.agents.td3 import TD3, TD3Settings
from usbpo_cli.envs.state import capture_env, restore_env
from usbpo_cli.envs.tasks import make_env
from usbpo_cli.errors import UsageError
from usbpo_cli.util.settings import param

# The policy optimisers an off-policy agent with a choice can use (`--set policy=td3`).
POLICIES = ("sac", "td3")


@dataclass
class OffPolicyConfig(AgentConfig):
    """The off-policy loop: random initial steps, a replay buffer, G updates per env step, and
    the networks' shared sizes and rates."""

    initial_steps: int = param(5000, "env steps taken with uniform random actions before learning")
    updates_per_step: int = param(20, "policy gradient updates per real env step (G)")
    hidden_size: int = param(256, "width of the two hidden layers of actor and critics")
    policy_lr: float = param(3e-4, "Adam learning rate of actor, critics and entropy temperature")
    batch_size: int = param(256, "policy update batch size")
    gamma: float = param(0.99, "discount factor")
    tau: float = param(5e-3, "Polyak rate of the target networks")
    replay_size: int = param(1_000_000, "capacity of the real-transition replay buffer")

    def validate(self) -> None:
        super().validate()
        self.require_positive("updates_per_step", "hidden_size", "batch_size", "replay_size")
        self.require_non_negative("initial_steps")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise UsageError("gamma and tau must lie in (0, 1]")

    def policy_optimiser(self) -> str:
        """Which policy optimiser the agent builds: "sac" or "td3"."""
        raise NotImplementedError


@dataclass
class PolicyConfig(TD3Settings, SACSettings, OffPolicyConfig):
    """An off-policy loop whose policy optimiser is a setting (the model-based agents): SAC by
    default, TD3 with `--set policy=td3`; both optimisers' settings are present."""

    policy: str = param("sac", "policy optimiser: sac or td3")

    def validate(self) -> None:
        super().validate()
        if self.policy not in POLICIES:
            raise UsageError(
                f"policy {self.policy!r} is not available (choose: {', '.join(POLICIES)})"
            )

    def policy_optimiser(self) -> str:
        return self.policy


class OffPolicyAgent(BaseAgent):
    """Owns the real env, the real replay buffer and the policy optimiser."""

    config: OffPolicyConfig

    def __init__(self, env_id: str, config: OffPolicyConfig, **kwargs: Any) -> None:
        """`kwargs`: BaseAgent's seed, total_steps, device and truncate_obs."""
        super().__init__(env_id, config, **kwargs)
        self.env = make_env(env_id, seed=self.seed, truncate_obs=self.truncate_obs)
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self.act_low = torch.as_tensor(self.env.action_space.low, dtype=torch.float32).flatten()
        self.act_high = torch.as_tensor(self.env.action_space.high, dtype=torch.float32).flatten()
        self.real_buffer = ReplayBuffer(
            min(config.replay_size, self.total_steps),
            self.obs_dim,
            self.act_dim,
            self.device,
            self.generator,
        )
        self.policy = self.make_policy()

    # --- what subclasses specialise -------------------------------------------------------
    def make_policy(self) -> SAC | TD3:
        """The policy optimiser the config names. It must offer `act(obs, deterministic)`,
        `update(batch) -> dict of detached losses`, `state_dict()` and `load_state_dict()`."""
        config = self.config
        shared = {
            "hidden_size": config.hidden_size,
            "lr": config.policy_lr,
            "gamma": config.gamma,
            "tau": config.tau,
            "device": self.device,
            "generators": [self.generator],
            "init_generators": [self.init_generator],
        }
        bounds = (self.obs_dim, self.act_dim, self.act_low, self.act_high)
        if config.policy_optimiser() == "td3":
            return TD3(
                *bounds,
                exploration_noise=config.td3_exploration_noise,
                policy_noise=config.td3_policy_noise,
                noise_clip=config.td3_noise_clip,
                policy_delay=config.td3_policy_delay,
                **shared,
            )
        return SAC(*bounds, target_entropy=config.target_entropy, **shared)

    def learn(self, step: int) -> None:
        """Called after every real env step once `initial_steps` have been taken."""
        raise NotImplementedError

    def policy_batch(self) -> Batch:
        return self.real_buffer.sample(self.config.batch_size)

    # --- shared helpers --------------------------------------------------------------------
    def update_policy(self, updates: int) -> None:
        with self.timers("policy"):
            for _ in range(updates):
                self.add_losses(self.policy.update(self.policy_batch()))

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, dtype=np.float32).ravel(), device=self.device)

    def _random_action(self) -> torch.Tensor:
        u = torch.rand(self.act_dim, device=self.device, generator=self.generator)
        return self.act_low.to(self.device) + u * (self.act_high - self.act_low).to(self.device)

    def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
        action = self.policy.act(self._obs_tensor(obs).unsqueeze(0), deterministic=True)
        return action[0].cpu().numpy().reshape(self.env.action_space.shape)

    # --- the loop ------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start a fresh run: seeded resets of both environments."""
        first_obs, _ = self.env.reset(seed=self.seed)
        self.eval_env.reset(seed=self.seed + 10_000)
        self.loop = LoopState(obs=np.asarray(first_obs, dtype=np.float32))

    def train(
        self,
        logger: RowWriter,
        report: Reporter = no_report,
        checkpoint: Callable[[dict, int], None] | None = None,
    ) -> RunSummary:
        """Run (or continue) to `total_steps`. At each evaluation the row is computed, then
        `checkpoint(state, env_step)` is called with the row inside the state, then the row is
        appended to the CSV: a kill between the two loses nothing."""
        if self.loop is None:
            self.begin()
        loop, config = self.loop, self.config
        start_time = time.perf_counter() - loop.wall_time_s
        self.timers.on_phase = lambda phase: report(self._step, phase, None)
        obs = self._obs_tensor(loop.obs)
        for step in range(loop.next_step, self.total_steps):
            self._step = step
            with self.timers("env"):
                if step < config.initial_steps:
                    action = self._random_action()
                else:
                    action = self.policy.act(obs.unsqueeze(0))[0]
                next_np, reward, terminated, truncated, _ = self.env.step(
                    action.cpu().numpy().reshape(self.env.action_space.shape)
                )
                next_obs = self._obs_tensor(next_np)
                self.real_buffer.add(obs, action, float(reward), next_obs, float(terminated))
                self.after_env_step(obs, action, float(reward), next_obs)
                loop.episode_return += float(reward)
                if terminated or truncated:
                    loop.train_returns.append(loop.episode_return)
                    loop.episode_return = 0.0
                    next_np, _ = self.env.reset()
                    next_obs = self._obs_tensor(next_np)
                obs = next_obs
            if step >= config.initial_steps:
                self.learn(step)
            done_steps = step + 1
            if done_steps % config.epoch_length == 0 or done_steps == self.total_steps:
                row = self._row(done_steps, loop.train_returns, time.perf_counter() - start_time)
                obs_np = np.asarray(next_np, dtype=np.float32)
                self.commit_row(row, obs_np, logger, report, checkpoint)
            elif step % 50 == 0:
                report(done_steps, None, None)
        return self.summary(self.total_steps, start_time)

    def after_env_step(
        self, obs: torch.Tensor, action: torch.Tensor, reward: float, next_obs: torch.Tensor
    ) -> None:
        """Hook for algorithms that watch each real transition (CMLO's event trigger)."""

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly from the last evaluation row."""
        return {
            **super().state_dict(),
            "policy": self.policy.state_dict(),
            "real_buffer": self.real_buffer.state_dict(),
            "env": capture_env(self.env),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.real_buffer.load_state_dict(state["real_buffer"])
        restore_env(self.env, state["env"])
        super().load_state_dict(state)
