"""The environment loop every off-policy agent shares (Stable-Baselines3's `OffPolicyAlgorithm` in
spirit): act, step, store, learn, and once per epoch evaluate and append one CSV row.

Subclasses say only what differs in `learn` (SAC: G gradient steps; Dyna: model training,
rollouts, then G steps on mixed batches) and add their own columns through `record`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from usbpo_cli.agents.buffers import Batch, ReplayBuffer
from usbpo_cli.agents.sac import SAC
from usbpo_cli.agents.td3 import TD3
from usbpo_cli.envs.state import capture_env, restore_env
from usbpo_cli.envs.tasks import make_env
from usbpo_cli.errors import TrainingDiverged
from usbpo_cli.runs.config import PolicyConfig
from usbpo_cli.runs.csvlog import CsvLogger
from usbpo_cli.util.rng import capture_rng, restore_rng
from usbpo_cli.util.timers import PhaseTimer

# Called with (env_step, phase name or None, last eval return or None).
Reporter = Callable[[int, str | None, float | None], None]


def _no_report(step: int, phase: str | None, last_return: float | None) -> None:
    pass


@dataclass
class LoopState:
    """Where the env loop stands after an evaluation row (what a checkpoint must carry)."""

    obs: np.ndarray
    next_step: int = 0
    episode_return: float = 0.0
    train_returns: list[float] = field(default_factory=list)
    eval_returns: list[float] = field(default_factory=list)
    rows: int = 0
    wall_time_s: float = 0.0


# Losses whose non-finite value means training diverged (the model's are checked at training).
GUARDED_COLUMNS = (
    "critic_loss",
    "actor_loss",
    "alpha",
    "model_loss_train",
    "model_shift",
    "model_bias",
)


def check_finite(row: dict[str, Any], step: int) -> None:
    for key in GUARDED_COLUMNS:
        value = row.get(key)
        if value is not None and not math.isfinite(value):
            raise TrainingDiverged(f"{key} became {value} before env step {step}")


def evaluate_episodes(
    env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int
) -> list[float]:
    """Returns of `episodes` fresh episodes of `env` under `act` (observation -> env action).
    Every agent evaluates through this, so an evaluation means the same thing for all of them."""
    returns = []
    for _ in range(episodes):
        obs, _ = env.reset()
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def evaluation_row(
    step: int, epoch_length: int, returns: list[float], train_returns: list[float], wall: float
) -> dict[str, float | None]:
    """The columns every algorithm's row starts with; the agent adds its losses and timings."""
    return {
        "env_step": step,
        "epoch": step // epoch_length,
        "eval_return_mean": float(np.mean(returns)) if returns else None,
        "eval_return_std": float(np.std(returns)) if returns else None,
        "train_return": float(np.mean(train_returns)) if train_returns else None,
        "wall_time_s": wall,
    }


@dataclass
class RunSummary:
    env_steps: int
    final_return: float
    best_return: float
    wall_time_s: float
    rows: int


def commit_row(
    loop: LoopState,
    row: dict[str, Any],
    obs: np.ndarray,
    snapshot: Callable[[], dict],
    logger: CsvLogger,
    report: Reporter,
    checkpoint: Callable[[dict, int], None] | None,
) -> None:
    """Advance `loop` past an evaluation row, checkpoint (the row inside), then append the row:
    a kill between the two loses nothing. Every agent's loop ends its evaluations here."""
    step = row["env_step"]
    check_finite(row, step)
    loop.next_step, loop.rows = step, loop.rows + 1
    loop.obs, loop.train_returns = obs, []
    loop.wall_time_s = row["wall_time_s"]
    if row["eval_return_mean"] is not None:
        loop.eval_returns.append(row["eval_return_mean"])
    if checkpoint is not None:
        checkpoint({"agent": snapshot(), "row": row}, step)
    logger.write(row)
    report(step, None, row["eval_return_mean"])


def run_summary(loop: LoopState, env_steps: int, start_time: float) -> RunSummary:
    return RunSummary(
        env_steps=env_steps,
        final_return=loop.eval_returns[-1] if loop.eval_returns else float("nan"),
        best_return=max(loop.eval_returns) if loop.eval_returns else float("nan"),
        wall_time_s=time.perf_counter() - start_time,
        rows=loop.rows,
    )


def reseed_after_rollback(seed: int, salt: int) -> None:
    """A fresh random stream after a rollback, so a divergence is not replayed exactly."""
    torch.manual_seed(seed + 1_000_003 * salt)
    np.random.seed((seed + 1_000_003 * salt) % 2**32)


class OffPolicyAgent:
    """Owns the real env, the real replay buffer, the policy optimiser and the evaluation."""

    def __init__(
        self,
        env_id: str,
        config: PolicyConfig,
        *,
        seed: int,
        total_steps: int,
        device: torch.device | str = "cpu",
        truncate_obs: bool = False,
    ) -> None:
        self.config, self.seed, self.total_steps = config, seed, total_steps
        self.device = torch.device(device)
        torch.manual_seed(seed)
        np.random.seed(seed)
        self.env = make_env(env_id, seed=seed, truncate_obs=truncate_obs)
        self.eval_env = make_env(env_id, seed=seed + 10_000, truncate_obs=truncate_obs)
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self.act_low = torch.as_tensor(self.env.action_space.low, dtype=torch.float32).flatten()
        self.act_high = torch.as_tensor(self.env.action_space.high, dtype=torch.float32).flatten()
        self.real_buffer = ReplayBuffer(
            min(config.replay_size, total_steps), self.obs_dim, self.act_dim, self.device
        )
        self.policy = self.make_policy()
        self.timers = PhaseTimer(self.device)
        self.loop: LoopState | None = None
        self._step = 0
        self._metrics: dict[str, list[float]] = {}
        self._summed: set[str] = set()
        # Per loss: its sum and how many updates reported it (TD3's actor loss comes only
        # from its delayed actor updates, so each key is averaged over its own count).
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}

    # --- what subclasses specialise -------------------------------------------------------
    def make_policy(self) -> SAC | TD3:
        """The policy optimiser `config.policy` names. It must offer `act(obs, deterministic)`,
        `update(batch) -> dict of detached losses`, `state_dict()` and `load_state_dict()`."""
        config = self.config
        shared = {
            "hidden_size": config.hidden_size,
            "lr": config.policy_lr,
            "gamma": config.gamma,
            "tau": config.tau,
            "device": self.device,
        }
        bounds = (self.obs_dim, self.act_dim, self.act_low, self.act_high)
        if config.policy == "td3":
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
                losses = self.policy.update(self.policy_batch())
                for key, value in losses.items():
                    self._loss_sums[key] = self._loss_sums.get(key, 0.0) + value
                    self._loss_counts[key] = self._loss_counts.get(key, 0) + 1

    def record(self, name: str, value: float, total: bool = False, latest: bool = False) -> None:
        """Collect a per-row metric; the row shows the mean (with `total`, the sum; with
        `latest`, the last value) of what was recorded since the last row."""
        if latest:
            self._metrics[name] = []
        self._metrics.setdefault(name, []).append(float(value))
        if total:
            self._summed.add(name)

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, dtype=np.float32).ravel(), device=self.device)

    def _random_action(self) -> torch.Tensor:
        u = torch.rand(self.act_dim, device=self.device)
        return self.act_low.to(self.device) + u * (self.act_high - self.act_low).to(self.device)

    def evaluate(self) -> list[float]:
        def act(obs: np.ndarray) -> np.ndarray:
            action = self.policy.act(self._obs_tensor(obs).unsqueeze(0), deterministic=True)
            return action[0].cpu().numpy().reshape(self.env.action_space.shape)

        return evaluate_episodes(self.eval_env, act, self.config.eval_episodes)

    def _row(self, step: int, train_returns: list[float], wall: float) -> dict[str, float | None]:
        with self.timers("eval"):
            returns = self.evaluate()
        row = evaluation_row(step, self.config.epoch_length, returns, train_returns, wall)
        for key, total in self._loss_sums.items():
            row[key] = float(total) / self._loss_counts[key]
        for key, values in self._metrics.items():
            row[key] = float(np.sum(values) if key in self._summed else np.mean(values))
        for phase, seconds in self.timers.pop().items():
            row[f"t_{phase}"] = seconds
        self._metrics, self._loss_sums, self._loss_counts = {}, {}, {}
        return row

    # --- the loop ------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start a fresh run: seeded resets of both environments."""
        first_obs, _ = self.env.reset(seed=self.seed)
        self.eval_env.reset(seed=self.seed + 10_000)
        self.loop = LoopState(obs=np.asarray(first_obs, dtype=np.float32))

    def train(
        self,
        logger: CsvLogger,
        report: Reporter = _no_report,
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
                commit_row(loop, row, obs_np, self.state_dict, logger, report, checkpoint)
            elif step % 50 == 0:
                report(done_steps, None, None)
        return run_summary(loop, self.total_steps, start_time)

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly from the last evaluation row."""
        return {
            "loop": dataclasses.asdict(self.loop),
            "policy": self.policy.state_dict(),
            "real_buffer": self.real_buffer.state_dict(),
            "rng": capture_rng(),
            "env": capture_env(self.env),
            "eval_env": capture_env(self.eval_env),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loop = LoopState(**state["loop"])
        self.policy.load_state_dict(state["policy"])
        self.real_buffer.load_state_dict(state["real_buffer"])
        restore_env(self.env, state["env"])
        restore_env(self.eval_env, state["eval_env"])
        restore_rng(state["rng"])
        self._metrics, self._summed, self._loss_sums, self._loss_counts = {}, set(), {}, {}
        self.timers.pop()

    def reseed(self, salt: int) -> None:
        reseed_after_rollback(self.seed, salt)

    def after_env_step(
        self, obs: torch.Tensor, action: torch.Tensor, reward: float, next_obs: torch.Tensor
    ) -> None:
        """Hook for algorithms that watch each real transition (CMLO's event trigger)."""
