"""One seed's slice of S seeds' state (models/seed_axis.py), on small modules built here: what a
lone run's checkpoint restores into a group, and what a mismatched one is refused with."""

from __future__ import annotations

import pytest
import torch

from usbpo_cli.models.nets import BatchedMLP
from usbpo_cli.models.optim import make_adam
from usbpo_cli.models.seed_axis import (
    adam_seed_state,
    load_adam_seed_state,
    load_module_seed_state,
    module_axes,
    module_seed_state,
    parameter_axes,
)

SEEDS, MEMBERS = 3, 2


def group() -> tuple[BatchedMLP, torch.optim.Adam]:
    """Three seeds' twin networks as one, after one Adam step."""
    net = BatchedMLP(SEEDS * MEMBERS, 4, 1, 8, 1, generator=torch.Generator().manual_seed(0))
    optimiser = make_adam(net.parameters(), lr=1e-3)
    net(torch.randn(SEEDS * MEMBERS, 5, 4)).square().sum().backward()
    optimiser.step()
    return net, optimiser


def test_a_lone_runs_adam_settings_are_restored_with_its_moments() -> None:
    net, optimiser = group()
    axes = parameter_axes(net, module_axes(net, SEEDS))
    saved = adam_seed_state(optimiser, axes, seed=1)
    saved["param_groups"][0]["lr"] = 3e-4  # a lone run whose learning rate differs
    saved["param_groups"][0]["betas"] = (0.5, 0.9)
    other, other_opt = group()
    load_adam_seed_state(other_opt, axes, saved, seed=1)
    assert other_opt.param_groups[0]["lr"] == 3e-4
    assert other_opt.param_groups[0]["betas"] == (0.5, 0.9)
    moments = adam_seed_state(other_opt, axes, seed=1)["state"]
    for index, entry in saved["state"].items():
        for key, value in entry.items():
            assert torch.equal(moments[index][key], value)


def test_a_state_dict_with_other_keys_is_refused_naming_them() -> None:
    net, _ = group()
    axes = module_axes(net, SEEDS)
    state = module_seed_state(net, axes, seed=0)
    state["layers.9.weight"] = state.pop("layers.1.bias")
    with pytest.raises(KeyError) as refused:
        load_module_seed_state(net, axes, state, seed=0)
    message = str(refused.value)
    assert "missing ['layers.1.bias']" in message
    assert "unexpected ['layers.9.weight']" in message
