"""CMLO (Ji et al. 2022, "When to Update Your Model: Constrained Model-based RL"): the shared
Dyna loop, except that the model retrains only when an event fires.

Why: every model update moves the model the policy is being optimised in (model shift); CMLO
pays that price only once the real data has drifted enough from what the model was fitted on.
Every `cmlo_compute_interval` env steps after an update it adds `log(ratio * bias + 1)` to an
event sum, where
- bias is the running mean, since the last update, of the elites' L2 error on each new real
  transition (each elite's mean prediction of s' against the real s', averaged over the elites);
- ratio is the coverage of the real data now over its coverage at the last update, coverage being
  the volume of the convex hull of the most recent `cmlo_hull_states` real states projected onto
  their top 3 principal components.
The model retrains when the sum exceeds `cmlo_alpha` and at least `cmlo_min_interval` env steps
have passed since the last update, or after `cmlo_max_interval` steps whatever the sum; the very
first training comes at the first learning step, as in MBPO.

Rollouts follow the authors' code by default: once a model exists, every env step branches
`cmlo_rollout_batch_size` (400) rollouts from real start states, at MBPO's rollout length
schedule, whatever the trigger did; the model buffer holds `model_retain_epochs` epochs of them
(400 x 1000 starts per epoch, as many as MBPO's 100k x 4). With `cmlo_rollout_every_step=false`
rollouts follow MBPO's schedule instead (`rollout_batch_size` every `model_train_freq` steps),
so that against MBPO the one difference is when the model trains. Either way the trigger gates
only model training.

Where we differ from the authors' code, on purpose: the ratio compares with the coverage at the
last update (their code compares with the previous interval's); the hull takes the most recent
states (theirs a random sample of the whole buffer), so it tracks where the policy goes now and
costs no random draws; the bias uses each elite's mean prediction (theirs one sample per elite);
the rule is checked every env step (theirs at interval ends and every step for the bound), which
fires at the same steps when the intervals line up, as they do by default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError

from usbpo_cli.agents.dyna import DynaAgent, DynaConfig
from usbpo_cli.agents.registry import Algorithm
from usbpo_cli.errors import UsageError
from usbpo_cli.util.settings import param

PCA_DIMS = 3


def pca_project(states: np.ndarray, dims: int = PCA_DIMS) -> np.ndarray:
    """States [n, d] centred and projected onto their top `dims` principal axes (fewer when the
    data has fewer dimensions); PCA fitted on these very states by SVD."""
    centred = states - states.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:dims].T


def hull_volume(points: np.ndarray) -> float:
    """Volume of the convex hull of points [n, k] (area for k=2, length for k=1); 0 for a
    degenerate set (too few points, or all in a lower-dimensional subspace)."""
    n, dims = points.shape
    if dims == 1:
        return float(points.max() - points.min()) if n else 0.0
    if n <= dims:
        return 0.0
    try:
        return float(ConvexHull(points).volume)
    except QhullError:
        return 0.0


def coverage_volume(states: np.ndarray) -> float:
    """CMLO's coverage of a set of real states: hull volume in their own 3-D PCA projection."""
    return hull_volume(pca_project(np.asarray(states, dtype=np.float64)))


@dataclass
class CMLOConfig(DynaConfig):
    """CMLO: the Dyna loop, but the model retrains only when its event trigger fires."""

    cmlo_alpha: float = param(
        2.0, "event threshold: Hopper 1.2, Walker2d 3, HalfCheetah/Ant 2, Humanoid 2.5, others 2"
    )
    cmlo_compute_interval: int = param(
        50, "env steps between additions to the event sum: Hopper/Walker2d 20, others 50"
    )
    cmlo_min_interval: int = param(150, "env steps at least between two model updates")
    cmlo_max_interval: int = param(500, "env steps after which the model retrains regardless")
    cmlo_hull_states: int = param(
        1000, "most recent real states whose 3-D PCA convex hull gives the coverage"
    )
    cmlo_rollout_every_step: bool = param(
        True,
        "roll out cmlo_rollout_batch_size states every env step (authors' code); "
        "false: MBPO's rollout_batch_size every model_train_freq steps",
    )
    cmlo_rollout_batch_size: int = param(
        400, "start states of the rollout taken every env step once a model exists"
    )

    def validate(self) -> None:
        super().validate()
        self.require_positive(
            "cmlo_compute_interval", "cmlo_max_interval", "cmlo_rollout_batch_size"
        )
        if self.cmlo_alpha < 0:
            raise UsageError(f"cmlo_alpha must be >= 0, got {self.cmlo_alpha}")
        if not 0 <= self.cmlo_min_interval <= self.cmlo_max_interval:
            raise UsageError("need 0 <= cmlo_min_interval <= cmlo_max_interval")
        if self.cmlo_hull_states < 4:
            raise UsageError(
                f"cmlo_hull_states must be >= 4 (a 3-D hull), got {self.cmlo_hull_states}"
            )


@dataclass
class EventTrigger:
    """CMLO's update rule as a state machine over env steps, apart from any model, so it can be
    checked on synthetic streams. Steps are the loop's env step indices."""

    alpha: float
    compute_interval: int
    min_interval: int = 150
    max_interval: int = 500
    last_update: int | None = None  # step of the last model update; None before the first
    volume_then: float = 0.0  # coverage volume at the last update
    event_sum: float = 0.0
    error_sum: float = 0.0
    error_count: int = 0

    @property
    def bias(self) -> float:
        """Mean prediction error over the real transitions since the last update."""
        return self.error_sum / self.error_count if self.error_count else 0.0

    def observe_error(self, error: float) -> None:
        self.error_sum += error
        self.error_count += 1

    def coverage_due(self, step: int) -> bool:
        """Whether `step` ends a compute interval (counted from the last update)."""
        if self.last_update is None:
            return False
        since = step - self.last_update
        return since > 0 and since % self.compute_interval == 0

    def observe_coverage(self, volume_now: float) -> float:
        """Add `log(ratio * bias + 1)` to the event sum; returns the term added."""
        ratio = volume_now / self.volume_then if self.volume_then > 0 else 1.0
        term = math.log(ratio * self.bias + 1.0)
        self.event_sum += term
        return term

    def should_update(self, step: int) -> bool:
        if self.last_update is None:
            return True
        since = step - self.last_update
        fired = since >= self.min_interval and self.event_sum > self.alpha
        return fired or since >= self.max_interval

    def updated(self, step: int, volume: float) -> None:
        """The model was retrained at `step`, with the real data covering `volume`."""
        self.last_update, self.volume_then = step, volume
        self.event_sum, self.error_sum, self.error_count = 0.0, 0.0, 0


class CMLOAgent(DynaAgent):
    vectorises = False
    single_seed_reason = "its model-training trigger fires at different steps for each seed"
    config: CMLOConfig

    def __init__(self, env_id: str, config: CMLOConfig, **kwargs) -> None:
        super().__init__(env_id, config, **kwargs)
        self.trigger = EventTrigger(
            config.cmlo_alpha,
            config.cmlo_compute_interval,
            config.cmlo_min_interval,
            config.cmlo_max_interval,
        )

    def should_train_model(self, step: int) -> bool:
        return self.trigger.should_update(step)

    def rollout_due(self, step: int) -> bool:
        """Every env step once a model exists (the authors'), or MBPO's model-training
        schedule kept for the rollouts alone."""
        if self.config.cmlo_rollout_every_step:
            return self.trigger.last_update is not None
        return super().should_train_model(step)

    def rollout_starts_per_epoch(self) -> float:
        c = self.config
        if c.cmlo_rollout_every_step:
            return c.cmlo_rollout_batch_size * c.epoch_length
        return super().rollout_starts_per_epoch()

    @torch.no_grad()
    def after_env_step(
        self, obs: torch.Tensor, action: torch.Tensor, reward: float, next_obs: torch.Tensor
    ) -> None:
        if self.trigger.last_update is None:  # no model yet
            return
        mean, _ = self.model(torch.cat([obs, action]).unsqueeze(0), self.model.elites[0])
        predicted = obs + mean[:, 0, 1:]  # each elite's mean next state
        self.trigger.observe_error((predicted - next_obs).norm(dim=-1).mean().item())

    def coverage(self) -> float:
        buffer = self.real_buffer
        n = min(self.config.cmlo_hull_states, len(buffer))
        recent = (buffer.pointer - 1 - torch.arange(n, device=self.device)) % buffer.capacity
        return coverage_volume(buffer.obs[recent].cpu().numpy())

    def learn(self, step: int) -> None:
        volume = None
        if self.trigger.coverage_due(step):
            volume = self.coverage()
            self.trigger.observe_coverage(volume)
        if self.should_train_model(step):
            fired_at = self.trigger.event_sum
            self.fit_model(step)
            self.trigger.updated(step, self.coverage() if volume is None else volume)
            self.record("model_update_step", step + 1, latest=True)  # steps taken, as env_step
            self.record("event_sum", fired_at, latest=True)
        if self.rollout_due(step):
            every_step = self.config.cmlo_rollout_every_step
            starts = self.config.cmlo_rollout_batch_size if every_step else None
            with self.timers("rollout"):
                self.rollout(step, starts)
        self.update_policy(self.config.updates_per_step)

    def state_dict(self, seed: int = 0) -> dict:
        return {**super().state_dict(seed), "trigger": dataclasses.asdict(self.trigger)}

    def load_state_dict(self, state: dict, seed: int = 0) -> None:
        super().load_state_dict(state, seed)
        self.trigger = EventTrigger(**state["trigger"])


ALGORITHM = Algorithm(
    "cmlo",
    CMLOAgent,
    CMLOConfig,
    "CMLO: MBPO whose model retrains only when an event trigger fires",
)
