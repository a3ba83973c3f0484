"""PPO's advantage normalisation inside `PPOAgent.update`: per minibatch, to mean 0 and unit
standard deviation.

The rollout is built so its GAE advantages are known by hand: every step terminates, so
delta_t = r_t - V(s_t) and the recursion A_t = delta_t + gamma lambda (1 - end_t) A_{t+1} stops
at once, giving A_t = r_t - V(s_t). The value targets are A_t + V(s_t), and `value_loss` receives
a minibatch's targets and rollout values, so a spy on it recovers which raw advantages each
minibatch holds, and a spy on `clipped_surrogate_loss` recovers the advantages the policy loss
was given. The expected normalisation is computed here from the minibatch's raw advantages:

    A_hat = (A - mean(A)) / (std(A) + 1e-8),  std(A) = sqrt(sum (A - mean)^2 / (n - 1))

(the README's "advantages normalised per minibatch"; the README does not say which standard
deviation, the code's `Tensor.std()` is the unbiased one, as in CleanRL's PPO that the recipe
follows). The raw advantages have mean about 50, so unnormalised ones are far from A_hat, and
the minibatches' means differ, so a normalisation over the whole rollout is far from it too.
"""

from __future__ import annotations

import math

import pytest
import torch

import baselines.ppo as ppo
from baselines.ppo import PPOAgent, PPOConfig
from usbpo_cli.models.distributions import gaussian_log_prob
from usbpo_cli.runs.config import resolve_config

ENV = "InvertedPendulum-v4"
STEPS, ENVS = 7, 2  # 14 rows: 4 minibatches of 4, 4, 3 and 3 rows


def make_agent(**changes: object) -> PPOAgent:
    config, _ = resolve_config(PPOConfig, "InvertedPendulum", "tiny", dict(changes))
    assert (config.ppo_num_envs, config.ppo_epochs) == (ENVS, 2)
    return PPOAgent(ENV, config, seed=0, total_steps=1000)


def fill_rollout(agent: PPOAgent) -> torch.Tensor:
    """Rows with advantages A = 50 + 10 * (uneven numbers) by construction; returns A [T, N]."""
    gen = torch.Generator().manual_seed(7)
    advantages = 50.0 + 10.0 * torch.randn(STEPS, ENVS, generator=gen) ** 3
    values = torch.randn(STEPS, ENVS, generator=gen)
    rollout = agent.rollout
    rollout.obs[:STEPS] = torch.randn(STEPS, ENVS, rollout.obs.shape[-1], generator=gen)
    rollout.actions[:STEPS] = torch.randn(STEPS, ENVS, rollout.actions.shape[-1], generator=gen)
    with torch.no_grad():  # the acting policy's log-probabilities: ratios start at 1
        mean = agent.model.actor_mean(rollout.obs[:STEPS])
        log_std = agent.model.actor_log_std.expand_as(mean)
        rollout.log_probs[:STEPS] = gaussian_log_prob(rollout.actions[:STEPS], mean, log_std)
    rollout.values[:STEPS] = values
    rollout.rewards[:STEPS] = advantages + values  # delta = r - V = A
    rollout.terminated[:STEPS] = 1.0
    rollout.truncated[:STEPS] = 0.0
    rollout.truncation_values[:STEPS] = 0.0
    return advantages


def run_update(agent: PPOAgent, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """`agent.update` on the constructed rollout; per minibatch, (raw advantages recovered from
    the value targets, advantages handed to the clipped surrogate)."""
    raw, given = [], []
    surrogate, value = ppo.clipped_surrogate_loss, ppo.value_loss

    def spy_surrogate(ratio, advantages, clip):  # noqa: ANN202
        given.append(advantages.detach().clone())
        return surrogate(ratio, advantages, clip)

    def spy_value(values, old_values, targets, clip):  # noqa: ANN202
        raw.append((targets - old_values).detach().clone())
        return value(values, old_values, targets, clip)

    monkeypatch.setattr(ppo, "clipped_surrogate_loss", spy_surrogate)
    monkeypatch.setattr(ppo, "value_loss", spy_value)
    torch.manual_seed(0)
    agent.update(STEPS, torch.zeros(ENVS))
    return list(zip(raw, given, strict=True))


def test_gae_of_the_constructed_rollout_is_the_chosen_advantages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every row appears once per epoch, with the advantage chosen for it: the minibatches of an
    epoch partition the 14 raw advantages (2 epochs x sizes 4, 4, 3, 3)."""
    agent = make_agent()
    chosen = fill_rollout(agent)
    batches = run_update(agent, monkeypatch)
    assert [a.numel() for a, _ in batches] == [4, 4, 3, 3] * 2
    for epoch in (batches[:4], batches[4:]):
        seen = torch.cat([a for a, _ in epoch]).sort().values
        torch.testing.assert_close(seen, chosen.flatten().sort().values, atol=1e-4, rtol=0)


def test_advantages_are_normalised_per_minibatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each minibatch's surrogate gets (A - mean A) / (unbiased std A + 1e-8) of its own raw
    advantages: mean 0 and unbiased std 1 per minibatch. Raw advantages (mean ~50), a
    normalisation with the whole rollout's mean and std, or with the biased std (a factor
    sqrt((n - 1) / n) off on 3 or 4 rows) all differ from it by far more than the tolerance."""
    agent = make_agent()
    chosen = fill_rollout(agent).flatten()
    whole_mean, whole_std = chosen.mean(), chosen.std()
    for raw, given in run_update(agent, monkeypatch):
        n = raw.numel()
        mean = raw.sum() / n
        std = ((raw - mean).square().sum() / (n - 1)).sqrt()
        expected = (raw - mean) / (std + 1e-8)
        torch.testing.assert_close(given, expected, atol=1e-4, rtol=1e-4)
        assert given.mean().item() == pytest.approx(0.0, abs=1e-4)
        assert given.std().item() == pytest.approx(1.0, abs=1e-4)
        # the alternatives this rules out are far away
        assert (raw - given).abs().max() > 10
        assert ((raw - whole_mean) / whole_std - expected).abs().max() > 0.05
        biased = (raw - mean) / (raw - mean).square().mean().sqrt()
        assert (biased - expected).abs().max() > 0.05


def test_a_one_row_minibatch_keeps_its_raw_advantage(monkeypatch: pytest.MonkeyPatch) -> None:
    """With as many minibatches as rows each minibatch holds one row, whose spread is undefined
    (the unbiased std divides by n - 1 = 0): the code documents that such a minibatch is left
    unnormalised, so the surrogate sees the raw, finite advantage."""
    agent = make_agent(ppo_num_minibatches=STEPS * ENVS)
    fill_rollout(agent)
    batches = run_update(agent, monkeypatch)
    assert len(batches) == 2 * STEPS * ENVS
    for raw, given in batches:
        assert raw.numel() == 1
        assert torch.isfinite(given).all()
        torch.testing.assert_close(given, raw, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("value_coef", "entropy_coef"), [(0.5, 0.0), (2.0, 0.25)])
def test_the_joint_loss_is_policy_plus_value_coef_value_minus_entropy_coef_entropy(
    monkeypatch: pytest.MonkeyPatch, value_coef: float, entropy_coef: float
) -> None:
    """With the policy loss replaced by 0, the value loss by the sum of the critic's
    parameters and the entropy by 3 x the log-std's sum, the gradient handed to the clip is
    value_coef on every critic parameter and -3 entropy_coef on every log-std entry (a flipped
    sign would make the critic ascend its loss or the entropy bonus a penalty)."""
    agent = make_agent(ppo_value_coef=value_coef, ppo_entropy_coef=entropy_coef)
    fill_rollout(agent)
    model = agent.model
    monkeypatch.setattr(ppo, "clipped_surrogate_loss", lambda ratio, adv, clip: 0.0 * ratio.sum())
    monkeypatch.setattr(
        ppo, "value_loss", lambda *args: sum(p.sum() for p in model.critic.parameters())
    )
    monkeypatch.setattr(ppo, "gaussian_entropy", lambda log_std: 3.0 * log_std.sum())
    seen: list[tuple[list[torch.Tensor], torch.Tensor]] = []

    def spy_clip(parameters, max_norm):  # noqa: ANN202
        critic = [p.grad.clone() for p in model.critic.parameters()]
        seen.append((critic, model.actor_log_std.grad.clone()))
        return torch.tensor(0.0)

    monkeypatch.setattr(ppo.nn.utils, "clip_grad_norm_", spy_clip)
    agent.update(STEPS, torch.zeros(ENVS))
    assert seen
    for critic, log_std in seen:
        for grad in critic:
            assert torch.allclose(grad, torch.full_like(grad, value_coef))
        assert torch.allclose(log_std, torch.full_like(log_std, -3.0 * entropy_coef))


def test_two_row_minibatches_are_normalised_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two different raw advantages a and b have mean (a + b) / 2 and unbiased std
    |a - b| / sqrt(2), so they normalise to -1/sqrt(2) and +1/sqrt(2): the smallest minibatch
    that has a spread is normalised like any other."""
    agent = make_agent(ppo_num_minibatches=STEPS)  # 14 rows in 7 minibatches of 2
    fill_rollout(agent)
    batches = run_update(agent, monkeypatch)
    assert len(batches) == 2 * STEPS
    for raw, given in batches:
        assert raw.numel() == 2 and raw[0] != raw[1]
        sign = torch.sign(raw - raw.mean())
        torch.testing.assert_close(given, sign / math.sqrt(2.0), atol=1e-4, rtol=0)
