"""SAC: the squashed-Gaussian log-probability, batched twin critics, and that updates learn."""

import math

import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from usbpo_cli.agents.buffers import Batch
from usbpo_cli.agents.sac import SAC, TanhGaussianActor
from usbpo_cli.models.nets import BatchedMLP, twin_q


def test_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    low, high = torch.tensor([-3.0, 0.0]), torch.tensor([3.0, 1.0])
    actor = TanhGaussianActor(5, 2, 32, low, high)
    obs = torch.randn(200, 5)
    torch.manual_seed(1)
    action, log_prob = actor(obs)
    mean, log_std = actor.body(obs).chunk(2, dim=-1)
    base = Normal(mean, log_std.clamp(-20, 2).exp())
    dist = TransformedDistribution(
        base, [TanhTransform(), AffineTransform((high + low) / 2, (high - low) / 2)]
    )
    expected = dist.log_prob(action.double().float()).sum(-1)
    inside = ((action - low) / (high - low) - 0.5).abs().max(-1).values < 0.49  # atanh stable
    assert inside.sum() > 100
    assert torch.allclose(log_prob[inside], expected[inside], atol=2e-3)
    assert ((action >= low) & (action <= high)).all()


def test_deterministic_action_is_squashed_mean():
    actor = TanhGaussianActor(3, 1, 16, torch.tensor([-2.0]), torch.tensor([2.0]))
    obs = torch.randn(7, 3)
    action, _ = actor(obs, deterministic=True)
    mean, _ = actor.body(obs).chunk(2, dim=-1)
    assert torch.allclose(action, 2.0 * torch.tanh(mean))


def test_twin_critics_are_one_batched_network():
    sac = SAC(4, 2, -torch.ones(2), torch.ones(2), hidden_size=32)
    assert isinstance(sac.critic, BatchedMLP) and sac.critic.members == 2
    q = twin_q(sac.critic, torch.randn(9, 4), torch.randn(9, 2))
    assert q.shape == (2, 9)
    assert not torch.allclose(q[0], q[1])  # independently initialised twins


def _batch(n: int = 256, obs_dim: int = 4, act_dim: int = 2) -> Batch:
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(n, obs_dim, generator=gen)
    act = torch.rand(n, act_dim, generator=gen) * 2 - 1
    rew = obs[:, 0] - act[:, 0] ** 2  # the reward rewards small first actions
    return Batch(obs, act, rew, torch.randn(n, obs_dim, generator=gen), torch.ones(n))


def test_updates_fit_the_critics_and_improve_the_policy():
    torch.manual_seed(0)
    sac = SAC(4, 2, -torch.ones(2), torch.ones(2), hidden_size=64, lr=1e-3)
    batch = _batch()  # done = 1 everywhere: the Q target is exactly the reward
    first = sac.update(batch)["critic_loss"].item()
    for _ in range(300):
        last = sac.update(batch)["critic_loss"].item()
    assert last < 0.1 * first
    action = sac.act(batch.obs, deterministic=True)
    assert action[:, 0].abs().mean() < 0.3  # it learned that large first actions cost reward


def test_temperature_falls_when_entropy_exceeds_target():
    torch.manual_seed(0)
    sac = SAC(4, 2, -torch.ones(2), torch.ones(2), hidden_size=32, target_entropy=-10.0)
    batch = _batch()
    for _ in range(50):
        sac.update(batch)
    assert sac.alpha.item() < 1.0
    assert math.isclose(sac.target_entropy, -10.0)


def test_target_critics_track_slowly():
    sac = SAC(4, 2, -torch.ones(2), torch.ones(2), hidden_size=32, tau=0.1)
    before = [p.clone() for p in sac.critic_target.parameters()]
    sac.update(_batch())
    for old, target, online in zip(before, sac.critic_target.parameters(), sac.critic.parameters()):
        assert torch.allclose(target, old + 0.1 * (online - old), atol=1e-6)
