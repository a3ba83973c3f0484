"""ALM's composed losses against hand computations: each of the four updates of `baselines.alm.ALM`
(encoder and model, reward and classifier, critic, actor) on small float64 tensors, its returned
loss and the gradient it hands to its optimiser compared with a loss written out here step by
step from the formulas of the module docstring / README (Ghugare et al. 2022), calling only the
raw sub-networks. The sampling noise is made deterministic: the module's `normal_like` is replaced
by a fixed pattern, so every latent draw is mean + std * pattern and every action noise
clip(std_expl * pattern, +-clip), reproduced here without the module's own helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import baselines.alm as alm_module
from baselines.alm import ALM, ALMConfig, Sequences

OBS, ACT, LATENT, HIDDEN, BATCH, K = 5, 2, 3, 8, 4, 3
GAMMA = 0.8  # far from 1, so gamma^t weights matter
LAMBDA = 0.7  # not 0.5: swapping lambda and 1 - lambda changes the value
CLASSIFIER_WEIGHT = 0.5
NOISE_CLIP = 0.3
EXPLORATION_STD = 0.5  # the std passed to the updates: some pattern noise is clipped, some not
ACT_LOW, ACT_HIGH = [-2.0, 0.0], [2.0, 1.0]  # env units: scale [2, 0.5], bias [0, 0.5]
DONE = [0.0, 1.0, 0.0, 1.0]


def pattern_noise(like: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    """Stands in for the standard normal noise: a fixed, element-varying pattern in [-1.5, 1.5]."""
    index = torch.arange(like.numel(), dtype=like.dtype, device=like.device)
    return (1.5 * torch.sin(1.0 + 2.3 * index)).reshape(like.shape)


@pytest.fixture
def alm(monkeypatch: pytest.MonkeyPatch) -> Iterator[ALM]:
    """A tiny ALM in float64 whose target encoder and target critic differ from the online ones
    (so using the wrong one shows), with deterministic sampling noise."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        config = ALMConfig(
            hidden_size=HIDDEN,
            alm_latent_dim=LATENT,
            alm_model_hidden_size=HIDDEN,
            alm_seq_len=K,
            gamma=GAMMA,
            alm_lambda=LAMBDA,
            alm_classifier_weight=CLASSIFIER_WEIGHT,
            alm_noise_clip=NOISE_CLIP,
            batch_size=BATCH,
        )
        learner = ALM(OBS, ACT, torch.tensor(ACT_LOW), torch.tensor(ACT_HIGH), config)
        with torch.no_grad():
            for p in [*learner.encoder_target.parameters(), *learner.critic_target.parameters()]:
                p.add_(0.3 * torch.randn(p.shape))
        monkeypatch.setattr(alm_module, "normal_like", lambda x, generator=None: pattern_noise(x))
        yield learner
    finally:
        torch.set_default_dtype(previous)


def capture_step(monkeypatch: pytest.MonkeyPatch, learner: ALM) -> dict:
    """Wrap `_step` to record the gradient of the loss it is handed (before clipping and the
    Adam step) with respect to the parameters it steps; the real step still runs."""
    seen: dict = {}
    original = learner._step

    def step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, params: list) -> None:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        seen["grads"] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        seen["params"] = list(params)
        original(optimiser, loss, params)

    monkeypatch.setattr(learner, "_step", step)
    return seen


def expected_gradients(loss: torch.Tensor, params: list) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def assert_same_gradients(seen: dict, params: list, expected: list[torch.Tensor]) -> None:
    assert len(seen["params"]) == len(params)
    assert all(a is b for a, b in zip(seen["params"], params))
    assert any(g.abs().max() > 1e-6 for g in expected)  # a gradient that is there at all
    for actual, wanted in zip(seen["grads"], expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-7, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# the pieces of the hand computation, from the formulas (not from baselines.alm)


def draw(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """A reparameterised draw with the patched noise: mean + std * eps."""
    return mean + std * pattern_noise(mean)


def update_action(mean: torch.Tensor) -> torch.Tensor:
    """mu + clip(std * eps, +-c), then clipped to [-1, 1] with a straight-through gradient."""
    noise = (EXPLORATION_STD * pattern_noise(mean)).clamp(-NOISE_CLIP, NOISE_CLIP)
    action = mean + noise
    return action + (action.clamp(-1.0, 1.0) - action).detach()


def kl_by_hand(
    mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_p, std_p^2) || N(mean_q, std_q^2)), diagonal, summed over the last axis:
    log(sq/sp) + (sp^2 + (mp - mq)^2) / (2 sq^2) - 1/2 per dimension."""
    per_dim = torch.log(std_q / std_p) + (std_p**2 + (mean_p - mean_q) ** 2) / (2 * std_q**2) - 0.5
    return per_dim.sum(-1)


def min_of_twins(q: torch.Tensor) -> torch.Tensor:
    assert q.shape[0] == 2
    # the twins must disagree, or min and max would be indistinguishable
    assert (q[0] - q[1]).abs().mean() > 1e-3
    return torch.where(q[0] < q[1], q[0], q[1])


def real_latents(seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(BATCH, LATENT, generator=gen)
    act = torch.rand(BATCH, ACT, generator=gen) * 2 - 1  # already in [-1, 1] units
    rew = torch.randn(BATCH, generator=gen)
    z_next = torch.randn(BATCH, LATENT, generator=gen)
    return z, act, rew, z_next


# ---------------------------------------------------------------------------------------------
# the four updates


def test_encoder_and_model_loss_is_the_discounted_bound_by_hand(
    alm: ALM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 1: loss = -mean_b [ sum_{t<K} gamma^t ( r(z_t, a_t)
    - KL(m(.|z_t, a_t) || e_target(.|s_{t+1})) ) + gamma^K (1 - done) min_i Q_i(z_K, a_K) ],
    z_0 = mean_e(s_0) + std_e(s_0) eps, z_{t+1} = mean_m + std_m eps (the model's own draws),
    a_t the real actions mapped to [-1, 1] (a - bias) / scale, a_K = clip(mu(z_K) + clipped
    noise) without gradient. Checked: the returned loss, and its gradient on encoder + model."""
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(K + 1, BATCH, OBS, generator=gen)
    low, high = torch.tensor(ACT_LOW), torch.tensor(ACT_HIGH)
    act_env = low + (high - low) * torch.rand(K, BATCH, ACT, generator=gen)
    done = torch.tensor(DONE)
    sequences = Sequences(obs, act_env, done)

    # by hand
    act = (act_env - (high + low) / 2) / ((high - low) / 2)
    with torch.no_grad():
        post_mean, post_std = alm.encoder_target(obs[1:])
    z = draw(*alm.encoder(obs[0]))
    bound = torch.zeros(BATCH)
    kls = []
    for t in range(K):
        prior_mean, prior_std = alm.model(z, act[t])
        kl = kl_by_hand(prior_mean, prior_std, post_mean[t], post_std[t])
        kls.append(kl)
        bound = bound + GAMMA**t * (alm.reward(z, act[t]) - kl)
        z = draw(prior_mean, prior_std)
    with torch.no_grad():
        final_action = update_action(alm.actor(z))
    final_q = min_of_twins(alm.critic(z, final_action))
    bound = bound + GAMMA**K * (1.0 - done) * final_q
    expected = -bound.mean()
    # the terms the bound combines are all of a size that shows
    assert torch.stack(kls).min() > 1e-2 and final_q.abs().min() > 1e-2
    expected_grads = expected_gradients(expected, alm.world_params)

    seen = capture_step(monkeypatch, alm)
    loss = alm.update_encoder_and_model(sequences, EXPLORATION_STD)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert_same_gradients(seen, alm.world_params, expected_grads)


def test_reward_and_classifier_loss_is_mse_plus_cross_entropy_by_hand(
    alm: ALM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 2: loss = mean_b (r(z, a) - rew)^2 + (1/B) [ sum_{b<B/2} -log sigmoid(C(z, a, z'))
    + sum_{b>=B/2} -log(1 - sigmoid(C(z, a, zhat))) ], z' the real next latent, zhat =
    mean_m(z, a) + std_m(z, a) eps the model's draw. Checked: the returned loss, and its
    gradient on reward model + classifier."""
    z, act, rew, z_next = real_latents(2)
    half = BATCH // 2
    with torch.no_grad():
        z_imagined = draw(*alm.model(z[half:], act[half:]))
    reward_mse = ((alm.reward(z, act) - rew) ** 2).mean()
    real_logits = alm.classifier(z[:half], act[:half], z_next[:half])
    imagined_logits = alm.classifier(z[half:], act[half:], z_imagined)
    # -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x)
    cross_entropy = (F.softplus(-real_logits).sum() + F.softplus(imagined_logits).sum()) / BATCH
    expected = reward_mse + cross_entropy
    expected_grads = expected_gradients(expected, alm.reward_params)

    seen = capture_step(monkeypatch, alm)
    loss = alm.update_reward_and_classifier(z, act, rew, z_next)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert_same_gradients(seen, alm.reward_params, expected_grads)


def test_critic_loss_is_clipped_double_q_td_by_hand(
    alm: ALM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 3: y = rew + gamma (1 - done) min_i Qtarget_i(z', a'), a' = clip(mu(z') +
    clip(std eps, +-c), +-1); loss = mean over both members and the batch of (Q_i(z, a) - y)^2.
    Checked: the returned loss, and its gradient on the critic."""
    z, act, rew, z_next = real_latents(3)
    done = torch.tensor(DONE)
    with torch.no_grad():
        next_action = update_action(alm.actor(z_next))
        next_q = min_of_twins(alm.critic_target(z_next, next_action))
        target = rew + GAMMA * (1.0 - done) * next_q
    q = alm.critic(z, act)
    squared = [(q[member] - target) ** 2 for member in range(2)]
    expected = (squared[0].sum() + squared[1].sum()) / (2 * BATCH)
    critic_params = list(alm.critic.parameters())
    expected_grads = expected_gradients(expected, critic_params)

    seen = capture_step(monkeypatch, alm)
    loss = alm.update_critic(z, act, rew, z_next, done, EXPLORATION_STD)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert_same_gradients(seen, critic_params, expected_grads)


def test_actor_loss_is_discounted_lambda_returns_by_hand(
    alm: ALM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 4: imagined rollout a_t = clip(mu(sg z_t) + clipped noise), z_{t+1} = mean_m(z_t,
    a_t) + std_m eps for t < K, a_K likewise; rhat_t = r(z_t, a_t) + w log C/(1 - C) with
    C = sigmoid(C(z_t, a_t, sg z_{t+1})); Q_t = min_i Q_i(z_t, a_t); G_K = Q_K,
    G_t = rhat_t + gamma ((1 - lambda) Q_{t+1} + lambda G_{t+1}); loss = -mean_{t<K, b}
    gamma^t G_t. Checked: the returned loss, and its gradient on the actor (through the model's
    and the critic's action inputs, not through the actor's latent inputs)."""
    z0, _, _, _ = real_latents(4)
    latents, actions = [z0], []
    for _ in range(K):
        actions.append(update_action(alm.actor(latents[-1].detach())))
        latents.append(draw(*alm.model(latents[-1], actions[-1])))
    actions.append(update_action(alm.actor(latents[-1].detach())))

    rewards, q_values = [], [None]  # q_values[t] = Q_t for t = 1..K
    for t in range(K):
        logit = alm.classifier(latents[t], actions[t], latents[t + 1].detach())
        c = torch.sigmoid(logit)
        log_odds = torch.log(c / (1 - c))
        rewards.append(alm.reward(latents[t], actions[t]) + CLASSIFIER_WEIGHT * log_odds)
        q_values.append(min_of_twins(alm.critic(latents[t + 1], actions[t + 1])))
    returns = [None] * (K + 1)
    returns[K] = q_values[K]
    for t in reversed(range(K)):
        returns[t] = rewards[t] + GAMMA * ((1 - LAMBDA) * q_values[t + 1] + LAMBDA * returns[t + 1])
    total = sum(GAMMA**t * returns[t].sum() for t in range(K))
    expected = -total / (K * BATCH)
    actor_params = list(alm.actor.parameters())
    expected_grads = expected_gradients(expected, actor_params)

    seen = capture_step(monkeypatch, alm)
    loss = alm.update_actor(z0, EXPLORATION_STD)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert_same_gradients(seen, actor_params, expected_grads)
