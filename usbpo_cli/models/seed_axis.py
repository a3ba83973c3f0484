"""One seed's slice of networks and optimisers that hold S seeds, and loading it back.

A run's checkpoint holds its own seed only, in exactly the layout a lone (S = 1) run has, so a
seed trained beside others can resume alone and the other way round. A per-seed tensor has its
seed axis first, in one of two forms:
- shared with a member axis of k members per seed (twin critics k = 2, the dynamics ensemble
  k = E, the ensemble's log-variance bounds k = 1): seed s owns rows [s k, (s + 1) k);
- an axis of its own, which a lone run's tensor does not have (actors' `SeedLinear` layers,
  SAC's temperature, the ensemble's normaliser and elites): seed s owns index s.
Tensors without a seed axis (action bounds) are the same for every seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from usbpo_cli.models.nets import BatchedLinear, SeedLinear


@dataclass(frozen=True)
class SeedAxis:
    """How one tensor holds its seeds (see the module docstring)."""

    seeds: int
    own: bool  # True: an axis of its own (dropped in a seed's slice); False: shared with members

    def take(self, tensor: torch.Tensor, seed: int) -> torch.Tensor:
        """Seed `seed`'s part of `tensor`, as a view (writing into it writes the seed)."""
        if self.own:
            return tensor[seed]
        members = tensor.shape[0] // self.seeds
        return tensor[seed * members : (seed + 1) * members]


def module_axes(
    module: nn.Module, seeds: int, extra: dict[str, SeedAxis] | None = None
) -> dict[str, SeedAxis]:
    """The seed axis of each per-seed entry of `module.state_dict()`: parameters of `SeedLinear`
    layers have their own axis, those of `BatchedLinear` layers share it with their members;
    `extra` names the module's other per-seed entries. Entries not listed are shared."""
    axes: dict[str, SeedAxis] = {}
    for prefix, sub in module.named_modules():
        if isinstance(sub, (SeedLinear, BatchedLinear)):
            own = isinstance(sub, SeedLinear)
            for name, _ in sub.named_parameters(recurse=False):
                axes[f"{prefix}.{name}" if prefix else name] = SeedAxis(seeds, own)
    axes.update(extra or {})
    return axes


def parameter_axes(module: nn.Module, axes: dict[str, SeedAxis]) -> list[SeedAxis | None]:
    """The seed axis of each of `module`'s parameters, in `module.parameters()` order (the
    order of an optimiser built on them, for `adam_seed_state`)."""
    return [axes.get(name) for name, _ in module.named_parameters()]


def module_seed_state(
    module: nn.Module, axes: dict[str, SeedAxis], seed: int
) -> dict[str, torch.Tensor]:
    """Seed `seed`'s state dict, in a lone run's layout (copies, not views)."""
    state = module.state_dict()
    return {
        name: (axes[name].take(value, seed) if name in axes else value).clone()
        for name, value in state.items()
    }


@torch.no_grad()
def load_module_seed_state(
    module: nn.Module, axes: dict[str, SeedAxis], state: dict[str, torch.Tensor], seed: int
) -> None:
    """Write a lone run's state dict into seed `seed` of `module` (shared entries too: they
    are the same for every seed)."""
    own = module.state_dict(keep_vars=True)
    if set(own) != set(state):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise KeyError(f"state dict mismatch: missing {missing}, unexpected {extra}")
    for name, target in own.items():
        view = axes[name].take(target, seed) if name in axes else target
        view.copy_(state[name].to(view.device))


def adam_seed_state(
    optimizer: torch.optim.Adam, axes: Sequence[SeedAxis | None], seed: int
) -> dict:
    """Seed `seed`'s part of an Adam optimiser over seeded parameters (`axes` in the order of
    its parameters), as the state dict of a lone run's Adam. The step counts are shared: every
    seed of a group takes every step."""
    full = optimizer.state_dict()
    state = {}
    for index, entry in full["state"].items():
        axis = axes[index]
        state[index] = {
            key: (value if key == "step" or axis is None else axis.take(value, seed)).clone()
            for key, value in entry.items()
        }
    return {"state": state, "param_groups": full["param_groups"]}


@torch.no_grad()
def load_adam_seed_state(
    optimizer: torch.optim.Adam, axes: Sequence[SeedAxis | None], saved: dict, seed: int
) -> None:
    """Write a lone run's Adam state into seed `seed` of `optimizer` (its moments and step;
    the learning rate and other settings from `saved`)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        raise ValueError("optimizer state has a different number of parameter groups")
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"]):
        group.update({k: v for k, v in saved_group.items() if k != "params"})
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    for index, entry in saved["state"].items():
        param, axis = params[int(index)], axes[int(index)]
        state = optimizer.state[param]
        if not state:  # no step taken yet in this process: make the state a step would make
            group = groups[id(param)]
            # As torch's own load_state_dict: a fused or capturable Adam counts its steps on
            # the parameter's device, the others on the CPU.
            on_param = group.get("fused") or group.get("capturable")
            state.update(
                {
                    key: torch.zeros_like(param)
                    if key != "step"
                    else value.to(param.device if on_param else value.device).clone()
                    for key, value in entry.items()
                }
            )
        for key, value in entry.items():
            target = state[key]
            view = target if key == "step" or axis is None else axis.take(target, seed)
            view.copy_(value.to(view.device))
