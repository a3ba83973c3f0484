"""The batched networks' construction (models/nets.py) against what they claim to be: the
initial weights each paper's code draws, and a stack of per-seed networks that is exactly those
networks. (Their forward and hand-written backward are tested in test_hand_gradients.py.)"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch import nn

from usbpo_cli.models.nets import BatchedLinear, BatchedMLP, linear, mlp, seed_mlp, stacked_mlp


@pytest.mark.parametrize("in_dim", [0, 1, 7])
def test_linear_draws_what_nn_linear_draws_from_the_global_generator(in_dim: int) -> None:
    # nn.Linear.reset_parameters is the independent computation: the same seed in a generator
    # must give the same weights and biases as in the global generator (fan-in 0 included,
    # where torch's bias bound is 0; it warns that the empty weight's init is a no-op).
    with pytest.warns(UserWarning) if in_dim == 0 else contextlib.nullcontext():
        torch.manual_seed(3)
        expected = nn.Linear(in_dim, 5)
        ours = linear(in_dim, 5, torch.Generator().manual_seed(3))
    assert torch.equal(ours.weight, expected.weight)
    assert torch.equal(ours.bias, expected.bias)
    if in_dim > 0:
        assert ours.bias.abs().max() > 0  # a real draw, not a bound of 0


def _spread(values: torch.Tensor, bound: float) -> None:
    """Draws of U(-bound, bound): inside the bounds, reaching near both ends, centred."""
    values = values.detach()
    assert values.abs().max() <= bound
    assert values.max() > 0.95 * bound and values.min() < -0.95 * bound
    assert abs(float(values.mean())) < 0.05 * bound


def test_batched_linear_uniform_init_is_nn_linears_default_for_every_member() -> None:
    in_dim = 9
    layer = BatchedLinear(4, in_dim, 300, generator=torch.Generator().manual_seed(0))
    bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    _spread(layer.weight, bound)
    _spread(layer.bias, bound)
    for member in range(4):  # every member drawn, not only the first
        _spread(layer.weight[member], bound)


def test_truncated_normal_init_is_mbpos_with_the_closed_form_std() -> None:
    # MBPO's TF ensemble: truncated_normal(stddev = 1 / (2 sqrt(in))), which cuts at two
    # standard deviations, i.e. at +-1/sqrt(in); biases start at zero.
    in_dim = 16
    layer = BatchedLinear(
        7, in_dim, 400, init="truncated_normal", generator=torch.Generator().manual_seed(1)
    )
    sigma = 1.0 / (2.0 * math.sqrt(in_dim))
    bound = 2.0 * sigma
    weights = layer.weight.detach().flatten()
    assert weights.abs().max() <= bound
    assert weights.max() > 0.99 * bound and weights.min() < -0.99 * bound
    # std of N(0, sigma^2) cut at +-k sigma: sigma sqrt(1 - 2 k phi(k) / (2 Phi(k) - 1))
    k = 2.0
    phi = math.exp(-k * k / 2.0) / math.sqrt(2.0 * math.pi)
    mass = math.erf(k / math.sqrt(2.0))
    expected_std = sigma * math.sqrt(1.0 - 2.0 * k * phi / mass)
    assert float(weights.std()) == pytest.approx(expected_std, rel=0.01)
    assert abs(float(weights.mean())) < 0.01 * sigma
    assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


@pytest.mark.parametrize("hidden_layers", [1, 3])
def test_stacked_mlp_is_each_network_on_its_own_members(hidden_layers: int) -> None:
    nets = [
        BatchedMLP(2, 5, 3, 8, hidden_layers, generator=torch.Generator().manual_seed(seed))
        for seed in range(3)
    ]
    stacked = stacked_mlp(nets)
    assert stacked.members == 6 and len(stacked.layers) == hidden_layers + 1
    x = torch.randn(6, 11, 5)
    out = stacked(x)
    for s, net in enumerate(nets):
        torch.testing.assert_close(out[2 * s : 2 * s + 2], net(x[2 * s : 2 * s + 2]))


def test_seed_mlp_without_generators_is_lone_mlps_drawn_in_turn_from_the_global_one() -> None:
    torch.manual_seed(5)
    lone = [mlp(4, 8, 2) for _ in range(3)]
    torch.manual_seed(5)
    seeds = seed_mlp(3, 4, 8, 2)
    x = torch.randn(3, 6, 4)
    out = seeds(x)
    for s, net in enumerate(lone):
        torch.testing.assert_close(out[s], net(x[s]))
