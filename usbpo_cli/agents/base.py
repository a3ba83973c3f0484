"""What every agent shares, on-policy or off: the evaluation environment and protocol, one
CSV row per evaluation (losses averaged since the last row, per-phase timers), checkpoint
plumbing for the loop position, the random generators and the evaluation env, and the reseed
after a divergence rollback (Stable-Baselines3's `BaseAlgorithm` in spirit).

Subclasses own their training environments and their loop (`train`), and extend
`state_dict`/`load_state_dict` with what they add.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from usbpo_cli.envs.state import capture_env, restore_env
from usbpo_cli.envs.tasks import make_env
from usbpo_cli.errors import TrainingDiverged
from usbpo_cli.util.settings import Settings, param
from usbpo_cli.util.timers import PhaseTimer

# Called with (env_step, phase name or None, last eval return or None).
Reporter = Callable[[int, str | None, float | None], None]


def no_report(step: int, phase: str | None, last_return: float | None) -> None:
    pass


class RowWriter(Protocol):
    """Where an agent's evaluation rows go (the run layer's progress.csv writer)."""

    def write(self, row: dict[str, Any]) -> None: ...


@dataclass
class AgentConfig(Settings):
    """Settings every agent has: how often it is evaluated and on how many episodes."""

    epoch_length: int = param(1000, "env steps per epoch; one evaluation row is logged per epoch")
    eval_episodes: int = param(5, "deterministic-policy episodes per evaluation")

    def validate(self) -> None:
        super().validate()
        self.require_positive("epoch_length")
        self.require_non_negative("eval_episodes")


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


@dataclass
class RunSummary:
    env_steps: int
    final_return: float
    best_return: float
    wall_time_s: float
    rows: int


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


class BaseAgent:
    """The evaluation env, the row being accumulated, timers, and the loop position."""

    config: AgentConfig

    def __init__(
        self,
        env_id: str,
        config: AgentConfig,
        *,
        seed: int,
        total_steps: int,
        device: torch.device | str = "cpu",
        truncate_obs: bool = False,
    ) -> None:
        self.env_id, self.truncate_obs = env_id, truncate_obs
        self.config, self.seed, self.total_steps = config, seed, total_steps
        self.device = torch.device(device)
        # Every random draw of this agent comes from its own generators; nothing is seeded
        # globally, so agents in one process never share a stream. Network initialisations
        # draw on the CPU (parameters are made there, then moved), everything else on the
        # agent's device; on a CPU the two are one generator.
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.init_generator = self.generator
        if self.device.type != "cpu":
            self.init_generator = torch.Generator()
            self.init_generator.manual_seed(seed)
        self.eval_env = make_env(env_id, seed=seed + 10_000, truncate_obs=truncate_obs)
        self.timers = PhaseTimer(self.device)
        self.loop: LoopState | None = None
        self._step = 0
        self._clear_row()

    # --- what subclasses provide ---------------------------------------------------------
    def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
        """The evaluation policy: one env observation to one env action."""
        raise NotImplementedError

    def train(
        self,
        logger: RowWriter,
        report: Reporter = no_report,
        checkpoint: Callable[[dict, int], None] | None = None,
    ) -> RunSummary:
        """Run (or continue) to `total_steps`, one row per evaluation."""
        raise NotImplementedError

    # --- the row ---------------------------------------------------------------------------
    def _clear_row(self) -> None:
        self._metrics: dict[str, list[float]] = {}
        self._summed: set[str] = set()
        # Per loss: its sum and how many updates reported it (TD3's actor loss comes only
        # from its delayed actor updates, so each key is averaged over its own count).
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}

    def add_losses(self, losses: dict[str, torch.Tensor]) -> None:
        """Fold one update's detached losses into the row's averages."""
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

    def evaluate(self) -> list[float]:
        return evaluate_episodes(self.eval_env, self.act_deterministic, self.config.eval_episodes)

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
        self._clear_row()
        return row

    def commit_row(
        self,
        row: dict[str, Any],
        obs: np.ndarray,
        logger: RowWriter,
        report: Reporter,
        checkpoint: Callable[[dict, int], None] | None,
    ) -> None:
        """Advance the loop past an evaluation row, checkpoint (the row inside), then append
        the row: a kill between the two loses nothing. Every agent's loop ends its evaluations
        here."""
        loop, step = self.loop, row["env_step"]
        check_finite(row, step)
        loop.next_step, loop.rows = step, loop.rows + 1
        loop.obs, loop.train_returns = obs, []
        loop.wall_time_s = row["wall_time_s"]
        if row["eval_return_mean"] is not None:
            loop.eval_returns.append(row["eval_return_mean"])
        if checkpoint is not None:
            checkpoint({"agent": self.state_dict(), "row": row}, step)
        logger.write(row)
        report(step, None, row["eval_return_mean"])

    def summary(self, env_steps: int, start_time: float) -> RunSummary:
        loop = self.loop
        return RunSummary(
            env_steps=env_steps,
            final_return=loop.eval_returns[-1] if loop.eval_returns else float("nan"),
            best_return=max(loop.eval_returns) if loop.eval_returns else float("nan"),
            wall_time_s=time.perf_counter() - start_time,
            rows=loop.rows,
        )

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The loop position, the random generator and the evaluation env; subclasses add
        their networks, buffers and training envs."""
        return {
            "loop": dataclasses.asdict(self.loop),
            "rng": {"generator": self.generator.get_state()},
            "eval_env": capture_env(self.eval_env),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Subclasses load their own parts first, then call this (the generator comes last,
        so nothing loaded after it can draw from it)."""
        self.loop = LoopState(**state["loop"])
        restore_env(self.eval_env, state["eval_env"])
        self.generator.set_state(state["rng"]["generator"])
        self._clear_row()
        self.timers.pop()

    def reseed(self, salt: int) -> None:
        """A fresh random stream after a rollback, so a divergence is not replayed exactly."""
        self.generator.manual_seed(self.seed + 1_000_003 * salt)
