"""The few private torch calls on hot paths, each behind a function with a public fallback.

Small updates on a CPU are dominated by per-op overhead, so a handful of places call torch's
private multi-tensor and fused kernels directly (`torch._foreach_*`, `torch._fused_adam_`,
`aten.threshold_backward`). Private APIs may vanish or change signature in any release: each
function here tries the private call once, and if it is missing or refuses its arguments
(AttributeError/TypeError/NotImplementedError), switches to the public equivalent for the rest of
the process (`tests/test_torch_private.py` forces every fallback and checks it computes the same
numbers). The fast paths are tested on torch 2.13 (see pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

PRIVATE_ERRORS = (AttributeError, TypeError, NotImplementedError)

# name -> whether its private call still works in this process (False after a failure)
_working: dict[str, bool] = {}


def _private(name: str, call: Callable[[], Any], fallback: Callable[[], Any]) -> Any:
    if _working.get(name, True):
        try:
            return call()
        except PRIVATE_ERRORS:
            _working[name] = False
    return fallback()


def lerp_(targets: Sequence[torch.Tensor], sources: Sequence[torch.Tensor], weight: float) -> None:
    """targets += weight * (sources - targets), in place (Polyak averaging of target nets)."""

    def public() -> None:
        for target, source in zip(targets, sources, strict=True):
            target.lerp_(source, weight)

    _private("foreach_lerp", lambda: torch._foreach_lerp_(targets, sources, weight), public)


def add_(tensors: Sequence[torch.Tensor], value: float) -> None:
    """tensors += value, in place."""

    def public() -> None:
        for tensor in tensors:
            tensor.add_(value)

    _private("foreach_add", lambda: torch._foreach_add_(tensors, value), public)


def norms(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The L2 norm of each tensor."""
    return _private(
        "foreach_norm",
        lambda: list(torch._foreach_norm(tensors)),
        lambda: [torch.linalg.vector_norm(t) for t in tensors],
    )


def relu_input_grad(grad: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The gradient through a ReLU whose output was `inputs`: grad where inputs > 0, else 0."""
    return _private(
        "threshold_backward",
        lambda: torch.ops.aten.threshold_backward(grad, inputs, 0),
        lambda: torch.where(inputs > 0, grad, torch.zeros((), dtype=grad.dtype)),
    )


def fused_adam_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    eps: float,
) -> bool:
    """One fused Adam step on these tensors (steps already incremented), as
    `torch.optim.Adam(fused=True).step()` runs it. Returns False, having changed nothing, when
    the private kernel is not usable: the caller then steps the optimiser the public way."""

    def call() -> bool:
        torch._fused_adam_(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            amsgrad=False,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=weight_decay,
            eps=eps,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )
        return True

    return _private("fused_adam", call, lambda: False)
