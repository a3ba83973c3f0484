"""PDML (Wang et al. 2023, "Live in the Moment: Learning Dynamics Model Adapted to Evolving
Policy"): the shared Dyna loop with the real data weighted by how close the policy that collected
it is to the current policy.

Why: the model is only ever queried on the states and actions of the current policy, so data
gathered by long-gone policies should count less when fitting it and when choosing where model
rollouts start.

At each model training:
1. The real data is cut at the model trainings: warm-up data comes before the first training (the
   random initial steps, plus the one step taken just before it); segment k holds the transitions
   collected after training k, by the actor that started as the snapshot taken at training k.
2. Each segment gets an upper bound on the total variation between the current policy and its
   snapshot: Pinsker's TV <= sqrt(KL(current || snapshot) / 2), with the closed-form KL of the
   actors' pre-tanh diagonal Gaussians, averaged over `pdml_tv_states` states of the segment
   (evenly spaced in it). TV is unchanged by the tanh squashing, a bijection, so the bound holds
   for the actions themselves. With `policy=td3` the actor is deterministic and the policy that
   collected the data is its exploration Gaussian N(mu(s), (td3_exploration_noise * scale)^2)
   before the clip to the bounds: the KL of two such Gaussians (same std) is
   ||mu - mu'||^2 / (2 std^2), and the clip, like any map not depending on the policy, can only
   shrink TV.
3. `segment_weights` turns the bounds into one weight per transition: 1/TV for its segment, a
   warm-up transition `pdml_warmup_factor` times one of the oldest segment, normalised to one over
   all transitions, and the newest segment's share raised to `pdml_max_rate` if below it.
4. Phase 1 draws each member's training rows by these weights (`fit_ensemble`'s sample_weights;
   the holdout stays a uniform split) and rollouts start from states drawn by them.

A snapshot is only ever evaluated on the states of its own segment, which no longer change once
the segment is complete. So when a segment completes we keep the snapshot's Gaussians on its
probe states and let the weights go: one actor copy in memory and in checkpoints, not hundreds.

Where we differ from the authors' code, on purpose: each segment is paired with the snapshot it
started from (their code pairs it with the next snapshot and floors the newest segment's weight
at the largest other weight, because the newest snapshot is the current policy); the TV bound of a
segment is averaged over that segment's states (theirs over the whole buffer); the KL uses
variances (theirs passes standard deviations as the covariance).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from usbpo_cli.agents.dyna import DynaAgent, DynaConfig
from usbpo_cli.agents.registry import Algorithm
from usbpo_cli.agents.sac import LOG_STD_MAX, LOG_STD_MIN
from usbpo_cli.agents.td3 import DeterministicActor
from usbpo_cli.errors import UsageError
from usbpo_cli.models.distributions import gaussian_kl
from usbpo_cli.util.settings import param

MIN_TV = 1e-6  # a segment whose policy equals the current one gets a large, finite weight


@dataclass
class PDMLConfig(DynaConfig):
    """PDML: the Dyna loop with real data weighted by closeness to the current policy."""

    pdml_max_rate: float = param(0.02, "floor on the newest data segment's share of the weight")
    pdml_warmup_factor: float = param(
        0.05, "weight of a warm-up transition relative to one of the oldest policy segment"
    )
    pdml_tv_states: int = param(250, "states per segment on which the TV bound is averaged")

    def validate(self) -> None:
        super().validate()
        self.require_positive("pdml_tv_states")
        if not 0.0 <= self.pdml_max_rate < 1.0:
            raise UsageError(f"pdml_max_rate must lie in [0, 1), got {self.pdml_max_rate}")
        if self.pdml_warmup_factor < 0:
            raise UsageError(f"pdml_warmup_factor must be >= 0, got {self.pdml_warmup_factor}")
        if self.policy == "td3" and self.td3_exploration_noise <= 0:
            raise UsageError(
                "pdml with policy td3 needs td3_exploration_noise > 0 (its policy distance "
                "compares the exploration Gaussians)"
            )


def actor_gaussian(actor: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian behind the actor's actions: for SAC the pre-tanh Gaussian (mean and log-std,
    clamped as the actor clamps them); for TD3 the exploration Gaussian N(mu(s), std^2) in action
    units, before the clip to the bounds. Either is mapped to the action by a function that does
    not depend on the policy, which can only shrink the total variation: the bound still holds."""
    if isinstance(actor, DeterministicActor):
        mean = actor(obs)
        return mean, actor.exploration_std.log().expand_as(mean)
    mean, log_std = actor.body(obs).chunk(2, dim=-1)
    return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


def tv_upper_bound(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """Pinsker's bound on the total variation between diagonal Gaussians: sqrt(KL(p || q) / 2)."""
    return (gaussian_kl(mean_p, log_std_p, mean_q, log_std_q).clamp_min(0.0) / 2).sqrt()


def segment_weights(
    tv_bounds: torch.Tensor,
    sizes: torch.Tensor,
    warmup_mask: torch.Tensor,
    max_rate: float = 0.02,
    warmup_factor: float = 0.05,
) -> torch.Tensor:
    """One sampling weight per transition, segments in order, summing to one.

    A policy segment's transitions weigh 1 / its TV bound (warm-up entries of `tv_bounds` are
    ignored); a warm-up transition weighs `warmup_factor` times one of the oldest policy segment;
    then, if the newest segment holds less than `max_rate` of the total, its weight is raised so
    that it holds exactly `max_rate`. Only warm-up data (or none): uniform weights.
    """
    tv = torch.as_tensor(tv_bounds, dtype=torch.float64)
    sizes = torch.as_tensor(sizes, dtype=torch.long)
    warmup = torch.as_tensor(warmup_mask, dtype=torch.bool)
    per_row = torch.ones_like(tv)
    policy = ((sizes > 0) & ~warmup).nonzero().squeeze(-1)
    if policy.numel() > 0:
        per_row = torch.where(warmup, 0.0, 1.0 / tv.clamp_min(MIN_TV))
        per_row = torch.where(warmup, warmup_factor * per_row[policy[0]], per_row)
        newest = policy[-1]
        mass = per_row * sizes
        rest = mass.sum() - mass[newest]
        if mass[newest] < max_rate * (mass[newest] + rest):
            per_row[newest] = max_rate * rest / ((1.0 - max_rate) * sizes[newest])
    weights = per_row.repeat_interleave(sizes)
    return weights / weights.sum()


class PDMLAgent(DynaAgent):
    config: PDMLConfig
    vectorises = False
    single_seed_reason = "its policy snapshots and data weights are written for one seed"

    def __init__(self, env_id: str, config: PDMLConfig, **kwargs) -> None:
        super().__init__(env_id, config, **kwargs)
        self.boundaries: list[int] = []  # real transitions stored at each model training
        self.snapshot: nn.Module | None = None  # the actor at the latest training
        # Every completed segment's probe states (absolute transition indices) and its
        # snapshot's Gaussians on them, concatenated over segments.
        self.probe_index = torch.zeros(0, dtype=torch.long, device=self.device)
        self.probe_segment = torch.zeros(0, dtype=torch.long, device=self.device)
        self.probe_mean = torch.zeros(0, self.act_dim, device=self.device)
        self.probe_log_std = torch.zeros(0, self.act_dim, device=self.device)
        self.weights: torch.Tensor | None = None  # per stored transition, oldest first

    # --- what PDML changes -----------------------------------------------------------------
    def train_model_and_roll_out(self, step: int) -> None:
        self.take_snapshot()
        self.weights = self.data_weights()
        super().train_model_and_roll_out(step)

    def model_sample_weights(self) -> torch.Tensor | None:
        return self.weights

    def rollout_start_states(self, n: int) -> torch.Tensor:
        rows = torch.multinomial(self.weights, n, replacement=True, generator=self.generator)
        return self.real_buffer.obs[self._positions(rows)].unsqueeze(0)  # its one seed

    # --- segments and weights ------------------------------------------------------------------
    def _positions(self, rows: torch.Tensor) -> torch.Tensor:
        """Buffer slots of rows counted oldest first (the order of `model_training_data`)."""
        buffer = self.real_buffer
        return (buffer.total_added - len(buffer) + rows) % buffer.capacity

    @torch.no_grad()
    def take_snapshot(self) -> None:
        """Close the segment of the previous snapshot (keeping its Gaussians on the segment's
        probe states), then snapshot the actor and open a new segment."""
        total = self.real_buffer.total_added
        if self.snapshot is not None:
            start, k = self.boundaries[-1], len(self.boundaries) - 1
            count = min(self.config.pdml_tv_states, total - start)
            index = start + torch.arange(count, device=self.device) * (total - start) // count
            obs = self.real_buffer.obs[index % self.real_buffer.capacity]
            mean, log_std = actor_gaussian(self.snapshot, obs)
            self.probe_index = torch.cat([self.probe_index, index])
            self.probe_segment = torch.cat([self.probe_segment, torch.full_like(index, k)])
            self.probe_mean = torch.cat([self.probe_mean, mean])
            self.probe_log_std = torch.cat([self.probe_log_std, log_std])
        self.snapshot = copy.deepcopy(self.policy.actor).requires_grad_(False)
        self.boundaries.append(total)

    @torch.no_grad()
    def data_weights(self) -> torch.Tensor:
        """Weights of the stored real transitions, oldest first: warm-up, then each segment."""
        buffer, segments = self.real_buffer, len(self.boundaries) - 1
        oldest = buffer.total_added - len(buffer)  # older transitions were overwritten
        alive = self.probe_index >= oldest
        mean, log_std = actor_gaussian(
            self.policy.actor, buffer.obs[self.probe_index[alive] % buffer.capacity]
        )
        tv = tv_upper_bound(mean, log_std, self.probe_mean[alive], self.probe_log_std[alive])
        where = self.probe_segment[alive]
        tv_sum = torch.zeros(segments, dtype=tv.dtype, device=self.device).index_add_(0, where, tv)
        count = torch.bincount(where, minlength=segments)
        # A segment whose probes were all overwritten (a full buffer) keeps no weight.
        tv_mean = torch.where(count > 0, tv_sum / count.clamp_min(1), torch.inf)
        edges = torch.tensor([0, *self.boundaries], device=self.device).clamp_min(oldest)
        sizes = edges[1:] - edges[:-1]  # warm-up, segment 0, ..., the newest (complete) segment
        warmup = torch.arange(segments + 1, device=self.device) == 0
        weights = segment_weights(
            torch.cat([tv_mean.new_zeros(1), tv_mean]).cpu(),
            sizes.cpu(),
            warmup.cpu(),
            self.config.pdml_max_rate,
            self.config.pdml_warmup_factor,
        )
        return weights.to(device=self.device, dtype=torch.float32)

    # --- checkpoints -------------------------------------------------------------------------
    def state_dict(self, seed: int = 0) -> dict:
        return {
            **super().state_dict(seed),
            "pdml": {
                "boundaries": list(self.boundaries),
                "snapshot": None if self.snapshot is None else self.snapshot.state_dict(),
                "probe_index": self.probe_index.cpu(),
                "probe_segment": self.probe_segment.cpu(),
                "probe_mean": self.probe_mean.cpu(),
                "probe_log_std": self.probe_log_std.cpu(),
                "weights": None if self.weights is None else self.weights.cpu(),
            },
        }

    def load_state_dict(self, state: dict, seed: int = 0) -> None:
        super().load_state_dict(state, seed)
        saved = state["pdml"]
        self.boundaries = list(saved["boundaries"])
        self.snapshot = None
        if saved["snapshot"] is not None:
            self.snapshot = copy.deepcopy(self.policy.actor).requires_grad_(False)
            self.snapshot.load_state_dict(saved["snapshot"])
        for name in ("probe_index", "probe_segment", "probe_mean", "probe_log_std"):
            setattr(self, name, saved[name].to(self.device))
        self.weights = None if saved["weights"] is None else saved["weights"].to(self.device)


ALGORITHM = Algorithm(
    "pdml",
    PDMLAgent,
    PDMLConfig,
    "PDML: MBPO with real data weighted by closeness to the current policy",
)
