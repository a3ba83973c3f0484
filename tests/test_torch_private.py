"""Every private-torch fast path (util/torch_private.py) against its public fallback: each
private call is made to fail as a removed or changed API would, and the fallback must give the
same numbers as the fast path did."""

from __future__ import annotations

import sys

import pytest
import torch

from usbpo_cli.models.optim import adam_step, make_adam
from usbpo_cli.util import torch_private


def tensors(seed: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) for shape in shapes]


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch):
    """Make named private torch calls fail as a changed signature would (TypeError)."""

    def breaker(*names: str) -> None:
        def fail(*args, **kwargs):
            raise TypeError("unexpected keyword argument (simulated API change)")

        for name in names:
            if name.startswith("aten."):
                monkeypatch.setattr(torch.ops.aten, name.removeprefix("aten."), fail)
            else:
                monkeypatch.setattr(torch, name, fail)
        monkeypatch.setattr(torch_private, "_working", {})

    monkeypatch.setattr(torch_private, "_working", {})
    return breaker


def test_lerp_fallback_matches_and_is_polyak(broken) -> None:
    targets, sources = tensors(0, (3, 4), (5,)), tensors(1, (3, 4), (5,))
    expected = [t + 0.1 * (s - t) for t, s in zip(targets, sources)]  # the definition
    fast = [t.clone() for t in targets]
    torch_private.lerp_(fast, sources, 0.1)
    broken("_foreach_lerp_")
    slow = [t.clone() for t in targets]
    torch_private.lerp_(slow, sources, 0.1)
    assert torch_private._working == {"foreach_lerp": False}
    for a, b, c in zip(fast, slow, expected):
        assert torch.allclose(a, c) and torch.allclose(b, c)


def test_lerp_refuses_lists_of_different_lengths_on_both_paths(broken) -> None:
    # A target network missing a parameter must not be averaged silently in part.
    targets, sources = tensors(0, (3,), (2,)), tensors(1, (3,))
    with pytest.raises(RuntimeError):
        torch_private.lerp_(targets, sources, 0.1)
    broken("_foreach_lerp_")
    with pytest.raises(ValueError):
        torch_private.lerp_(targets, sources, 0.1)
    assert torch_private._working == {"foreach_lerp": False}


def test_add_and_norms_fallbacks(broken) -> None:
    values = tensors(2, (4,), (2, 3))
    fast_norms = torch_private.norms(values)
    fast = [v.clone() for v in values]
    torch_private.add_(fast, 2.0)
    broken("_foreach_norm", "_foreach_add_")
    slow_norms = torch_private.norms(values)
    slow = [v.clone() for v in values]
    torch_private.add_(slow, 2.0)
    for v, a, b in zip(values, fast_norms, slow_norms):
        by_hand = v.square().sum().sqrt()
        assert torch.allclose(a, by_hand) and torch.allclose(b, by_hand)
    for v, a, b in zip(values, fast, slow):
        assert torch.equal(a, v + 2.0) and torch.equal(b, v + 2.0)


def test_relu_input_grad_fallback(broken) -> None:
    grad, inputs = tensors(3, (6, 5), (6, 5))
    inputs[0, 0] = 0.0  # the boundary: ReLU's gradient there is 0
    expected = grad * (inputs > 0)
    fast = torch_private.relu_input_grad(grad, inputs)
    broken("aten.threshold_backward")
    slow = torch_private.relu_input_grad(grad, inputs)
    assert torch.equal(fast, expected) and torch.equal(slow, expected)


def adam_run(steps: int, use_adam_step: bool) -> tuple[torch.nn.Linear, torch.optim.Adam]:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    optimizer = make_adam(net.parameters(), 1e-2)
    generator = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=generator)
        optimizer.zero_grad()
        net(x).square().mean().backward()
        adam_step(optimizer) if use_adam_step else optimizer.step()
    return net, optimizer


def test_adam_step_fast_and_fallback_equal_torch_optim(monkeypatch: pytest.MonkeyPatch) -> None:
    reference, reference_opt = adam_run(4, use_adam_step=False)
    monkeypatch.setattr(torch_private, "_working", {})
    fast, _ = adam_run(4, use_adam_step=True)
    assert torch_private._working == {}  # the fast path ran without failing
    # torch.optim's own fused step calls the same kernel, so the kernel fails only when
    # torch_private calls it (as a changed signature would) and works for torch.optim
    original = torch._fused_adam_

    def fails_for_torch_private(*args, **kwargs):
        if sys._getframe(1).f_globals["__name__"] == torch_private.__name__:
            raise TypeError("unexpected keyword argument (simulated API change)")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", fails_for_torch_private)
    slow, slow_opt = adam_run(4, use_adam_step=True)
    assert torch_private._working.get("fused_adam") is False  # the fallback really ran
    for a, b, c in zip(reference.parameters(), fast.parameters(), slow.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)
    # the step counts were not advanced twice by the failed attempt
    counts = [state["step"].item() for state in slow_opt.state.values()]
    assert counts == [state["step"].item() for state in reference_opt.state.values()] == [4, 4]
