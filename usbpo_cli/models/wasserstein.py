"""Second-order Wasserstein distances between the ensembles' diagonal Gaussians (USB-PO, Eq. 11).

For diagonal covariances the general formula reduces to
    W2(p, q) = sqrt(||mu_p - mu_q||^2 + ||sigma_p - sigma_q||^2)
computed per sample (unlike the authors' TF code, which sums over the batch inside the root).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from usbpo_cli.models.ensemble import GaussianEnsemble

# Keeps sqrt differentiable where two distributions coincide; adds at most 1e-6 to a distance.
_EPS = 1e-12


def w2_diag_gaussian(
    mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor
) -> torch.Tensor:
    """W2 between diagonal Gaussians over the last axis; broadcasts over the leading ones."""
    squared = ((mean_p - mean_q) ** 2).sum(-1) + ((std_p - std_q) ** 2).sum(-1)
    return squared.clamp_min(_EPS).sqrt()


def draw_elites(
    model: GaussianEnsemble,
    n: int,
    generator: torch.Generator | Sequence[torch.Generator | None] | None = None,
) -> torch.Tensor:
    """One elite per sample, uniformly from the model's elite set: [n] for a lone seed's
    `generator`, [S, n] (each seed's own elites, from its own generator) for a list of them."""
    if not isinstance(generator, Sequence):
        pick = torch.randint(
            model.num_elites, (n,), device=model.elites.device, generator=generator
        )
        return model.elites[0][pick]
    picks = [
        model.elites[s][
            torch.randint(model.num_elites, (n,), device=model.elites.device, generator=g)
        ]
        for s, g in enumerate(generator)
    ]
    return torch.stack(picks)


def _pick(per_member: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """[..., members, N, d] indexed by one member per sample ([..., N]) -> [..., N, d]."""
    index = (
        members.unsqueeze(-2).unsqueeze(-1).expand(*members.shape[:-1], 1, -1, per_member.shape[-1])
    )
    return per_member.gather(-3, index).squeeze(-3)


def model_shift(
    mean_1: torch.Tensor,
    std_1: torch.Tensor,
    mean_2: torch.Tensor,
    std_2: torch.Tensor,
    k2: torch.Tensor,
) -> torch.Tensor:
    """Per-sample W2(p_M1^k1(s,a), p_M2^k2(s,a)), given M1's Gaussians already under each
    sample's k1 ([..., N, out], `GaussianEnsemble.member_mean_std`) and every M2 member's
    ([..., members, N, out]; the leading axis, if any, is the seed's)."""
    return w2_diag_gaussian(mean_1, std_1, _pick(mean_2, k2), _pick(std_2, k2))


def model_bias(mean_2: torch.Tensor, std_2: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """Per-sample 1/(B-1) * sum_{b != k2} W2(p_M2^k2(s,a), p_M2^b(s,a)).

    The b == k2 term of the full sum is W2 of a distribution with itself, i.e. zero up to the
    sqrt guard, so it is masked out rather than subtracted.
    """
    members = mean_2.shape[-3]
    chosen_mean = _pick(mean_2, k2).unsqueeze(-3)
    chosen_std = _pick(std_2, k2).unsqueeze(-3)
    distances = w2_diag_gaussian(chosen_mean, chosen_std, mean_2, std_2)  # [..., B, N]
    others = torch.arange(members, device=k2.device).unsqueeze(1) != k2.unsqueeze(-2)
    return (distances * others).sum(-2) / (members - 1)


def shift_and_bias(
    model_1: GaussianEnsemble,
    model_2: GaussianEnsemble,
    inputs: torch.Tensor,
    k1: torch.Tensor | None = None,
    k2: torch.Tensor | None = None,
    model_1_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    generator: torch.Generator | Sequence[torch.Generator | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch means of model shift (M1 -> M2) and model bias (within M2) on raw inputs: scalars
    for a lone seed's [N, in]; per seed ([S]) for [S, N, in] with one generator per seed.

    Gradients flow into `model_2` only. `model_1` is the frozen pre-update copy: it runs only
    each sample's k1 member, and its predictions on fixed inputs can be passed in once
    (`model_1_out`, from `member_mean_std(inputs, k1)`) instead of recomputed.
    """
    n = inputs.shape[-2]
    k1 = draw_elites(model_1, n, generator) if k1 is None else k1
    k2 = draw_elites(model_2, n, generator) if k2 is None else k2
    if model_1_out is None:
        with torch.no_grad():
            model_1_out = model_1.member_mean_std(inputs, k1)
    mean_1, std_1 = model_1_out
    mean_2, std_2 = model_2.mean_std(inputs)
    if inputs.dim() == 3:  # [S E, N, out] -> [S, E, N, out]
        mean_2 = mean_2.view(inputs.shape[0], model_2.ensemble_size, n, -1)
        std_2 = std_2.view(inputs.shape[0], model_2.ensemble_size, n, -1)
    shift = model_shift(mean_1, std_1, mean_2, std_2, k2).mean(-1)
    bias = model_bias(mean_2, std_2, k2).mean(-1)
    return shift, bias
