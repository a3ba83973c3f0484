"""The environment loop every off-policy agent shares (Stable-Baselines3's `OffPolicyAlgorithm` in
spirit): act, step, store, learn, and once per epoch evaluate and append one CSV row.

Subclasses say only what differs in `learn` (SAC: G gradient steps; Dyna: model training,
rollouts, then G steps on mixed batches) and add their own columns through `record`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from usbpo_cli.buffers import Batch, ReplayBuffer
from usbpo_cli.config import PolicyConfig
from usbpo_cli.envs import make_env
from usbpo_cli.runlog import CsvLogger, PhaseTimer, TrainingDiverged
from usbpo_cli.sac import SAC

# Called with (env_step, phase name or None, last eval return or None).
Reporter = Callable[[int, str | None, float | None], None]


def _no_report(step: int, phase: str | None, last_return: float | None) -> None:
    pass


@dataclass
class RunSummary:
    env_steps: int
    final_return: float
    best_return: float
    wall_time_s: float
    rows: int


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
        self.policy = SAC(
            self.obs_dim,
            self.act_dim,
            self.act_low,
            self.act_high,
            hidden_size=config.hidden_size,
            lr=config.policy_lr,
            gamma=config.gamma,
            tau=config.tau,
            target_entropy=config.target_entropy,
            device=self.device,
        )
        self.timers = PhaseTimer(self.device)
        self._metrics: dict[str, list[float]] = {}
        self._summed: set[str] = set()
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_count = 0

    # --- what subclasses specialise -------------------------------------------------------
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
                self._loss_count += 1

    def record(self, name: str, value: float, total: bool = False) -> None:
        """Collect a per-row metric; the row shows the mean (or, with `total`, the sum) of what
        was recorded since the last row."""
        self._metrics.setdefault(name, []).append(float(value))
        if total:
            self._summed.add(name)

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, dtype=np.float32).ravel(), device=self.device)

    def _random_action(self) -> torch.Tensor:
        u = torch.rand(self.act_dim, device=self.device)
        return self.act_low.to(self.device) + u * (self.act_high - self.act_low).to(self.device)

    def evaluate(self) -> list[float]:
        returns = []
        for _ in range(self.config.eval_episodes):
            obs, _ = self.eval_env.reset()
            total, done = 0.0, False
            while not done:
                action = self.policy.act(self._obs_tensor(obs).unsqueeze(0), deterministic=True)
                obs, reward, terminated, truncated, _ = self.eval_env.step(
                    action[0].cpu().numpy().reshape(self.env.action_space.shape)
                )
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        return returns

    def _row(self, step: int, train_returns: list[float], wall: float) -> dict[str, float | None]:
        with self.timers("eval"):
            returns = self.evaluate()
        row: dict[str, float | None] = {
            "env_step": step,
            "epoch": step // self.config.epoch_length,
            "eval_return_mean": float(np.mean(returns)) if returns else None,
            "eval_return_std": float(np.std(returns)) if returns else None,
            "train_return": float(np.mean(train_returns)) if train_returns else None,
            "wall_time_s": wall,
        }
        if self._loss_count:
            for key, total in self._loss_sums.items():
                row[key] = float(total) / self._loss_count
        for key, values in self._metrics.items():
            row[key] = float(np.sum(values) if key in self._summed else np.mean(values))
        for phase, seconds in self.timers.pop().items():
            row[f"t_{phase}"] = seconds
        self._metrics, self._loss_sums, self._loss_count = {}, {}, 0
        return row

    def train(self, logger: CsvLogger, report: Reporter = _no_report) -> RunSummary:
        config, start_time = self.config, time.perf_counter()
        self.timers.on_phase = lambda phase: report(self._step, phase, None)
        obs = self._obs_tensor(self.env.reset(seed=self.seed)[0])
        self.eval_env.reset(seed=self.seed + 10_000)
        self.env.action_space.seed(self.seed)
        episode_return, train_returns, eval_returns, rows = 0.0, [], [], 0
        self._step = 0
        for step in range(self.total_steps):
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
                episode_return += float(reward)
                if terminated or truncated:
                    train_returns.append(episode_return)
                    episode_return = 0.0
                    next_obs = self._obs_tensor(self.env.reset()[0])
                obs = next_obs
            if step >= config.initial_steps:
                self.learn(step)
            done_steps = step + 1
            if done_steps % config.epoch_length == 0 or done_steps == self.total_steps:
                row = self._row(done_steps, train_returns, time.perf_counter() - start_time)
                for key in ("critic_loss", "actor_loss", "model_loss_train", "model_shift"):
                    value = row.get(key)
                    if value is not None and not np.isfinite(value):
                        raise TrainingDiverged(f"{key} became {value} before env step {done_steps}")
                logger.write(row)
                rows += 1
                train_returns = []
                if row["eval_return_mean"] is not None:
                    eval_returns.append(row["eval_return_mean"])
                report(done_steps, None, row["eval_return_mean"])
            elif step % 50 == 0:
                report(done_steps, None, None)
        return RunSummary(
            env_steps=self.total_steps,
            final_return=eval_returns[-1] if eval_returns else float("nan"),
            best_return=max(eval_returns) if eval_returns else float("nan"),
            wall_time_s=time.perf_counter() - start_time,
            rows=rows,
        )

    def after_env_step(
        self, obs: torch.Tensor, action: torch.Tensor, reward: float, next_obs: torch.Tensor
    ) -> None:
        """Hook for algorithms that watch each real transition (CMLO's event trigger)."""
