"""What every agent shares, on-policy or off: the evaluation environment and protocol, one
CSV row per evaluation (losses averaged since the last row, per-phase timers), checkpoint
plumbing for the loop position, the random generators and the evaluation env, and the reseed
after a divergence rollback (Stable-Baselines3's `BaseAlgorithm` in spirit).

Subclasses own their training environments and their loop (`train`), and extend
`state_dict`/`load_state_dict` with what they add.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import gymnasium as gym
import numpy as np
import torch

from usbpo_cli.envs.state import capture_env, restore_env
from usbpo_cli.envs.tasks import make_env
from usbpo_cli.errors import TrainingDiverged
from usbpo_cli.util import precision as precision_settings
from usbpo_cli.util.allocator import keep_freed_memory
from usbpo_cli.util.settings import Settings, param
from usbpo_cli.util.timers import PhaseTimer

# Called with (env_step, phase name or None, last eval return or None).
Reporter = Callable[[int, str | None, float | None], None]
# Called with ({"agent": one seed's state, "row": its row}, env_step) to save a checkpoint.
Checkpointer = Callable[[dict, int], None]


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


def check_finite(row: dict[str, Any], step: int, seed: int = 0) -> None:
    """Raise TrainingDiverged (naming seed index `seed` of the agent) on a non-finite loss."""
    for key in GUARDED_COLUMNS:
        value = row.get(key)
        if value is not None and not math.isfinite(value):
            raise TrainingDiverged(f"{key} became {value} before env step {step}", seed)


def evaluate_episodes(
    env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int
) -> list[float]:
    """Returns of `episodes` fresh episodes of `env` under `act` (observation -> env action).
    Every agent evaluates through this (or `evaluate_seeds`, the same protocol for several
    seeds), so an evaluation means the same thing for all of them."""
    return evaluate_seeds([env], lambda obs: act(obs[0])[None], episodes)[0]


def evaluate_seeds(
    envs: Sequence[gym.Env], act: Callable[[np.ndarray], np.ndarray], episodes: int
) -> list[list[float]]:
    """`evaluate_episodes` for S seeds at once: `act` maps the S current observations [S, obs]
    to S actions, so one policy pass serves every seed; each env sees exactly the calls it
    would see alone (a seed whose episodes are done is stepped no further)."""
    returns: list[list[float]] = [[] for _ in envs]
    if episodes <= 0:
        return returns
    obs = [env.reset()[0] for env in envs]
    totals = [0.0] * len(envs)
    active = list(range(len(envs)))
    while active:
        actions = act(np.stack(obs))
        for s in list(active):
            obs[s], reward, terminated, truncated, _ = envs[s].step(actions[s])
            totals[s] += float(reward)
            if terminated or truncated:
                returns[s].append(totals[s])
                totals[s] = 0.0
                if len(returns[s]) == episodes:
                    active.remove(s)
                else:
                    obs[s], _ = envs[s].reset()
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


T = TypeVar("T")


def per_seed(value: T | Sequence[T], seeds: int) -> list[T]:
    """One item per seed: a sequence as given (one per seed), else the one value for a lone
    seed. `train` takes its writers, reporters and checkpointers this way."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if len(items) != seeds:
            raise ValueError(f"expected one per seed ({seeds}), got {len(items)}")
        return items
    if seeds != 1:
        raise ValueError(f"expected one per seed ({seeds}), got a single one")
    return [value]


class BaseAgent:
    """The evaluation envs, the rows being accumulated, timers, and the loop positions.

    An agent trains S seeds of one configuration in lockstep (`seed` a list of S seeds; one
    seed is S = 1): each seed has its own generators, evaluation env, loop position, CSV row
    and checkpoint, exactly those of a lone run of that seed. Agents that train one seed only
    (PPO, ALM) use the lone-seed names (`seed`, `generator`, `eval_env`, `loop`)."""

    config: AgentConfig
    # Whether the agent can train several seeds at once (off-policy agents whose schedule is
    # the same for every seed); the others train S = 1 only.
    vectorises: ClassVar[bool] = False
    single_seed_reason: ClassVar[str] = "it trains one seed per process"
    # Whether `--precision bf16` reaches this agent's products (see `mixed`); others run fp32.
    mixed_precision: ClassVar[bool] = False

    def __init__(
        self,
        env_id: str,
        config: AgentConfig,
        *,
        seed: int | Sequence[int],
        total_steps: int,
        device: torch.device | str = "cpu",
        truncate_obs: bool = False,
        precision: str = "fp32",
        compiled: bool = False,
    ) -> None:
        self.env_id, self.truncate_obs = env_id, truncate_obs
        self.precision = precision  # fp32 or bf16 (util/precision.py); checked by the runner
        # torch.compile SAC's update (`--compile`; util/compiler.py); checked by the runner
        self.compiled = compiled
        self.config, self.total_steps = config, total_steps
        self.seeds = [int(s) for s in seed] if isinstance(seed, Sequence) else [int(seed)]
        if not self.seeds or (len(self.seeds) > 1 and not self.vectorises):
            raise ValueError(f"{type(self).__name__} trains one seed at a time")
        self.n_seeds = len(self.seeds)
        self.seed = self.seeds[0]
        self.device = torch.device(device)
        # Every random draw of a seed comes from its own generators; nothing is seeded
        # globally, so seeds and agents in one process never share a stream. Network
        # initialisations draw on the CPU (parameters are made there, then moved), everything
        # else on the agent's device; on a CPU the two are one generator.
        self.generators = [torch.Generator(device=self.device) for _ in self.seeds]
        for generator, s in zip(self.generators, self.seeds):
            generator.manual_seed(s)
        self.init_generators = self.generators
        if self.device.type != "cpu":
            self.init_generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.generator, self.init_generator = self.generators[0], self.init_generators[0]
        self.eval_envs = [
            make_env(env_id, seed=s + 10_000, truncate_obs=truncate_obs) for s in self.seeds
        ]
        self.eval_env = self.eval_envs[0]
        self.timers = PhaseTimer(self.device)
        # the widest hidden layer decides which library multiplies float32 matrices on a CPU
        widths = [v for k, v in vars(config).items() if k.endswith("hidden_size")]
        precision_settings.configure(precision, self.device, max(widths, default=0))
        keep_freed_memory()  # every training step reuses its freed blocks (util/allocator.py)
        self.loops: list[LoopState | None] = [None] * self.n_seeds
        self._step = 0
        self._clear_row()

    @property
    def loop(self) -> LoopState | None:
        """The loop position of a lone seed (every seed's: `loops`)."""
        return self.loops[0]

    @loop.setter
    def loop(self, value: LoopState | None) -> None:
        self.loops[0] = value

    # --- what subclasses provide ---------------------------------------------------------
    def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
        """The evaluation policy of a lone seed: one env observation to one env action."""
        raise NotImplementedError

    def act_deterministic_seeds(self, obs: np.ndarray) -> np.ndarray:
        """The evaluation policy of every seed: [S, obs] observations to [S, ...] actions."""
        return np.stack([self.act_deterministic(obs[0])])

    def train(
        self,
        logger: RowWriter | Sequence[RowWriter],
        report: Reporter | Sequence[Reporter] = no_report,
        checkpoint: Checkpointer | Sequence[Checkpointer] | None = None,
    ) -> RunSummary:
        """Run (or continue) to `total_steps`, one row per evaluation and seed (`logger`,
        `report` and `checkpoint`: one per seed, or one for a lone seed)."""
        raise NotImplementedError

    # --- the rows --------------------------------------------------------------------------
    def _clear_row(self) -> None:
        # Per metric: one array of S values per `record` call.
        self._metrics: dict[str, list[np.ndarray]] = {}
        self._summed: set[str] = set()
        # Per loss: its sum (a tensor, one value per seed: no host sync per update) and how
        # many updates reported it (TD3's actor loss comes only from its delayed actor
        # updates, so each key is averaged over its own count).
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}

    def add_losses(self, losses: dict[str, torch.Tensor]) -> None:
        """Fold one update's detached losses ([S], or scalars for a lone seed) into the rows'
        averages."""
        for key, value in losses.items():
            self._loss_sums[key] = self._loss_sums.get(key, 0.0) + value
            self._loss_counts[key] = self._loss_counts.get(key, 0) + 1

    def record(
        self,
        name: str,
        value: float | Sequence[float] | torch.Tensor,
        total: bool = False,
        latest: bool = False,
    ) -> None:
        """Collect a per-row metric, one value for every seed or one per seed; each seed's row
        shows the mean (with `total`, the sum; with `latest`, the last value) of what was
        recorded since the last row."""
        if latest:
            self._metrics[name] = []
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().numpy()
        values = np.broadcast_to(np.asarray(value, dtype=np.float64), (self.n_seeds,))
        self._metrics.setdefault(name, []).append(values)
        if total:
            self._summed.add(name)

    def recorded(self, name: str, seed: int = 0) -> list[float]:
        """What `record` collected for `name` since the last row, for seed `seed`."""
        return [float(values[seed]) for values in self._metrics.get(name, [])]

    def evaluate(self) -> list[list[float]]:
        """Each seed's returns of `eval_episodes` deterministic episodes."""
        return evaluate_seeds(
            self.eval_envs, self.act_deterministic_seeds, self.config.eval_episodes
        )

    def _rows(
        self, step: int, train_returns: Sequence[list[float]], elapsed: float
    ) -> list[dict[str, float | None]]:
        """Every seed's row. Times are each seed's share of the process's (the elapsed time
        and every phase divided by S), so a seed trained beside others reports what it cost."""
        with self.timers("eval"):
            returns = self.evaluate()
        share = 1.0 / self.n_seeds
        phases = self.timers.pop()
        losses = {
            key: (total.reshape(-1).tolist() if isinstance(total, torch.Tensor) else [total])
            for key, total in self._loss_sums.items()
        }
        rows = []
        for s in range(self.n_seeds):
            row = evaluation_row(
                step, self.config.epoch_length, returns[s], train_returns[s], elapsed * share
            )
            for key, totals in losses.items():
                row[key] = float(totals[s]) / self._loss_counts[key]
            for key, values in self._metrics.items():
                column = [v[s] for v in values]
                row[key] = float(np.sum(column) if key in self._summed else np.mean(column))
            for phase, seconds in phases.items():
                row[f"t_{phase}"] = seconds * share
            rows.append(row)
        self._clear_row()
        return rows

    def _row(self, step: int, train_returns: list[float], wall: float) -> dict[str, float | None]:
        """A lone seed's row."""
        return self._rows(step, [train_returns], wall)[0]

    def commit_rows(
        self,
        rows: Sequence[dict[str, Any]],
        obs: Sequence[np.ndarray],
        loggers: Sequence[RowWriter],
        reports: Sequence[Reporter],
        checkpoints: Sequence[Checkpointer | None],
    ) -> None:
        """Advance every seed's loop past its evaluation row, checkpoint it (the row inside),
        then append the row: a kill between the two loses nothing. Every seed's row is checked
        before any is written, so the seeds' checkpoints stay at the same step (a divergence
        rolls them all back together). Every agent's loop ends its evaluations here."""
        for s, row in enumerate(rows):
            check_finite(row, row["env_step"], s)
        for s, row in enumerate(rows):
            loop, step = self.loops[s], row["env_step"]
            loop.next_step, loop.rows = step, loop.rows + 1
            loop.obs, loop.train_returns = obs[s], []
            loop.wall_time_s = row["wall_time_s"]
            if row["eval_return_mean"] is not None:
                loop.eval_returns.append(row["eval_return_mean"])
            if checkpoints[s] is not None:
                checkpoints[s]({"agent": self.state_dict(s), "row": row}, step)
            loggers[s].write(row)
            reports[s](step, None, row["eval_return_mean"])

    def commit_row(
        self,
        row: dict[str, Any],
        obs: np.ndarray,
        logger: RowWriter,
        report: Reporter,
        checkpoint: Checkpointer | None,
    ) -> None:
        """`commit_rows` for a lone seed."""
        self.commit_rows([row], [obs], [logger], [report], [checkpoint])

    def mixed(self) -> contextlib.AbstractContextManager:
        """The region where products may run in bf16 under `--precision bf16` (autocast; a
        no-op under fp32): subclasses put their heavy products inside it (the ensemble's
        training, rollouts, phase 2, the policy update), never the optimiser's master state."""
        return precision_settings.mixed(self.precision, self.device)

    def summary(self, env_steps: int, start_time: float, seed: int = 0) -> RunSummary:
        return RunSummary(
            env_steps=env_steps,
            wall_time_s=time.perf_counter() - start_time,
            **self.seed_results(seed),
        )

    def seed_results(self, seed: int) -> dict[str, Any]:
        """Seed `seed`'s final and best evaluation returns and its row count."""
        loop = self.loops[seed]
        returns = loop.eval_returns
        return {
            "final_return": returns[-1] if returns else float("nan"),
            "best_return": max(returns) if returns else float("nan"),
            "rows": loop.rows,
        }

    # --- checkpoints: one seed at a time, in a lone run's layout ---------------------------
    def state_dict(self, seed: int = 0) -> dict[str, Any]:
        """Seed `seed`'s loop position, random generator and evaluation env; subclasses add
        their networks, buffers and training envs."""
        return {
            "loop": dataclasses.asdict(self.loops[seed]),
            "rng": {"generator": self.generators[seed].get_state()},
            "eval_env": capture_env(self.eval_envs[seed]),
        }

    def load_state_dict(self, state: dict[str, Any], seed: int = 0) -> None:
        """Subclasses load their own parts first, then call this (the generator comes last,
        so nothing loaded after it can draw from it)."""
        self.loops[seed] = LoopState(**state["loop"])
        restore_env(self.eval_envs[seed], state["eval_env"])
        self.generators[seed].set_state(state["rng"]["generator"])
        self._clear_row()
        self.timers.pop()

    def reseed(self, salt: int, seed: int = 0) -> None:
        """A fresh random stream for seed `seed` after a rollback, so a divergence is not
        replayed exactly."""
        self.generators[seed].manual_seed(self.seeds[seed] + 1_000_003 * salt)
