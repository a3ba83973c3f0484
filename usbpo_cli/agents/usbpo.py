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
from usbpo_cli.models.ensemble import FitResult, GaussianEnsemble, select_elites
from usbpo_cli.models.optim import make_adam
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
        return {**super().state_dict(seed), "phase2_opt": self.phase2_opt.state_dict()}

    def load_state_dict(self, state: dict, seed: int = 0) -> None:
        super().load_state_dict(state, seed)
        self.phase2_opt.load_state_dict(state["phase2_opt"])

    def objective(
        self,
        frozen: GaussianEnsemble,
        inputs: torch.Tensor,
        k1: torch.Tensor | None = None,
        k2: torch.Tensor | None = None,
        frozen_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """J on raw (s, a) inputs; `phase2_terms` selects terms for the ablation study."""
        shift, bias = shift_and_bias(
            frozen, self.model, inputs, k1, k2, frozen_out, generator=self.generator
        )
        terms = self.config.phase2_terms
        return shift + bias if terms == "both" else (shift if terms == "shift" else bias)

    def fine_tune_model(self, frozen: GaussianEnsemble, fit: FitResult) -> None:
        c = self.config
        if len(self.model_buffer) == 0:  # the first training has no model data yet
            self.record("phase2_steps", 0)
            return
        holdout = fit.holdout_inputs
        pick = torch.randint(
            holdout.shape[0], (c.phase2_val_size,), device=holdout.device, generator=self.generator
        )
        val_inputs = holdout[pick]
        # Fixed member draws for validation, so every snapshot is scored on the same terms.
        val_k1 = draw_elites(frozen, len(pick), self.generator)
        val_k2 = draw_elites(self.model, len(pick), self.generator)
        with torch.no_grad():
            # M1 is fixed: predict once, not per step.
            val_frozen = frozen.member_mean_std(val_inputs, val_k1)

        def validate() -> float:
            with torch.no_grad():
                return self.objective(frozen, val_inputs, val_k1, val_k2, val_frozen).item()

        best_j = validate()
        best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        since_best, steps = 0, 0
        while steps < c.phase2_max_steps:
            steps += 1
            batch = self.model_buffer.sample(c.phase2_batch_size)
            j = self.objective(frozen, torch.cat([batch.obs, batch.act], dim=-1))
            self.phase2_opt.zero_grad(set_to_none=True)
            j.backward()
            self.phase2_opt.step()
            val_j = validate()
            if (best_j - val_j) / max(abs(best_j), 1e-12) > c.phase2_min_improvement:
                best_j, since_best = val_j, 0
                best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            else:
                since_best += 1
                if since_best >= c.phase2_patience:
                    break
        self.model.load_state_dict(best_state)
        select_elites(self.model, fit.holdout_inputs, fit.holdout_targets)
        self.record("phase2_steps", steps)


ALGORITHM = Algorithm(
    "usbpo",
    USBPOAgent,
    USBPOConfig,
    "USB-PO: MBPO + phase-2 fine-tune on model shift + model bias (W2)",
)
