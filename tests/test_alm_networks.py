"""ALM's networks as built and as updated, from their definitions: orthogonal weights and zero
biases at the start (the authors' `orthogonal_init`), targets that start as copies of their
online networks and take no gradient, latent Gaussians soft-bounded to |mean| < 30 and
0.1 < std < 10, every optimiser step clipped to the gradient norm `alm_max_grad_norm`, and a
full update that trains the reward model and classifier too. Also: ALM trains one seed per
process, and its config runs every agent's checks."""

from __future__ import annotations

import math

import pytest
import torch
from test_alm import agent  # noqa: F401  (the fixture: an ALM agent with 200 transitions)

from baselines.alm import (
    ALMAgent,
    ALMConfig,
    BatchedLinear,
    GaussianMLP,
    LatentActor,
    LayerNormMLP,
    TwinCritic,
)
from usbpo_cli.errors import UsageError


def weight_matrices(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every linear layer's weight, batched layers one matrix per member."""
    found = []
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear):
            found.append(layer.weight.detach())
        elif isinstance(layer, BatchedLinear):
            found.extend(layer.weight.detach())
    return found


def biases(module: torch.nn.Module) -> list[torch.Tensor]:
    return [
        layer.bias.detach()
        for layer in module.modules()
        if isinstance(layer, (torch.nn.Linear, BatchedLinear))
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda g: GaussianMLP(7, 32, 5, g),
        lambda g: LayerNormMLP(9, 32, g),
        lambda g: TwinCritic(6, 32, generator=g),
        lambda g: LatentActor(5, 32, 2, g),
    ],
    ids=["gaussian", "layernorm-mlp", "twin-critic", "actor"],
)
def test_networks_start_orthogonal_with_zero_biases(make) -> None:  # noqa: ANN001
    """W W^T = I (wide) or W^T W = I (tall) for every weight matrix; default PyTorch init
    (uniform in +-1/sqrt(fan_in)) is nowhere near that."""
    module = make(torch.Generator().manual_seed(0))
    matrices = weight_matrices(module)
    assert matrices
    for weight in matrices:
        rows, cols = weight.shape
        gram = weight @ weight.T if rows <= cols else weight.T @ weight
        torch.testing.assert_close(gram, torch.eye(min(rows, cols)), atol=1e-5, rtol=0)
    for bias in biases(module):
        assert torch.count_nonzero(bias) == 0


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def test_latent_gaussians_are_soft_bounded() -> None:
    """mean = 30 tanh(raw / 30); std = 0.1 + softplus(10 - softplus(10 - raw) - 0.1): by hand
    (math, not torch) for raw outputs far above, far below and inside the bounds."""
    net = GaussianMLP(2, 8, 3)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    raw = [1e4, -1e4, 0.5]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(raw + raw))  # [raw mean, raw std]
    mean, std = net(torch.zeros(1, 2))
    expected_mean = [30.0 * math.tanh(r / 30.0) for r in raw]
    expected_std = [0.1 + softplus(10.0 - softplus(10.0 - r) - 0.1) for r in raw]
    assert mean[0].tolist() == pytest.approx(expected_mean, rel=1e-5)
    assert std[0].tolist() == pytest.approx(expected_std, rel=1e-5)
    assert expected_mean[:2] == pytest.approx([30.0, -30.0])
    assert expected_std[:2] == pytest.approx([10.0, 0.1], abs=1e-3)


def test_targets_start_as_copies_and_take_no_gradient(agent: ALMAgent) -> None:  # noqa: F811
    alm = agent.policy
    for online, target in ((alm.encoder, alm.encoder_target), (alm.critic, alm.critic_target)):
        for a, b in zip(online.parameters(), target.parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
            assert not b.requires_grad


def test_every_optimiser_step_is_clipped_to_the_gradient_norm(agent: ALMAgent) -> None:  # noqa: F811
    """Rewards of 1e6 give every loss a gradient far above the clip (100): after a full update
    each optimiser's gradients, as its step saw them, have total norm at most 100 (and the
    unclipped norms were above it)."""
    alm = agent.policy
    batch = agent.policy_batch()
    batch = batch._replace(transitions=batch.transitions._replace(rew=batch.transitions.rew * 1e6))
    seen = []
    for optimiser in (alm.world_opt, alm.reward_opt, alm.critic_opt, alm.actor_opt):
        step = optimiser.step

        def recording_step(*args, _step=step, _opt=optimiser, **kwargs):  # noqa: ANN002, ANN003, ANN202
            grads = [p.grad for group in _opt.param_groups for p in group["params"]]
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None])
            )
            seen.append(float(norm))
            return _step(*args, **kwargs)

        optimiser.step = recording_step
    alm.update(batch)
    assert len(seen) == 4
    assert max(seen) <= agent.config.alm_max_grad_norm * (1 + 1e-4)
    assert max(seen) >= agent.config.alm_max_grad_norm * 0.99  # the clip was active


def test_a_full_update_trains_the_reward_model_and_classifier(agent: ALMAgent) -> None:  # noqa: F811
    alm = agent.policy
    before = [p.detach().clone() for p in (*alm.reward.parameters(), *alm.classifier.parameters())]
    alm.update(agent.policy_batch())
    after = [*alm.reward.parameters(), *alm.classifier.parameters()]
    assert sum(not torch.equal(a, b) for a, b in zip(after, before)) == len(before)


def test_alm_trains_one_seed_per_process() -> None:
    config = ALMConfig()
    with pytest.raises(ValueError, match="one seed at a time"):
        ALMAgent("InvertedPendulum-v4", config, seed=[0, 1], total_steps=1000)


def test_alm_validation_includes_every_agents_checks() -> None:
    with pytest.raises(UsageError, match="epoch_length"):
        ALMConfig(epoch_length=0).validate()
