"""The W2 closed form and USB-PO's model-shift and model-bias estimators."""

import copy
import math

import torch

from usbpo_cli.models.ensemble import GaussianEnsemble
from usbpo_cli.models.wasserstein import model_bias, model_shift, shift_and_bias, w2_diag_gaussian


def _sqrtm(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def w2_general(mu1, cov1, mu2, cov2) -> float:
    """W2 between arbitrary Gaussians (Givens & Shortt), computed in float64."""
    root2 = _sqrtm(cov2)
    cross = _sqrtm(root2 @ cov1 @ root2)
    squared = ((mu1 - mu2) ** 2).sum() + torch.trace(cov1 + cov2 - 2 * cross)
    return float(squared.clamp_min(0).sqrt())


def test_closed_form_matches_general_gaussian_formula():
    gen = torch.Generator().manual_seed(0)
    for dim in (1, 3, 12):
        mu1, mu2 = torch.randn(dim, generator=gen), torch.randn(dim, generator=gen)
        std1, std2 = torch.rand(dim, generator=gen) + 0.1, torch.rand(dim, generator=gen) + 0.1
        expected = w2_general(
            mu1.double(),
            torch.diag(std1.double() ** 2),
            mu2.double(),
            torch.diag(std2.double() ** 2),
        )
        got = float(w2_diag_gaussian(mu1, std1, mu2, std2))
        assert math.isclose(got, expected, rel_tol=1e-5), (dim, got, expected)


def test_closed_form_matches_sampling_estimate():
    """For independent dimensions the optimal coupling is the per-dimension quantile coupling."""
    gen = torch.Generator().manual_seed(1)
    mu1, std1 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 0.5, 2.0])
    mu2, std2 = torch.tensor([0.5, -1.0, -2.0]), torch.tensor([2.0, 0.5, 0.3])
    n = 400_000
    x = mu1 + std1 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = mu2 + std2 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    estimate = ((x.sort(0).values - y.sort(0).values) ** 2).mean(0).sum().sqrt()
    closed = w2_diag_gaussian(mu1, std1, mu2, std2)
    assert math.isclose(float(closed), float(estimate), rel_tol=0.01)


def test_closed_form_is_per_sample_and_broadcasts():
    mean_p = torch.zeros(4, 2)
    mean_q = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    std = torch.ones(4, 2)
    got = w2_diag_gaussian(mean_p, std, mean_q, std)
    assert torch.allclose(got, torch.tensor([5.0, 0.0, 1.0, 0.0]), atol=1e-5)
    assert w2_diag_gaussian(mean_p.expand(3, 4, 2), std, mean_q, std).shape == (3, 4)


def _toy_ensemble(seed: int = 0, members: int = 7, elites: int = 5) -> GaussianEnsemble:
    torch.manual_seed(seed)
    return GaussianEnsemble(
        obs_dim=3,
        act_dim=2,
        ensemble_size=members,
        num_elites=elites,
        hidden_size=16,
        hidden_layers=2,
    )


def test_model_shift_is_zero_for_identical_ensembles_and_grows_with_perturbation():
    model_1 = _toy_ensemble()
    inputs = torch.randn(256, 5)
    k = model_1.elites[0][torch.randint(5, (256,))]
    shifts = []
    for scale in (0.0, 0.01, 0.1, 1.0):
        model_2 = copy.deepcopy(model_1)
        with torch.no_grad():
            for param in model_2.net.parameters():
                param.add_(scale * torch.randn_like(param))
            shift, _ = shift_and_bias(model_1, model_2, inputs, k, k)
        shifts.append(float(shift))
    assert shifts[0] < 1e-5
    assert shifts[0] < shifts[1] < shifts[2] < shifts[3]


def test_model_shift_picks_the_drawn_members():
    mean_1 = torch.tensor([[[0.0]], [[10.0]]])  # member 0 predicts 0, member 1 predicts 10
    mean_2 = torch.tensor([[[1.0]], [[4.0]]])
    std = torch.ones(2, 1, 1)
    for k1, k2, expected in ((0, 0, 1.0), (1, 0, 9.0), (0, 1, 4.0), (1, 1, 6.0)):
        got = model_shift(mean_1[k1], std[k1], mean_2, std, torch.tensor([k2]))
        assert math.isclose(float(got), expected, abs_tol=1e-5)


def test_model_bias_matches_hand_computation_on_three_members():
    # Three members, two samples, two output dims.
    mean = torch.tensor(
        [
            [[0.0, 0.0], [1.0, 1.0]],
            [[3.0, 4.0], [1.0, 1.0]],
            [[0.0, 1.0], [2.0, 1.0]],
        ]
    )
    std = torch.tensor(
        [
            [[1.0, 1.0], [1.0, 1.0]],
            [[1.0, 1.0], [1.0, 3.0]],
            [[1.0, 2.0], [1.0, 1.0]],
        ]
    )
    k2 = torch.tensor([0, 1])
    # Sample 0, k2 = 0: W2(m0, m1) = sqrt(9 + 16) = 5; W2(m0, m2) = sqrt(1 + 1) = sqrt 2.
    # Sample 1, k2 = 1: W2(m1, m0) = sqrt(0 + 4) = 2; W2(m1, m2) = sqrt(1 + 4) = sqrt 5.
    expected = torch.tensor([(5 + math.sqrt(2)) / 2, (2 + math.sqrt(5)) / 2])
    assert torch.allclose(model_bias(mean, std, k2), expected, atol=1e-5)


def test_gradients_reach_only_the_updated_model_and_stay_finite():
    model_1 = _toy_ensemble(0)
    model_2 = copy.deepcopy(model_1)  # identical: the sqrt guard must keep gradients finite
    model_1.requires_grad_(False)
    shift, bias = shift_and_bias(model_1, model_2, torch.randn(64, 5))
    (shift + bias).backward()
    grads = [p.grad for p in model_2.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in model_1.parameters())


def test_precomputed_frozen_predictions_give_the_same_estimates():
    model_1, model_2 = _toy_ensemble(0), _toy_ensemble(1)
    inputs = torch.randn(32, 5)
    k1, k2 = model_1.elites[0][torch.randint(5, (32,))], model_2.elites[0][torch.randint(5, (32,))]
    with torch.no_grad():
        cached = model_1.member_mean_std(inputs, k1)
    direct = shift_and_bias(model_1, model_2, inputs, k1, k2)
    reused = shift_and_bias(model_1, model_2, inputs, k1, k2, cached)
    assert torch.allclose(torch.stack(direct), torch.stack(reused))
