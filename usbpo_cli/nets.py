"""Batched MLPs: several independent networks evaluated as one, with an explicit member axis.

Both the dynamics ensemble (7 members) and SAC's twin critics (2 members) use this, so each
forward pass is a handful of `baddbmm` calls instead of a Python loop over member networks.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BatchedLinear(nn.Module):
    """`members` independent affine maps; input [members, N, in] -> output [members, N, out]."""

    def __init__(self, members: int, in_dim: int, out_dim: int, init: str = "uniform") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))
        if init == "truncated_normal":  # MBPO's ensemble initialisation
            nn.init.trunc_normal_(
                self.weight,
                std=1.0 / (2.0 * math.sqrt(in_dim)),
                a=-1.0 / math.sqrt(in_dim),
                b=1.0 / math.sqrt(in_dim),
            )
        else:  # torch.nn.Linear's default, per member
            bound = 1.0 / math.sqrt(in_dim)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        if members is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias[members], x, self.weight[members])


class BatchedMLP(nn.Module):
    """A stack of BatchedLinear layers with an activation between them."""

    def __init__(
        self,
        members: int,
        in_dim: int,
        out_dim: int,
        hidden_size: int,
        hidden_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        init: str = "uniform",
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_size] * hidden_layers + [out_dim]
        self.layers = nn.ModuleList(
            BatchedLinear(members, d_in, d_out, init) for d_in, d_out in zip(dims[:-1], dims[1:])
        )
        self.activation = activation()
        self.members = members

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x, members))
        return self.layers[-1](x, members)

    def forward_detached(self, x: torch.Tensor) -> torch.Tensor:
        """Forward with parameters cut from autograd: only `x` gets gradients (SAC's actor loss)."""
        for layer in self.layers[:-1]:
            x = self.activation(torch.baddbmm(layer.bias.detach(), x, layer.weight.detach()))
        last = self.layers[-1]
        return torch.baddbmm(last.bias.detach(), x, last.weight.detach())


def mlp(
    in_dim: int, hidden_size: int, out_dim: int, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """Two hidden layers of `hidden_size` and a linear head: the actors' and ALM's encoders'
    shape (`nn.Linear`'s default init; callers re-initialise where their paper says so)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_size),
        activation(),
        nn.Linear(hidden_size, hidden_size),
        activation(),
        nn.Linear(hidden_size, out_dim),
    )


def twin_q(net: BatchedMLP, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Both members of a twin critic on the same (obs, act) batch: [members, N]."""
    x = torch.cat([obs, act], dim=-1).unsqueeze(0).expand(net.members, -1, -1)
    return net(x).squeeze(-1)
