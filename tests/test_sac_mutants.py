"""SAC details the other SAC tests leave loose, each pinned from the paper's maths on a state
built by hand: the log-std clamp to [-20, 2] and its gradient at the bounds, the tanh-Gaussian
squashed onto asymmetric bounds with more than two action dimensions, the target entropy
-act_dim, the min over the twins (ties to the first twin, as torch.min), two hidden layers per
critic, and target critics that no gradient reaches."""

import math

import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from usbpo_cli.agents.buffers import Batch
from usbpo_cli.agents.sac import SAC, TanhGaussianActor
from usbpo_cli.models.nets import twin_q

LOW, HIGH = torch.tensor([0.0, -3.0, 1.0]), torch.tensor([1.0, 1.0, 5.0])  # bias != 0


def _constant_head(actor: TanhGaussianActor, mean: list[float], raw_log_std: list[float]):
    """The actor's output no longer depends on the state: [mean, raw log-std] everywhere."""
    with torch.no_grad():
        last = actor.linears()[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor(mean + raw_log_std))


def _batch(n: int, obs_dim: int, act_dim: int, rew: float = 0.0) -> Batch:
    gen = torch.Generator().manual_seed(5)
    obs = torch.randn(n, obs_dim, generator=gen)
    act = torch.zeros(n, act_dim)
    return Batch(
        obs, act, torch.full((n,), rew), torch.randn(n, obs_dim, generator=gen), torch.ones(n)
    )


def test_deterministic_action_is_tanh_mean_on_asymmetric_bounds_with_three_dims():
    actor = TanhGaussianActor(2, 3, 8, LOW, HIGH)
    mean = [0.5, -1.0, 2.0]
    _constant_head(actor, mean, [0.0, 0.0, 0.0])
    action, _ = actor(torch.randn(4, 2), deterministic=True)
    # low + (high - low) * (tanh(m) + 1) / 2, per dimension
    expected = [lo + (hi - lo) * (math.tanh(m) + 1) / 2 for m, lo, hi in zip(mean, LOW, HIGH)]
    assert action.shape == (4, 3)
    torch.testing.assert_close(action, torch.tensor(expected).expand(4, 3), rtol=0, atol=1e-6)


def test_log_std_is_clamped_to_minus_20_and_2():
    actor = TanhGaussianActor(2, 2, 8, -torch.ones(2), torch.ones(2))
    noise = torch.tensor([[0.5, -0.3]])
    sample = actor.squash(torch.zeros(1, 2), torch.tensor([[-30.0, 5.0]]), noise)
    torch.testing.assert_close(sample.std, torch.tensor([[math.exp(-20.0), math.exp(2.0)]]))
    # log N(u; 0, s) - log(1 - tanh(u)^2) per dimension with u = s * noise and log s in {-20, 2}
    expected = 0.0
    for log_std, e in zip((-20.0, 2.0), noise[0].tolist()):
        u = math.exp(log_std) * e
        expected += -0.5 * e * e - log_std - 0.5 * math.log(2 * math.pi)
        expected -= math.log(1 - math.tanh(u) ** 2)
    assert math.isclose(sample.log_prob.item(), expected, rel_tol=1e-5)


def test_clamp_passes_gradient_at_its_bounds_as_autograd():
    """At a raw log-std of exactly -20 or 2 torch.clamp's gradient is 1 (bounds included); just
    outside it is 0. The hand-written backward must agree on both sides."""
    torch.manual_seed(0)
    actor = TanhGaussianActor(2, 2, 8, torch.tensor([-1.0, 0.0]), torch.tensor([3.0, 1.0]))
    raw = torch.tensor([[-20.0, 2.0], [2.0, -20.0], [-20.5, 2.5], [0.3, -1.0]])
    mean = torch.randn(4, 2).requires_grad_(True)
    raw.requires_grad_(True)
    noise, grad_action, grad_log_prob = torch.randn(4, 2), torch.randn(4, 2), 0.3
    sample = actor.squash(mean, raw, noise)
    loss = (grad_action * sample.action).sum() + grad_log_prob * sample.log_prob.sum()
    grad_mean, grad_raw = torch.autograd.grad(loss, [mean, raw])
    with torch.no_grad():
        hand = actor.squash_backward(actor.squash(mean, raw, noise), grad_action, grad_log_prob)
    torch.testing.assert_close(hand, torch.cat([grad_mean, grad_raw], dim=-1))
    # d log_prob / d log_std = -1 + ...: at -20 the std * noise term vanishes
    assert math.isclose(hand[0, 2].item(), -grad_log_prob, rel_tol=1e-4)
    assert (hand[:2, 2:] != 0).all() and (hand[2, 2:] == 0).all()


def _critic_weights(sac: SAC, first_layer: list[tuple[float, float]], last_bias=(0.0, 0.0)):
    """Twin i: Q_i = relu(relu(w_i * a_0 + b_i)) + last_bias[i] (the state is ignored)."""
    with torch.no_grad():
        for layer in sac.critic.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        first, middle, last = sac.critic.layers
        for i, (w, b) in enumerate(first_layer):
            first.weight[i, sac.obs_dim, 0] = w
            first.bias[i, 0, 0] = b
            middle.weight[i, 0, 0] = 1.0
            last.weight[i, 0, 0] = 1.0
            last.bias[i, 0, 0] = last_bias[i]


def test_actor_follows_the_first_twin_at_a_tie_as_torch_min():
    """Q_0 = 1 + a and Q_1 = 1 - a tie at exactly 1.0 in float32 for |a| < 6e-8, which a
    mean of 0 and a std of e^-20 keep a within. min(Q_0, Q_1) has no derivative there; the
    update promises autograd's torch.min convention, the first twin: d(-Q_0)/d mean = -1."""
    torch.manual_seed(0)
    n = 16
    sac = SAC(1, 1, -torch.ones(1), torch.ones(1), hidden_size=2)
    _constant_head(sac.actor, [0.0], [-25.0])
    _critic_weights(sac, [(1.0, 1.0), (-1.0, 1.0)])
    before = [p.clone() for p in sac.critic.parameters()]
    # actions 0 and reward 1 with done: the critics' error is 0, so their step leaves them as is
    sac.update(_batch(n, 1, 1, rew=1.0))
    assert all(torch.equal(p, q) for p, q in zip(sac.critic.parameters(), before))
    mean_grad = sac.actor.linears()[-1].bias.grad[0, 0].item()  # seed 0, first mean
    # autograd on -mean_b min_i Q_i(s, tanh(m)) at m = 0, where the twins tie
    m = torch.zeros(1, requires_grad=True)
    q = twin_q(sac.critic, torch.zeros(n, 1), torch.tanh(m).expand(n, 1))
    assert torch.equal(q[0], q[1])
    (reference,) = torch.autograd.grad(-q.min(0).values.mean(), [m])
    assert reference.item() == -1.0
    assert math.isclose(mean_grad, -1.0, rel_tol=1e-6)


@pytest.mark.parametrize("q0, q1", [(0.0, 5.0), (5.0, 0.0)])
def test_update_with_three_action_dims_reports_min_twin_and_targets_minus_act_dim(q0, q1):
    """Constant critics and a state-independent actor: the reported actor loss is
    mean(alpha log pi) - min(q0, q1) and the temperature gradient -(mean log pi - act_dim),
    with log pi from torch.distributions on the update's own noise."""
    n, act_dim = 32, 3
    sac = SAC(2, act_dim, LOW, HIGH, hidden_size=4, lr=0.0)  # lr 0: nothing moves mid-update
    assert sac.target_entropy == -3.0
    mean, raw_log_std = [0.3, -0.2, 0.1], [-1.0, -0.5, 0.0]
    _constant_head(sac.actor, mean, raw_log_std)
    _critic_weights(sac, [(0.0, 0.0), (0.0, 0.0)], last_bias=(q0, q1))
    with torch.no_grad():
        sac.log_alpha.fill_(-0.5)
    torch.manual_seed(3)
    losses = sac.update(_batch(n, 2, act_dim))
    torch.manual_seed(3)
    noise = torch.randn(2 * n, act_dim)[n:].double()  # the update's only draw

    loc, scale = torch.tensor(mean, dtype=torch.float64), torch.tensor(raw_log_std).double().exp()
    low, high = LOW.double(), HIGH.double()
    dist = TransformedDistribution(
        Normal(loc, scale), [TanhTransform(), AffineTransform((high + low) / 2, (high - low) / 2)]
    )
    log_pi = dist.log_prob(dist.transforms[1](torch.tanh(loc + scale * noise))).sum(-1)
    alpha = math.exp(-0.5)
    expected_actor_loss = alpha * log_pi.mean().item() - min(q0, q1)
    assert math.isclose(losses["actor_loss"].item(), expected_actor_loss, abs_tol=1e-4)
    assert math.isclose(sac.log_alpha.grad.item(), -(log_pi.mean().item() - 3.0), abs_tol=1e-4)


def test_critics_have_two_hidden_layers():
    sac = SAC(4, 2, -torch.ones(2), torch.ones(2), hidden_size=32)
    shapes = [tuple(layer.weight.shape) for layer in sac.critic.layers]
    assert shapes == [(2, 6, 32), (2, 32, 32), (2, 32, 1)]


def test_no_gradient_reaches_the_target_critics():
    """The TD target is a stop-gradient: even evaluated outside no_grad, it carries no graph."""
    sac = SAC(4, 2, -torch.ones(2), torch.ones(2), hidden_size=8)
    obs, act = torch.randn(5, 4), torch.randn(5, 2)
    assert not twin_q(sac.critic_target, obs, act).requires_grad
    assert not any(p.requires_grad for p in sac.critic_target.parameters())
    assert all(p.requires_grad for p in sac.critic.parameters())
