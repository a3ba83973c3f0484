"""TD3's actor ascends the first critic alone (Fujimoto et al. 2018, Algorithm 1:
grad_phi J = mean grad_a Q_theta1(s, a)|a=pi(s) grad_phi pi(s)), not Q2 nor min(Q1, Q2).

The twin critics are set by hand to closed forms that disagree on the action:

    Q1(s, a) = + g . a + u . s        Q2(s, a) = - g . a + u . s

(two ReLU layers that pass a + 5 and s + 10, both positive here, through unchanged, on
different hidden units for each twin, and a linear head). Q1 prefers actions along +g, Q2 along
-g, and at the actor's actions g . a > 0, so min(Q1, Q2) = Q2 there and also pulls along -g. The
critic's learning rate is set to 0, so the critic step that precedes the actor step in
`TD3.update` leaves these closed forms intact.
"""

from __future__ import annotations

import math

import pytest
import torch

from usbpo_cli.agents.buffers import Batch
from usbpo_cli.agents.td3 import TD3

# Asymmetric bounds: scale (2, 0.5), centre (0, 0.5).
LOW, HIGH = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
SCALE, CENTRE = torch.tensor([2.0, 0.5]), torch.tensor([0.0, 0.5])
G = torch.tensor([1.0, 2.0])
U = torch.tensor([0.5, -1.0, 0.25])
A_SHIFT, S_SHIFT = 5.0, 10.0


def set_opposed_twins(td3: TD3) -> None:
    """Q1 = g.a + u.s and Q2 = -g.a + u.s on the online critic (the targets keep their init)."""
    first, second, head = td3.critic.layers
    with torch.no_grad():
        for layer in (first, second, head):
            layer.weight.zero_()
            layer.bias.zero_()
        for m, at in ((0, 0), (1, 8)):  # the twins use different hidden units
            for i in range(3):  # unit at + i carries s_i + 10
                first.weight[m, i, at + i] = 1.0
                first.bias[m, 0, at + i] = S_SHIFT
                second.weight[m, at + i, at + i] = 1.0
            for j in range(2):  # unit at + 3 + j carries a_j + 5
                first.weight[m, 3 + j, at + 3 + j] = 1.0
                first.bias[m, 0, at + 3 + j] = A_SHIFT
                second.weight[m, at + 3 + j, at + 3 + j] = 1.0
            sign = 1.0 if m == 0 else -1.0
            head.weight[m, at : at + 3, 0] = U
            head.weight[m, at + 3 : at + 5, 0] = sign * G
            head.bias[m, 0, 0] = -S_SHIFT * U.sum() - sign * A_SHIFT * G.sum()


def q1(obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    return act @ G + obs @ U


def q2(obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    return -(act @ G) + obs @ U


def make_td3(pre_tanh: list[float] | None = None) -> TD3:
    """TD3 whose actor moves at every update (policy_delay 1) and whose critic never moves."""
    torch.manual_seed(0)
    td3 = TD3(3, 2, LOW, HIGH, hidden_size=16, lr=1e-2, policy_delay=1)
    for group in td3.critic_opt.param_groups:
        group["lr"] = 0.0
    set_opposed_twins(td3)
    if pre_tanh is not None:  # a constant actor: tanh(pre_tanh) * scale + centre everywhere
        head = td3.actor.body[-1]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor(pre_tanh))
    return td3


def batch(n: int = 16) -> Batch:
    gen = torch.Generator().manual_seed(3)
    obs = torch.randn(n, 3, generator=gen).clamp(-4.0, 4.0)
    act = LOW + torch.rand(n, 2, generator=gen) * (HIGH - LOW)
    return Batch(obs, act, torch.randn(n, generator=gen), obs.flip(0), torch.zeros(n))


def test_the_constructed_twins_are_the_closed_forms() -> None:
    """The hand-set critic computes Q1 = g.a + u.s and Q2 = -g.a + u.s (a sanity check of the
    construction the other tests rely on)."""
    td3 = make_td3()
    data = batch()
    x = torch.cat([data.obs, data.act], dim=-1).expand(2, -1, -1)
    q = td3.critic(x).squeeze(-1)
    torch.testing.assert_close(q[0], q1(data.obs, data.act), atol=1e-5, rtol=0)
    torch.testing.assert_close(q[1], q2(data.obs, data.act), atol=1e-5, rtol=0)


def test_actor_loss_is_minus_the_mean_of_q1_at_the_actors_actions() -> None:
    """actor_loss = -(1/N) sum_i Q1(s_i, pi(s_i)) with Q1's closed form, for a state-dependent
    actor (the untouched random init). -mean Q2 and -mean min(Q1, Q2) are different numbers
    here, and so is the sum instead of the mean."""
    td3 = make_td3()
    data = batch()
    with torch.no_grad():
        actions = td3.actor(data.obs)
    expected = -q1(data.obs, actions).mean().item()
    assert (actions @ G).min() > 0  # Q1 > Q2 at every action, so min(Q1, Q2) = Q2
    assert abs(expected + q2(data.obs, actions).mean().item()) > 0.5
    losses = td3.update(data)
    assert losses["actor_loss"].item() == pytest.approx(expected, abs=1e-5)


def test_one_actor_step_moves_every_action_toward_q1s_preference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A constant actor pi(s) = tanh(p) * scale + centre, p = (0.3, -0.2). The actor loss
    -mean_i Q1(s_i, pi(s_i)) = -g.pi - u.mean(s) has, by hand, the head-bias gradient
    d/dp_j = -g_j scale_j (1 - tanh(p_j)^2) (the head weights' gradients are that times the mean
    hidden activations; nothing reaches the earlier layers through the zero head weights). Adam's
    first step moves each parameter by lr against its gradient's sign, so every pre-tanh output,
    hence every action, moves along +g (Q1's preference): Q1 rises and Q2 falls at every state.
    Ascending Q2 or min(Q1, Q2) = Q2 would move them all along -g."""
    p = [0.3, -0.2]
    td3 = make_td3(p)
    data = batch()
    with torch.no_grad():
        before = td3.actor(data.obs)
    expected_action = torch.tanh(torch.tensor(p)) * SCALE + CENTRE
    torch.testing.assert_close(before, expected_action.expand_as(before))
    assert float(expected_action @ G) > 0  # min(Q1, Q2) = Q2 at the actor's action

    grads = {}
    step = td3.actor_opt.step

    def spy_step(*args, **kwargs):  # noqa: ANN202
        grads["bias"] = td3.actor.body[-1].bias.grad[0].clone()  # seed 0
        return step(*args, **kwargs)

    monkeypatch.setattr(td3.actor_opt, "step", spy_step)
    losses = td3.update(data)
    expected_loss = -(float(expected_action @ G) + float(data.obs.mean(0) @ U))
    assert losses["actor_loss"].item() == pytest.approx(expected_loss, abs=1e-5)
    hand_grad = [-G[j].item() * SCALE[j].item() * (1 - math.tanh(p[j]) ** 2) for j in range(2)]
    assert grads["bias"].tolist() == pytest.approx(hand_grad, rel=1e-5)

    with torch.no_grad():
        after = td3.actor(data.obs)
    moved = after - before
    assert (moved * G.sign() > 0).all()  # every state, every action dimension, along +g
    assert (q1(data.obs, after) > q1(data.obs, before)).all()
    assert (q2(data.obs, after) < q2(data.obs, before)).all()


def test_logged_critic_loss_is_half_the_summed_twin_mse_by_hand() -> None:
    """critic_loss = 0.5 * (mean_b (Q1 - y)^2 + mean_b (Q2 - y)^2), SAC's scale, with the TD
    target y fixed by hand (the target itself is tested in tests/test_td3.py)."""
    td3 = make_td3()
    data = batch()
    y = torch.linspace(-1.0, 1.0, data.obs.shape[0])
    td3.td_target = lambda b: y
    losses = td3.update(data)
    expected = 0.5 * (
        ((q1(data.obs, data.act) - y) ** 2).mean() + ((q2(data.obs, data.act) - y) ** 2).mean()
    )
    assert losses["critic_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_actor_loss_through_a_random_critic_by_hand() -> None:
    """With the critic at its random init, where many hidden units are negative before their
    ReLU in every layer: actor_loss = -mean Q1(s, pi(s)) with Q1 computed here in float64 from
    the first twin's weights (x W + b, ReLU after each hidden layer, none after the head), the
    actor as it was before the step and the critic as the critic step left it."""
    td3 = TD3(
        3,
        2,
        LOW,
        HIGH,
        hidden_size=16,
        policy_delay=1,
        generators=[torch.Generator().manual_seed(0)],
    )
    data = batch()
    with torch.no_grad():
        actions = td3.actor(data.obs).double()
    losses = td3.update(data)
    x = torch.cat([data.obs.double(), actions], dim=-1)
    layers = td3.critic.layers
    hidden_negative = []
    for i, layer in enumerate(layers):  # members are [seed0-twin0, seed0-twin1]: twin 0 is 0
        x = x @ layer.weight[0].detach().double() + layer.bias[0].detach().double()
        if i < len(layers) - 1:
            hidden_negative.append(float((x < 0).double().mean()))
            x = x.clamp_min(0.0)
    assert len(layers) == 3 and all(0.1 < share < 0.9 for share in hidden_negative)
    expected = -x.squeeze(-1).mean().item()
    assert losses["actor_loss"].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
