"""The environment loop every off-policy agent shares (Stable-Baselines3's `OffPolicyAlgorithm` in
spirit): act, step, store, learn, and once per epoch evaluate and append one CSV row.

Subclasses say only what differs in `learn` (model-free: G gradient steps; Dyna: model
training, rollouts, then G steps on mixed batches) and add their own columns through `record`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

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
from usbpo_cli.agents.buffers import Batch, ReplayBuffer, SeedBuffers
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
        """Which policy optimiser the agent builds: "sac", "td3", or an agent's own ("alm")."""
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
    """Owns the real envs, the real replay buffers and the policy optimiser, for S seeds in
    lockstep: every env step acts for all seeds in one policy pass, and every update trains
    all seeds' networks as one batch (each seed on its own data)."""

    config: OffPolicyConfig
    vectorises = True
    mixed_precision = True

    def __init__(self, env_id: str, config: OffPolicyConfig, **kwargs: Any) -> None:
        """`kwargs`: BaseAgent's seed (one, or a list), total_steps, device, truncate_obs,
        precision and compiled."""
        super().__init__(env_id, config, **kwargs)
        self.envs = [make_env(env_id, seed=s, truncate_obs=self.truncate_obs) for s in self.seeds]
        self.env = self.envs[0]
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self.act_low = torch.as_tensor(self.env.action_space.low, dtype=torch.float32).flatten()
        self.act_high = torch.as_tensor(self.env.action_space.high, dtype=torch.float32).flatten()
        self.real_buffers = SeedBuffers(
            min(config.replay_size, self.total_steps),
            self.obs_dim,
            self.act_dim,
            self.device,
            self.generators,
        )
        self.policy = self.make_policy()

    @property
    def real_buffer(self) -> ReplayBuffer:
        """A lone seed's real replay buffer (every seed's: `real_buffers`)."""
        return self.real_buffers[0]

    # --- what subclasses specialise -------------------------------------------------------
    def make_policy(self) -> SAC | TD3:
        """The policy optimiser the config names, for all seeds. It must offer
        `act(obs, deterministic)`, `update(batch) -> dict of detached losses` (per seed),
        `state_dict(seed)` and `load_state_dict(state, seed)`."""
        config = self.config
        shared = {
            "hidden_size": config.hidden_size,
            "lr": config.policy_lr,
            "gamma": config.gamma,
            "tau": config.tau,
            "device": self.device,
            "generators": self.generators,
            "init_generators": self.init_generators,
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
        return SAC(*bounds, target_entropy=config.target_entropy, compiled=self.compiled, **shared)

    def learn(self, step: int) -> None:
        """Called after every real env step once `initial_steps` have been taken."""
        raise NotImplementedError

    def policy_batch(self) -> Batch:
        """Every seed's batch of real transitions: [S, batch_size, ...] per field."""
        return self.real_buffers.sample(self.config.batch_size)

    # --- shared helpers --------------------------------------------------------------------
    def update_policy(self, updates: int) -> None:
        with self.timers("policy"), self.mixed():
            for _ in range(updates):
                self.add_losses(self.policy.update(self.policy_batch()))

    def act_seeds(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """One action per seed for the seeds' current states [S, obs] -> [S, act]. A lone
        seed's [1, obs] is its own batch of one state, as the policy takes it."""
        if self.n_seeds == 1:
            return self.policy.act(obs, deterministic)
        return self.policy.act(obs.unsqueeze(1), deterministic).squeeze(1)

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, dtype=np.float32).ravel(), device=self.device)

    def _random_actions(self) -> torch.Tensor:
        """A uniform action per seed from its own generator: [S, act]."""
        low, high = self.act_low.to(self.device), self.act_high.to(self.device)
        u = [torch.rand(self.act_dim, device=self.device, generator=g) for g in self.generators]
        return low + torch.stack(u) * (high - low)

    def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
        return self.act_deterministic_seeds(np.asarray(obs)[None])[0]

    def act_deterministic_seeds(self, obs: np.ndarray) -> np.ndarray:
        states = torch.as_tensor(
            np.asarray(obs, dtype=np.float32).reshape(self.n_seeds, -1), device=self.device
        )
        actions = self.act_seeds(states, deterministic=True).cpu().numpy()
        return actions.reshape(self.n_seeds, *self.env.action_space.shape)

    # --- the loop ------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start a fresh run: a seeded reset of every seed's env (the eval envs were seeded
        when made)."""
        for s, seed in enumerate(self.seeds):
            first_obs, _ = self.envs[s].reset(seed=seed)
            self.loops[s] = LoopState(obs=np.asarray(first_obs, dtype=np.float32))

    def train(
        self,
        logger: RowWriter | Sequence[RowWriter],
        report: Reporter | Sequence[Reporter] = no_report,
        checkpoint: Checkpointer | Sequence[Checkpointer] | None = None,
    ) -> RunSummary:
        """Run (or continue) to `total_steps`. At each evaluation every seed's row is computed,
        then `checkpoint(state, env_step)` is called with the row inside the state, then the
        row is appended to the CSV: a kill between the two loses nothing. `logger`, `report`
        and `checkpoint`: one per seed (or one for a lone seed)."""
        seeds = self.n_seeds
        loggers, reports = per_seed(logger, seeds), per_seed(report, seeds)
        checkpoints = per_seed(checkpoint, seeds)
        if self.loops[0] is None:
            self.begin()
        loops, config = self.loops, self.config
        # The seeds step together: their loops stand at the same step and share the time.
        start_time = time.perf_counter() - loops[0].wall_time_s * seeds
        self.timers.on_phase = lambda phase: [r(self._step, phase, None) for r in reports]
        obs = torch.stack([self._obs_tensor(loop.obs) for loop in loops])
        shape = self.env.action_space.shape
        for step in range(loops[0].next_step, self.total_steps):
            self._step = step
            with self.timers("env"):
                if step < config.initial_steps:
                    action = self._random_actions()
                else:
                    action = self.act_seeds(obs)
                actions = action.cpu().numpy()
                outcomes = [env.step(actions[s].reshape(shape)) for s, env in enumerate(self.envs)]
                next_obs = torch.stack([self._obs_tensor(o[0]) for o in outcomes])
                rewards = [float(o[1]) for o in outcomes]
                terminals = [float(o[2]) for o in outcomes]
                self.real_buffers.add(
                    obs,
                    action,
                    torch.tensor(rewards, device=self.device),
                    next_obs,
                    torch.tensor(terminals, device=self.device),
                )
                latest = [o[0] for o in outcomes]
                following = next_obs  # where each seed's next step starts
                for s, (loop, outcome) in enumerate(zip(loops, outcomes)):
                    self.after_env_step(obs[s], action[s], rewards[s], next_obs[s])
                    loop.episode_return += rewards[s]
                    if outcome[2] or outcome[3]:  # terminated or truncated
                        loop.train_returns.append(loop.episode_return)
                        loop.episode_return = 0.0
                        latest[s], _ = self.envs[s].reset()
                        if following is next_obs:  # a hook may keep next_obs: leave it be
                            following = next_obs.clone()
                        following[s] = self._obs_tensor(latest[s])
                obs = following
            if step >= config.initial_steps:
                self.learn(step)
            done_steps = step + 1
            if done_steps % config.epoch_length == 0 or done_steps == self.total_steps:
                elapsed = time.perf_counter() - start_time
                rows = self._rows(done_steps, [loop.train_returns for loop in loops], elapsed)
                states = [np.asarray(o, dtype=np.float32) for o in latest]
                self.commit_rows(rows, states, loggers, reports, checkpoints)
            elif step % 50 == 0:
                for r in reports:
                    r(done_steps, None, None)
        return self.summary(self.total_steps, start_time)

    def after_env_step(
        self, obs: torch.Tensor, action: torch.Tensor, reward: float, next_obs: torch.Tensor
    ) -> None:
        """Hook for algorithms that watch each real transition of a lone seed (CMLO's event
        trigger)."""

    # --- checkpoints: one seed at a time, in a lone run's layout -------------------------
    def state_dict(self, seed: int = 0) -> dict[str, Any]:
        """Everything needed to continue seed `seed` bit-exactly from the last evaluation row."""
        return {
            **super().state_dict(seed),
            "policy": self.policy.state_dict(seed),
            "real_buffer": self.real_buffers[seed].state_dict(),
            "env": capture_env(self.envs[seed]),
        }

    def load_state_dict(self, state: dict[str, Any], seed: int = 0) -> None:
        self.policy.load_state_dict(state["policy"], seed)
        self.real_buffers[seed].load_state_dict(state["real_buffer"])
        restore_env(self.envs[seed], state["env"])
        super().load_state_dict(state, seed)
