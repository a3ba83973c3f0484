"""Diagonal Gaussian maths (models/distributions.py) against closed forms worked by hand and
against torch.distributions, an independent implementation."""

from __future__ import annotations

import math

import pytest
import torch

from usbpo_cli.models.distributions import (
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    seed_normal,
)

LOG2 = math.log(2.0)


def kl_1d(mu_p: float, sd_p: float, mu_q: float, sd_q: float) -> float:
    """KL(N(mu_p, sd_p^2) || N(mu_q, sd_q^2)), by hand."""
    return math.log(sd_q / sd_p) + (sd_p**2 + (mu_p - mu_q) ** 2) / (2 * sd_q**2) - 0.5


def test_kl_matches_the_closed_form() -> None:
    t = torch.tensor
    # one dimension: KL(N(0, 1) || N(1, 4)) = log 2 + 2/8 - 1/2
    assert gaussian_kl(t([0.0]), t([0.0]), t([1.0]), t([LOG2])).item() == pytest.approx(
        LOG2 + 2 / 8 - 0.5
    )
    # diagonal, batched: the dimensions add up, the batch axis stays
    mean_p, sd_p = t([[0.0, 0.5], [3.0, 0.0]]), t([[1.0, 0.3], [0.5, 2.0]])
    mean_q, sd_q = t([[1.0, 0.0], [2.0, 0.0]]), t([[2.0, 1.0], [0.5, 1.0]])
    kl = gaussian_kl(mean_p, sd_p.log(), mean_q, sd_q.log())
    assert kl.tolist() == pytest.approx(
        [kl_1d(0, 1, 1, 2) + kl_1d(0.5, 0.3, 0, 1), kl_1d(3, 0.5, 2, 0.5) + kl_1d(0, 2, 0, 1)]
    )
    # not symmetric: the direction matters
    assert gaussian_kl(t([0.0]), t([LOG2]), t([1.0]), t([0.0])).item() == pytest.approx(
        kl_1d(0, 2, 1, 1)
    )
    mean, log_std = torch.randn(4, 5), torch.randn(4, 5)
    assert torch.equal(gaussian_kl(mean, log_std, mean, log_std), torch.zeros(4))


def test_kl_matches_torch_distributions() -> None:
    generator = torch.Generator().manual_seed(1)
    mean_p, mean_q = torch.randn(6, 3, generator=generator), torch.randn(6, 3, generator=generator)
    log_p, log_q = torch.randn(6, 3, generator=generator), torch.randn(6, 3, generator=generator)
    p, q = (
        torch.distributions.Normal(mean_p, log_p.exp()),
        torch.distributions.Normal(mean_q, log_q.exp()),
    )
    expected = torch.distributions.kl_divergence(p, q).sum(-1)
    assert torch.allclose(gaussian_kl(mean_p, log_p, mean_q, log_q), expected, atol=1e-5)


def test_log_prob_by_hand_and_against_torch_distributions() -> None:
    # one dimension by hand: log N(1; 0, 2^2) = -1/8 - log 2 - log(2 pi)/2
    value = gaussian_log_prob(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([LOG2]))
    assert value.item() == pytest.approx(-1 / 8 - LOG2 - 0.5 * math.log(2 * math.pi))
    generator = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(5, 3, generator=generator), torch.randn(3, generator=generator)
    actions = torch.randn(5, 3, generator=generator)
    normal = torch.distributions.Normal(mean, log_std.exp())
    expected = normal.log_prob(actions).sum(-1)
    assert torch.allclose(gaussian_log_prob(actions, mean, log_std.expand_as(mean)), expected)


def test_entropy_by_hand_and_against_torch_distributions() -> None:
    # one dimension: H(N(0, sd^2)) = 1/2 + log(2 pi)/2 + log sd
    assert gaussian_entropy(torch.tensor([LOG2])).item() == pytest.approx(
        0.5 + 0.5 * math.log(2 * math.pi) + LOG2
    )
    log_std = torch.tensor([0.3, -1.2, 0.0])
    expected = torch.distributions.Normal(torch.zeros(3), log_std.exp()).entropy().sum()
    assert gaussian_entropy(log_std).item() == pytest.approx(expected.item())


def _fresh(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seeds", [(5,), (5, 6), (5, 6, 7)])
def test_seed_normal_draws_each_seeds_part_from_its_own_stream(seeds: tuple[int, ...]) -> None:
    """Seed s's slice is exactly what torch.randn draws from a generator seeded as seed s's,
    as a lone run of that seed would draw it (one seed included), and the draw advances each
    seed's own generator only."""
    x = torch.zeros(len(seeds), 4, 3, dtype=torch.float64)
    generators = [_fresh(s) for s in seeds]
    noise = seed_normal(x, generators)
    assert noise.shape == x.shape and noise.dtype == torch.float64
    for s, seed in enumerate(seeds):
        alone = _fresh(seed)
        torch.testing.assert_close(
            noise[s], torch.randn(4, 3, generator=alone, dtype=torch.float64)
        )
        torch.testing.assert_close(  # both streams now stand at the same point
            torch.rand(2, generator=generators[s]), torch.rand(2, generator=alone)
        )


def test_seed_normal_without_generators_uses_torchs_global_stream() -> None:
    x = torch.zeros(2, 3)
    torch.manual_seed(11)
    noise = seed_normal(x, None)
    torch.manual_seed(11)
    torch.testing.assert_close(noise, torch.randn(2, 3))


def test_seed_normal_refuses_a_generator_count_that_is_not_the_seed_count() -> None:
    with pytest.raises(ValueError):
        seed_normal(torch.zeros(3, 4), [_fresh(0), _fresh(1)])
