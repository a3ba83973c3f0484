"""Batched MLPs: several independent networks evaluated as one, with an explicit member axis.

Both the dynamics ensemble (7 members) and SAC's twin critics (2 members) use this, so each
forward pass is a handful of `baddbmm` calls instead of a Python loop over member networks.

Several seeds of one run train as one set of networks the same way (the seed axis): seed s owns
members [s k, (s + 1) k) of a `BatchedMLP` of S k members (k = 2 twin critics, k = E ensemble
members), or index s of each `SeedLinear` layer of a `seed_mlp` (one actor per seed). Every
seed's weights are initialised from its own generator with the draws a lone run makes, so one
seed is the S = 1 case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from usbpo_cli.util import torch_private

Layer = tuple[torch.Tensor, torch.Tensor]  # weight [members, in, out] and bias [members, 1, out]


class BatchedLinear(nn.Module):
    """`members` independent affine maps; input [members, N, in] -> output [members, N, out]."""

    def __init__(
        self,
        members: int,
        in_dim: int,
        out_dim: int,
        init: str = "uniform",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))
        if init == "truncated_normal":  # MBPO's ensemble initialisation
            nn.init.trunc_normal_(
                self.weight,
                std=1.0 / (2.0 * math.sqrt(in_dim)),
                a=-1.0 / math.sqrt(in_dim),
                b=1.0 / math.sqrt(in_dim),
                generator=generator,
            )
        elif init == "uniform":  # torch.nn.Linear's default, per member (else: "none", left
            # for the caller to fill, as `stacked_mlp` does)
            bound = 1.0 / math.sqrt(in_dim)
            nn.init.uniform_(self.weight, -bound, bound, generator=generator)
            nn.init.uniform_(self.bias, -bound, bound, generator=generator)

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
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_size] * hidden_layers + [out_dim]
        self.layers = nn.ModuleList(
            BatchedLinear(members, d_in, d_out, init, generator)
            for d_in, d_out in zip(dims[:-1], dims[1:])
        )
        self.activation = activation()
        self.members = members

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x, members))
        return self.layers[-1](x, members)


def stacked_mlp(nets: Sequence[BatchedMLP]) -> BatchedMLP:
    """One BatchedMLP holding the members of `nets` in order (seed s's k members at [s k,
    (s + 1) k)): each seed's network is built with its own generator, then stacked."""
    first = nets[0]
    layers = first.layers
    dims = [layers[0].weight.shape[1]] + [layer.weight.shape[2] for layer in layers]
    stacked = BatchedMLP(
        sum(net.members for net in nets),
        dims[0],
        dims[-1],
        dims[1],
        len(layers) - 1,
        type(first.activation),
        init="none",
    )
    with torch.no_grad():
        for i, layer in enumerate(stacked.layers):
            layer.weight.copy_(torch.cat([net.layers[i].weight for net in nets]))
            layer.bias.copy_(torch.cat([net.layers[i].bias for net in nets]))
    return stacked


class SeedLinear(nn.Module):
    """One `nn.Linear` per seed, kept in `nn.Linear`'s layout with a leading seed axis (weight
    [S, out, in], bias [S, out]), so seed s's slice is exactly a lone run's layer."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[S, N, in] -> [S, N, out]; a lone seed's [N, in] -> [N, out] as `nn.Linear` does."""
        if x.dim() == 2:
            if self.weight.shape[0] != 1:
                raise ValueError("inputs for several seeds need a leading seed axis")
            return F.linear(x, self.weight[0], self.bias[0])
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.mT)


def seed_mlp(
    seeds: int,
    in_dim: int,
    hidden_size: int,
    out_dim: int,
    activation: type[nn.Module] = nn.ReLU,
    generators: Sequence[torch.Generator | None] | None = None,
) -> nn.Sequential:
    """`mlp` for S seeds at once: each seed's layers drawn from its own generator exactly as
    `mlp` draws them, then stacked (the module names, hence state-dict keys, are `mlp`'s)."""
    generators = list(generators) if generators is not None else [None] * seeds
    per_seed = [mlp(in_dim, hidden_size, out_dim, activation, g) for g in generators]
    return nn.Sequential(
        *(
            SeedLinear([net[i] for net in per_seed]) if isinstance(module, nn.Linear) else module
            for i, module in enumerate(per_seed[0])
        )
    )


def linear(in_dim: int, out_dim: int, generator: torch.Generator | None = None) -> nn.Linear:
    """`nn.Linear` with its default initialisation drawn from `generator` (the same draws,
    in the same order, as `nn.Linear.reset_parameters` takes from the global generator)."""
    layer = nn.Linear(in_dim, out_dim)
    if generator is not None:
        with torch.no_grad():
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1.0 / math.sqrt(in_dim) if in_dim > 0 else 0.0
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def mlp(
    in_dim: int,
    hidden_size: int,
    out_dim: int,
    activation: type[nn.Module] = nn.ReLU,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """Two hidden layers of `hidden_size` and a linear head: the actors' and ALM's encoders'
    shape (`nn.Linear`'s default init; callers re-initialise where their paper says so)."""
    return nn.Sequential(
        linear(in_dim, hidden_size, generator),
        activation(),
        linear(hidden_size, hidden_size, generator),
        activation(),
        linear(hidden_size, out_dim, generator),
    )


def twin_q(net: BatchedMLP, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Every member of a twin critic on the same (obs, act) batch: [members, N]; with a seed
    axis ([S, N, ...] inputs, S seeds' critics in `net`), [S, members per seed, N]."""
    if obs.dim() == 2:
        return net(twin_input(obs, act, net.members)).squeeze(-1)
    seeds = obs.shape[0]
    members = net.members // seeds
    return net(twin_input(obs, act, members)).view(seeds, members, -1)


def twin_input(obs: torch.Tensor, act: torch.Tensor, members: int = 2) -> torch.Tensor:
    """[obs, act] shared by every member of a critic: [members, N, obs + act], no copies.
    With a seed axis ([S, N, ...] inputs), seed s's rows go to its `members` consecutive
    critics: [S members, N, obs + act]."""
    x = torch.cat([obs, act], dim=-1)
    if x.dim() == 2:
        return x.unsqueeze(0).expand(members, -1, -1)
    return rows_per_member(x, members)


def rows_per_member(x: torch.Tensor, members: int) -> torch.Tensor:
    """Each seed's rows [S, N, width] for every one of its `members` consecutive members:
    [S members, N, width] (seed s's at [s members, (s + 1) members))."""
    seeds, n, width = x.shape
    return x.unsqueeze(1).expand(seeds, members, n, width).reshape(seeds * members, n, width)


def relu_forward(
    layers: Sequence[Layer], x: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """ReLU MLP on [members, N, in], also returning each layer's input for `relu_backward`.

    Where gradients are written by hand (SAC's update) there is no autograd graph to keep the
    activations, so the forward hands them over; `layers` may be views of `nn.Linear` weights.
    """
    inputs = []
    for weight, bias in layers[:-1]:
        inputs.append(x)
        x = torch.baddbmm(bias, x, weight).relu_()
    inputs.append(x)
    weight, bias = layers[-1]
    return inputs, torch.baddbmm(bias, x, weight)


def relu_backward(
    layers: Sequence[Layer],
    inputs: Sequence[torch.Tensor],
    grad_out: torch.Tensor,
    *,
    param_grads: bool = True,
    input_columns: slice | None = None,
) -> tuple[list[Layer], torch.Tensor | None]:
    """Backward of `relu_forward` from the gradient of its output: each layer's (weight, bias)
    gradient (in the weight's own memory layout, so a transposed `nn.Linear` view gets a
    contiguous `[out, in]` gradient) and, with `input_columns`, the gradient of those input
    columns. Skipping what is not needed (parameter gradients when only the input's is wanted,
    the input gradient of the first layer) is where this beats autograd, besides its overhead.
    """
    grads: list[Layer] = []
    grad = grad_out
    for i in range(len(layers) - 1, -1, -1):
        weight, _ = layers[i]
        if param_grads:
            if weight.stride(-1) == 1:
                weight_grad = torch.bmm(inputs[i].mT, grad)
            else:  # a transposed view: compute the transposed product, contiguous
                weight_grad = torch.bmm(grad.mT, inputs[i]).mT
            grads.append((weight_grad, grad.sum(1, keepdim=True)))
        if i > 0:
            grad = torch_private.relu_input_grad(torch.bmm(grad, weight.mT), inputs[i])
    grads.reverse()
    if input_columns is None:
        return grads, None
    return grads, torch.bmm(grad, layers[0][0][:, input_columns].mT)
