"""Second-order Wasserstein distances between the ensembles' diagonal Gaussians (USB-PO, Eq. 11).

For diagonal covariances the general formula reduces to
    W2(p, q) = sqrt(||mu_p - mu_q||^2 + ||sigma_p - sigma_q||^2)
computed per sample (unlike the authors' TF code, which sums over the batch inside the root).
"""

from __future__ import annotations

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
    model: GaussianEnsemble, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One elite index per sample, uniformly from the model's elite set."""
    pick = torch.randint(model.num_elites, (n,), device=model.elites.device, generator=generator)
    return model.elites[pick]


def _pick(per_member: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """[members, N, d] indexed by one member per sample -> [N, d]."""
    return per_member[members, torch.arange(per_member.shape[1], device=per_member.device)]


def model_shift(
    mean_1: torch.Tensor,
    std_1: torch.Tensor,
    mean_2: torch.Tensor,
    std_2: torch.Tensor,
    k2: torch.Tensor,
) -> torch.Tensor:
    """Per-sample W2(p_M1^k1(s,a), p_M2^k2(s,a)), given M1's Gaussians already under each
    sample's k1 ([N, out], `GaussianEnsemble.member_mean_std`) and every M2 member's."""
    return w2_diag_gaussian(mean_1, std_1, _pick(mean_2, k2), _pick(std_2, k2))


def model_bias(mean_2: torch.Tensor, std_2: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """Per-sample 1/(B-1) * sum_{b != k2} W2(p_M2^k2(s,a), p_M2^b(s,a)).

    The b == k2 term of the full sum is W2 of a distribution with itself, i.e. zero up to the
    sqrt guard, so it is masked out rather than subtracted.
    """
    members = mean_2.shape[0]
    distances = w2_diag_gaussian(_pick(mean_2, k2), _pick(std_2, k2), mean_2, std_2)  # [B, N]
    others = torch.arange(members, device=k2.device).unsqueeze(1) != k2.unsqueeze(0)
    return (distances * others).sum(0) / (members - 1)


def shift_and_bias(
    model_1: GaussianEnsemble,
    model_2: GaussianEnsemble,
    inputs: torch.Tensor,
    k1: torch.Tensor | None = None,
    k2: torch.Tensor | None = None,
    model_1_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch means of model shift (M1 -> M2) and model bias (within M2) on raw inputs [N, in].

    Gradients flow into `model_2` only. `model_1` is the frozen pre-update copy: it runs only
    each sample's k1 member, and its predictions on fixed inputs can be passed in once
    (`model_1_out`, from `member_mean_std(inputs, k1)`) instead of recomputed.
    """
    n = inputs.shape[0]
    k1 = draw_elites(model_1, n, generator) if k1 is None else k1
    k2 = draw_elites(model_2, n, generator) if k2 is None else k2
    if model_1_out is None:
        with torch.no_grad():
            model_1_out = model_1.member_mean_std(inputs, k1)
    mean_1, std_1 = model_1_out
    mean_2, std_2 = model_2.mean_std(inputs)
    shift = model_shift(mean_1, std_1, mean_2, std_2, k2).mean()
    bias = model_bias(mean_2, std_2, k2).mean()
    return shift, bias
