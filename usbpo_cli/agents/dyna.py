"""MBPO's Dyna-style loop (Janner et al. 2019), shared by MBPO, USB-PO, CMLO and PDML.

Every `model_train_freq` env steps: freeze a copy of the ensemble (M1), train the ensemble by
maximum likelihood (phase 1, giving M2), let the subclass fine-tune it (`fine_tune_model`: USB-PO's
phase 2), then roll the model out from real start states into the model buffer. Every env step:
`updates_per_step` SAC updates on batches mixing `real_ratio` real data with model data.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from usbpo_cli.agents.buffers import Batch, ReplayBuffer, SeedBuffers
from usbpo_cli.agents.offpolicy import OffPolicyAgent, PolicyConfig
from usbpo_cli.envs.termination import termination_fn
from usbpo_cli.errors import TrainingDiverged, UsageError
from usbpo_cli.models.ensemble import (
    FitResult,
    GaussianEnsemble,
    ensemble_seed_state,
    fit_ensemble,
    load_ensemble_seed_state,
)
from usbpo_cli.models.optim import make_adam
from usbpo_cli.models.wasserstein import draw_elites, model_bias, shift_and_bias
from usbpo_cli.util.settings import param

POLICY_ROWS_PER_PASS = 5120  # states per policy pass in a rollout step (act_in_passes)
DIAGNOSTIC_SAMPLES = 1024  # (s, a) pairs behind the logged model shift, model bias and delta
# A learned log-variance bound above this (std ~ e^10 in raw units) means the model exploded.
MAX_LOGVAR_BOUND = 20.0


@dataclass
class DynaConfig(PolicyConfig):
    """MBPO's Dyna-style loop: a probabilistic ensemble, short model rollouts, mixed batches."""

    model_train_freq: int = param(250, "env steps between model trainings (and rollouts)")
    rollout_batch_size: int = param(100_000, "start states per model rollout")
    rollout_schedule: tuple[int, int, int, int] = param(
        (20, 150, 1, 15), "(min_epoch, max_epoch, min_length, max_length), linear in epoch"
    )
    real_ratio: float = param(0.05, "fraction of each policy batch drawn from real data")
    model_retain_epochs: int = param(1, "epochs of rollouts the model buffer holds")
    ensemble_size: int = param(7, "ensemble members (B)")
    num_elites: int = param(5, "members used for rollouts, chosen by holdout MSE")
    model_hidden_size: int = param(200, "width of each of the ensemble's hidden layers")
    model_hidden_layers: int = param(4, "hidden layers per ensemble member")
    model_lr: float = param(1e-3, "Adam learning rate of phase 1 (MLE)")
    model_batch_size: int = param(256, "minibatch size of phase 1")
    model_weight_decay: tuple[float, ...] = param(
        (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), "L2 weight decay per layer, input to output"
    )
    model_holdout_ratio: float = param(0.2, "fraction of real data held out for early stopping")
    model_max_holdout: int = param(5000, "cap on the holdout set size")
    model_patience: int = param(5, "epochs without a >1% holdout gain before phase 1 stops")
    model_max_epochs: int | None = param(None, "cap on phase-1 epochs per training; None = none")
    model_logvar_penalty: float = param(0.01, "weight of the learned log-variance bound penalty")
    model_bootstrap: bool = param(
        True, "each member trains on its own resample with replacement (false: every row)"
    )

    def validate(self) -> None:
        super().validate()
        self.require_positive(
            "model_train_freq",
            "rollout_batch_size",
            "ensemble_size",
            "num_elites",
            "model_hidden_size",
            "model_hidden_layers",
            "model_batch_size",
            "model_retain_epochs",
            "model_patience",
        )
        if not 0.0 <= self.real_ratio <= 1.0:
            raise UsageError(f"real_ratio must lie in [0, 1], got {self.real_ratio}")
        if self.num_elites > self.ensemble_size:
            raise UsageError("num_elites cannot exceed ensemble_size")
        if len(self.model_weight_decay) != self.model_hidden_layers + 1:
            raise UsageError(
                f"model_weight_decay needs {self.model_hidden_layers + 1} values "
                f"(one per layer), got {len(self.model_weight_decay)}"
            )
        lo_epoch, hi_epoch, lo_len, hi_len = self.rollout_schedule
        if hi_epoch < lo_epoch or lo_len < 1 or hi_len < 1:
            raise UsageError(
                "rollout_schedule must be (min_epoch<=max_epoch, min_len>=1, max_len>=1)"
            )
        if not 0.0 < self.model_holdout_ratio < 1.0:
            raise UsageError("model_holdout_ratio must lie in (0, 1)")


def fit_settings(config: DynaConfig) -> dict:
    """Phase-1 settings from the config, as `fit_ensemble` takes them."""
    return {
        "batch_size": config.model_batch_size,
        "weight_decay": config.model_weight_decay,
        "logvar_penalty": config.model_logvar_penalty,
        "holdout_ratio": config.model_holdout_ratio,
        "max_holdout": config.model_max_holdout,
        "patience": config.model_patience,
        "max_epochs": config.model_max_epochs,
        "bootstrap": config.model_bootstrap,
    }


def check_model(model: GaussianEnsemble, fit: FitResult, step: int) -> None:
    """Raise TrainingDiverged (naming the seed) on a non-finite loss or an exploding
    log-variance bound of any seed's model (`fit` per seed, as `fit_ensemble` gives it for
    [S, n, ...] data)."""
    fit = fit.with_seed_axis()
    bounds = model.max_logvar.detach().view(model.seeds, -1).max(1).values.tolist()
    for seed, (train, holdout, bound) in enumerate(zip(fit.train_loss, fit.holdout_mse, bounds)):
        if not math.isfinite(train) or not math.isfinite(holdout):
            raise TrainingDiverged(f"model loss became non-finite at env step {step}", seed)
        if not math.isfinite(bound) or bound > MAX_LOGVAR_BOUND:
            raise TrainingDiverged(
                f"model log-variance exploded ({bound:.3g}) at env step {step}", seed
            )


def act_in_passes(policy, obs: torch.Tensor) -> torch.Tensor:
    """The policy's actions for many states ([N, obs] of a lone seed, or [S, N, obs]),
    `POLICY_ROWS_PER_PASS` states at a time: at 100k states one pass makes activations no
    cache holds, and passes ran 2.3x faster on a CPU. Each state still gets its own draw."""
    rows = obs.dim() - 2
    return torch.cat([policy.act(part) for part in obs.split(POLICY_ROWS_PER_PASS, rows)], rows)


class DynaAgent(OffPolicyAgent):
    """The Dyna loop for S seeds in lockstep: one ensemble of S x E members (each seed's
    members trained on its own data, with its own normaliser, elites and early stopping), one
    pass of model rollouts for all seeds, and S model buffers."""

    config: DynaConfig

    def __init__(self, env_id: str, config: DynaConfig, **kwargs) -> None:
        super().__init__(env_id, config, **kwargs)
        self.termination, self.termination_rule = termination_fn(env_id, self.truncate_obs)
        self.model = GaussianEnsemble(
            self.obs_dim,
            self.act_dim,
            config.ensemble_size,
            config.num_elites,
            config.model_hidden_size,
            config.model_hidden_layers,
            generators=self.init_generators,
        ).to(self.device)
        self.model_opt = make_adam(self.model.parameters(), config.model_lr)
        self.rollout_length = self.rollout_length_at(0)
        self.model_buffers = SeedBuffers(
            self.model_capacity(self.rollout_length),
            self.obs_dim,
            self.act_dim,
            self.device,
            self.generators,
        )
        self.n_real = int(config.batch_size * config.real_ratio)

    @property
    def model_buffer(self) -> ReplayBuffer:
        """A lone seed's model buffer (every seed's: `model_buffers`)."""
        return self.model_buffers[0]

    # --- schedule --------------------------------------------------------------------------
    def rollout_length_at(self, step: int) -> int:
        """MBPO's linear schedule over epochs counted from the end of initial exploration."""
        min_epoch, max_epoch, min_len, max_len = self.config.rollout_schedule
        epoch = max(0, step - self.config.initial_steps) // self.config.epoch_length
        if epoch <= min_epoch or max_epoch == min_epoch:
            return int(min_len)
        fraction = min(1.0, (epoch - min_epoch) / (max_epoch - min_epoch))
        return int(min_len + fraction * (max_len - min_len))

    def rollout_starts_per_epoch(self) -> float:
        """Model rollouts started per epoch: `rollout_batch_size` every `model_train_freq` steps."""
        c = self.config
        return c.rollout_batch_size * c.epoch_length / c.model_train_freq

    def model_capacity(self, rollout_length: int) -> int:
        """Room for `model_retain_epochs` epochs of rollouts at the current length."""
        rollouts = self.rollout_starts_per_epoch()
        return max(1, int(self.config.model_retain_epochs * rollout_length * rollouts))

    def should_train_model(self, step: int) -> bool:
        return (step - self.config.initial_steps) % self.config.model_train_freq == 0

    # --- what subclasses specialise ----------------------------------------------------------
    def fine_tune_model(self, frozen: GaussianEnsemble, fit: FitResult) -> None:
        """Phase 2 hook, run after phase 1 with M1 (`frozen`) and the phase-1 holdout sets."""

    def model_training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every seed's real data as model inputs [S, n, s + a] and targets [S, n, r + s' - s]
        (the seeds step together, so each has the same number of rows)."""
        data = [buffer.ordered() for buffer in self.real_buffers.buffers]
        inputs = torch.stack([torch.cat([d.obs, d.act], dim=-1) for d in data])
        targets = torch.stack(
            [torch.cat([d.rew.unsqueeze(-1), d.next_obs - d.obs], dim=-1) for d in data]
        )
        return inputs, targets

    def model_sample_weights(self) -> torch.Tensor | None:
        """Per-row sampling weights for phase 1, aligned with `model_training_data` (PDML's);
        None trains on every row alike."""
        return None

    def rollout_start_states(self, n: int) -> torch.Tensor:
        """`n` start states per seed from its real data: [S, n, obs]."""
        return self.real_buffers.sample(n).obs

    # --- the loop ----------------------------------------------------------------------------
    def learn(self, step: int) -> None:
        if self.should_train_model(step):
            self.train_model_and_roll_out(step)
        self.update_policy(self.config.updates_per_step)

    def train_model_and_roll_out(self, step: int) -> None:
        """MBPO couples the two: retrain the model, then refill the model buffer from it."""
        before = self._model_buffer_inputs(DIAGNOSTIC_SAMPLES)
        self.fit_model(step)
        with self.timers("rollout"):
            added = self.rollout(step)
        if before is not None and min(added) > 0:
            idx = torch.stack(
                [
                    buffer.recent_indices(DIAGNOSTIC_SAMPLES, count)
                    for buffer, count in zip(self.model_buffers.buffers, added)
                ]
            )
            recent = self.model_buffers.gather(idx)
            after = torch.cat([recent.obs, recent.act], dim=-1)
            delta = self._bias_estimate(before) - self._bias_estimate(after)
            self.record("delta", delta)

    def fit_model(self, step: int) -> None:
        """Phase 1, then the subclass's phase 2, with their diagnostics; no rollouts (CMLO
        retrains on its own schedule and rolls out on MBPO's)."""
        frozen = copy.deepcopy(self.model).requires_grad_(False)  # M1, normaliser included
        with self.timers("model_phase1"):
            inputs, targets = self.model_training_data()
            settings = fit_settings(self.config)
            weights = self.model_sample_weights()
            if weights is not None and weights.dim() == 1:
                weights = weights.unsqueeze(0)  # a lone seed's weights
            with self.mixed():
                fit = fit_ensemble(
                    self.model,
                    self.model_opt,
                    inputs,
                    targets,
                    sample_weights=weights,
                    generator=self.generators,
                    **settings,
                )
        check_model(self.model, fit, step)
        validation = fit.holdout_inputs[:, :DIAGNOSTIC_SAMPLES]
        with torch.no_grad():
            shift, bias = shift_and_bias(frozen, self.model, validation, generator=self.generators)
        self.record("model_shift_before", shift)
        self.record("model_bias_before", bias)
        with self.timers("model_phase2"):
            self.fine_tune_model(frozen, fit)
        with torch.no_grad():
            shift, bias = shift_and_bias(frozen, self.model, validation, generator=self.generators)
        self.record("model_shift", shift)
        self.record("model_bias", bias)
        self.record("model_loss_train", fit.train_loss)
        self.record("model_loss_holdout", fit.holdout_mse)
        self.record("model_epochs", fit.epochs)
        self.record("model_trainings", 1, total=True)

    @torch.no_grad()
    def _bias_estimate(self, inputs: torch.Tensor) -> torch.Tensor:
        """Each seed's mean model bias on its inputs [S, n, s + a]: [S]."""
        mean, std = self.model.mean_std(inputs)
        seeds, n = inputs.shape[:2]
        mean = mean.view(seeds, self.model.ensemble_size, n, -1)
        std = std.view(seeds, self.model.ensemble_size, n, -1)
        members = draw_elites(self.model, n, self.generators)
        return model_bias(mean, std, members).mean(-1)

    def _model_buffer_inputs(self, n: int) -> torch.Tensor | None:
        if min(self.model_buffers.sizes()) == 0:
            return None
        batch = self.model_buffers.sample(n)
        return torch.cat([batch.obs, batch.act], dim=-1)

    @torch.no_grad()
    def rollout(self, step: int, starts: int | None = None) -> list[int]:
        """Branch `starts` (default `rollout_batch_size`) model rollouts per seed from its real
        states, all seeds in one pass; returns each seed's transitions added.

        Every rollout keeps its slot for all steps (fixed shapes); a done mask decides which
        transitions are stored, so a terminated rollout stops contributing.
        """
        length = self.rollout_length_at(step)
        if length != self.rollout_length:
            self.rollout_length = length
            self.model_buffers = self.model_buffers.resized(self.model_capacity(length))
        self.record("rollout_length", length)
        obs = self.rollout_start_states(starts or self.config.rollout_batch_size)
        seeds, n = obs.shape[:2]
        alive = torch.ones(seeds, n, dtype=torch.bool, device=self.device)
        added = [0] * seeds
        for _ in range(length):
            # A lone seed's states are its own batch, as the policy takes them (see act_seeds).
            with self.mixed():
                act = act_in_passes(self.policy, obs[0] if seeds == 1 else obs)
                act = act.view(seeds, n, -1)
                rew, next_obs = self.model.sample_step(obs, act, self.generators)
            done = self.termination(
                obs.reshape(seeds * n, -1),
                act.reshape(seeds * n, -1),
                next_obs.reshape(seeds * n, -1),
            ).view(seeds, n)
            for s, buffer in enumerate(self.model_buffers.buffers):
                keep = alive[s].nonzero().squeeze(-1)
                buffer.add_batch(
                    obs[s, keep],
                    act[s, keep],
                    rew[s, keep],
                    next_obs[s, keep],
                    done[s, keep].float(),
                )
                added[s] += keep.numel()
            alive = alive & ~done
            if not bool(alive.any()):
                break
            obs = next_obs
        return added

    def state_dict(self, seed: int = 0) -> dict:
        return {
            **super().state_dict(seed),
            **ensemble_seed_state(self.model, self.model_opt, seed),
            "model_buffer": self.model_buffers[seed].state_dict(),
            "rollout_length": self.rollout_length,
        }

    def load_state_dict(self, state: dict, seed: int = 0) -> None:
        super().load_state_dict(state, seed)
        load_ensemble_seed_state(self.model, self.model_opt, state, seed)
        saved = state["model_buffer"]
        if saved["capacity"] != self.model_buffers.capacity:  # the length had grown
            self.model_buffers = self.model_buffers.resized(saved["capacity"])
        self.model_buffers[seed].load_state_dict(saved)
        self.rollout_length = state["rollout_length"]

    def policy_batch(self) -> Batch:
        """Per seed, `real_ratio` real and the rest model data; all real until every seed's
        model buffer has data."""
        size = self.config.batch_size
        if min(self.model_buffers.sizes()) == 0:
            return self.real_buffers.sample(size)
        real = self.real_buffers.sample(self.n_real)
        model = self.model_buffers.sample(size - self.n_real)
        return Batch(*(torch.cat([r, m], dim=1) for r, m in zip(real, model)))
