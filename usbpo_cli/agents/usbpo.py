"""USB-PO (Unified model Shift and model Bias Policy Optimization): the Dyna loop plus phase 2.

After phase 1 (MLE) gives M2, phase 2 fine-tunes all of M2's parameters with its own Adam to
minimise J = model_shift(M1 -> M2) + model_bias(M2), both second-order Wasserstein distances,
on (s, a) pairs from the model buffer. Each step is validated on real holdout pairs; the best
snapshot (the phase-1 model included) is kept, with early stopping, and the elites re-picked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from usbpo_cli.agents.dyna import DynaAgent, DynaConfig
from usbpo_cli.agents.registry import Algorithm
from usbpo_cli.errors import UsageError
from usbpo_cli.models.ensemble import FitResult, FrozenSeeds, GaussianEnsemble, select_elites
from usbpo_cli.models.optim import make_adam
from usbpo_cli.models.seed_axis import (
    adam_seed_state,
    load_adam_seed_state,
    load_module_seed_state,
    module_seed_state,
    parameter_axes,
)
from usbpo_cli.models.wasserstein import draw_elites, shift_and_bias
from usbpo_cli.util.settings import param


@dataclass
class USBPOConfig(DynaConfig):
    """USB-PO: the Dyna loop plus the phase-2 fine-tune on model shift + model bias."""

    phase2_lr: float = param(1e-4, "Adam learning rate of the phase-2 fine-tune")
    phase2_batch_size: int = param(1024, "(s, a) pairs from the model buffer per phase-2 step")
    phase2_val_size: int = param(1024, "real holdout (s, a) pairs used to validate phase 2")
    phase2_max_steps: int = param(100, "phase-2 steps at most per model training")
    phase2_patience: int = param(10, "phase-2 steps without validation gain before stopping")
    phase2_min_improvement: float = param(1e-4, "relative gain in J that counts as improvement")
    phase2_terms: str = param("both", "terms of J: both, shift or bias (ablation)")

    def validate(self) -> None:
        super().validate()
        self.require_positive(
            "phase2_batch_size", "phase2_val_size", "phase2_max_steps", "phase2_patience"
        )
        if self.phase2_terms not in ("both", "shift", "bias"):
            raise UsageError(f"phase2_terms must be both, shift or bias, got {self.phase2_terms!r}")


class USBPOAgent(DynaAgent):
    config: USBPOConfig

    def __init__(self, env_id: str, config: USBPOConfig, **kwargs) -> None:
        super().__init__(env_id, config, **kwargs)
        # Separate from phase 1's optimiser; its moments persist across trainings.
        self.phase2_opt = make_adam(self.model.parameters(), config.phase2_lr)

    def state_dict(self, seed: int = 0) -> dict:
        axes = parameter_axes(self.model, self.model.seed_axes())
        phase2 = adam_seed_state(self.phase2_opt, axes, seed)
        return {**super().state_dict(seed), "phase2_opt": phase2}

    def load_state_dict(self, state: dict, seed: int = 0) -> None:
        super().load_state_dict(state, seed)
        axes = parameter_axes(self.model, self.model.seed_axes())
        load_adam_seed_state(self.phase2_opt, axes, state["phase2_opt"], seed)

    def objective(
        self,
        frozen: GaussianEnsemble,
        inputs: torch.Tensor,
        k1: torch.Tensor | None = None,
        k2: torch.Tensor | None = None,
        frozen_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """J on raw (s, a) inputs ([S, N, in]: one J per seed; [N, in]: a lone seed's);
        `phase2_terms` selects terms for the ablation study."""
        generators = self.generators if inputs.dim() == 3 else self.generator
        shift, bias = shift_and_bias(
            frozen, self.model, inputs, k1, k2, frozen_out, generator=generators
        )
        terms = self.config.phase2_terms
        return shift + bias if terms == "both" else (shift if terms == "shift" else bias)

    def fine_tune_model(self, frozen: GaussianEnsemble, fit: FitResult) -> None:
        """Phase 2 for every seed at once, each seed with its own validation set, best
        snapshot and early stopping; a seed that has stopped stays as it stopped while the
        others go on."""
        c = self.config
        if min(self.model_buffers.sizes()) == 0:  # the first training has no model data yet
            self.record("phase2_steps", 0)
            return
        fit = fit.with_seed_axis()
        holdout = fit.holdout_inputs  # [S, n_holdout, in]
        seeds, n_holdout = holdout.shape[:2]
        picks = torch.stack(
            [
                torch.randint(n_holdout, (c.phase2_val_size,), device=holdout.device, generator=g)
                for g in self.generators
            ]
        )
        val_inputs = holdout[torch.arange(seeds, device=holdout.device).unsqueeze(1), picks]
        # Fixed member draws for validation, so every snapshot is scored on the same terms.
        val_k1 = draw_elites(frozen, c.phase2_val_size, self.generators)
        val_k2 = draw_elites(self.model, c.phase2_val_size, self.generators)
        with torch.no_grad(), self.mixed():
            # M1 is fixed: predict once, not per step.
            val_frozen = frozen.member_mean_std(val_inputs, val_k1)

        def validate() -> list[float]:
            with torch.no_grad(), self.mixed():
                return self.objective(frozen, val_inputs, val_k1, val_k2, val_frozen).tolist()

        axes = self.model.seed_axes()
        best_j = validate()
        best_state = [module_seed_state(self.model, axes, s) for s in range(seeds)]
        since_best, steps = [0] * seeds, 0
        taken = [c.phase2_max_steps] * seeds
        active = list(range(seeds))
        stopped = FrozenSeeds(self.model, self.phase2_opt)
        while active and steps < c.phase2_max_steps:
            steps += 1
            batch = self.model_buffers.sample(c.phase2_batch_size)
            with self.mixed():  # the backward runs outside, as autocast wants
                j = self.objective(frozen, torch.cat([batch.obs, batch.act], dim=-1))
            self.phase2_opt.zero_grad(set_to_none=True)
            j.sum().backward()  # seeds share no parameter: each gets its own gradient
            self.phase2_opt.step()
            stopped.restore()
            val_j = validate()
            for s in list(active):
                gain = (best_j[s] - val_j[s]) / max(abs(best_j[s]), 1e-12)
                if gain > c.phase2_min_improvement:
                    best_j[s], since_best[s] = val_j[s], 0
                    best_state[s] = module_seed_state(self.model, axes, s)
                else:
                    since_best[s] += 1
                    if since_best[s] >= c.phase2_patience:
                        active.remove(s)
                        stopped.freeze(s)
                        taken[s] = steps
        for s in range(seeds):
            load_module_seed_state(self.model, axes, best_state[s], s)
        select_elites(self.model, fit.holdout_inputs, fit.holdout_targets)
        self.record("phase2_steps", taken)


ALGORITHM = Algorithm(
    "usbpo",
    USBPOAgent,
    USBPOConfig,
    "USB-PO: MBPO + phase-2 fine-tune on model shift + model bias (W2)",
)
