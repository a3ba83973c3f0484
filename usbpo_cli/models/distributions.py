"""Diagonal Gaussian maths in one place: log-density, entropy and KL divergence, all summed over
the last axis. PPO's policy, PDML's policy distance and ALM's latent bound use these; SAC's
tanh-squashed log-probability (with its hand-written gradient) stays in `agents/sac.py`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(log_std))^2), summed over the last axis."""
    z = (x - mean) / log_std.exp()
    return (-0.5 * z.square() - log_std - 0.5 * LOG_2PI).sum(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian: sum of 1/2 + log(2 pi)/2 + log_std over the last axis."""
    return (0.5 + 0.5 * LOG_2PI + log_std).sum(-1)


def gaussian_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last axis."""
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    terms = log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5
    return terms.sum(-1)


def normal_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise of `x`'s shape, dtype and device, drawn from `generator` (the
    owning agent's stream; `torch.randn_like` cannot take one)."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def seed_normal(
    x: torch.Tensor, generators: Sequence[torch.Generator | None] | None = None
) -> torch.Tensor:
    """Standard normal noise of `x`'s shape [S, ...], seed s's part drawn from `generators[s]`:
    each seed's stream is the one a lone run of that seed draws."""
    if generators is None or len(generators) == 1:
        return normal_like(x, None if generators is None else generators[0])
    return torch.stack([normal_like(part, g) for part, g in zip(x, generators, strict=True)])
