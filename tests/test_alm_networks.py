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
from cli_helpers import assert_validation  # tests/ is on sys.path
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


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({"batch_size": 2}, True),
        ({"batch_size": 1}, False),
        ({"alm_lambda": 0.0}, True),
        ({"alm_lambda": 1.0}, True),
        ({"alm_lambda": 1.1}, False),
        ({"alm_lambda": -0.1}, False),
    ],
)
def test_alm_validation_bounds(changes: dict, ok: bool) -> None:
    """Two rows are the least batch that splits into real and imagined halves; lambda-returns
    are defined for lambda in [0, 1], both ends included."""
    assert_validation(ALMConfig(**changes), ok)


def test_twin_critic_forward_by_hand() -> None:
    """Q_i(z, a) = W3 elu(W2 tanh(LN(W1 x + b1) * g_i + c_i) + b2) + b3 per member i, with
    the layer norm computed here from its definition, and non-trivial gains and offsets (at
    initialisation they are 1 and 0, where + and - or * and / coincide)."""
    gen = torch.Generator().manual_seed(3)
    critic = TwinCritic(5, 8, generator=gen)
    with torch.no_grad():
        critic.norm_weight.copy_(torch.rand(2, 1, 8, generator=gen) + 0.5)
        critic.norm_bias.copy_(torch.randn(2, 1, 8, generator=gen))
        for layer in (critic.first, critic.second, critic.out):
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=gen))
    z, action = torch.randn(4, 3, generator=gen), torch.randn(4, 2, generator=gen)
    x = torch.cat([z, action], -1).double()
    expected = []
    for i in range(2):

        def dense(layer: BatchedLinear, h: torch.Tensor, i: int = i) -> torch.Tensor:
            return h @ layer.weight[i].double() + layer.bias[i].double().reshape(-1)

        h = dense(critic.first, x)
        mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-5)
        h = h * critic.norm_weight[i, 0].double() + critic.norm_bias[i, 0].double()
        h = torch.nn.functional.elu(dense(critic.second, torch.tanh(h)))
        expected.append(dense(critic.out, h).squeeze(-1))
    torch.testing.assert_close(
        critic(z, action).double(), torch.stack(expected), rtol=1e-4, atol=1e-5
    )


def test_actions_map_to_and_from_asymmetric_bounds() -> None:
    """With bounds [0, 2] and [-3, 1] the policy's [-1, 1] maps to low + (u + 1)(high - low)/2,
    and stored env actions come back to the networks as (a - centre) / half-width."""
    from baselines.alm import ALM

    low, high = torch.tensor([0.0, -3.0]), torch.tensor([2.0, 1.0])
    alm = ALM(
        4, 2, low, high, ALMConfig(hidden_size=16, alm_model_hidden_size=16, alm_latent_dim=3)
    )
    obs = torch.randn(64, 4)
    with torch.no_grad():
        u = alm.actor(alm.encoder(obs)[0])
    expected = low + (u + 1.0) * (high - low) / 2.0
    torch.testing.assert_close(alm.act(obs, deterministic=True), expected)
    seen = {}
    original = alm.update_critic

    def spy(z, act, *rest):  # noqa: ANN001, ANN002, ANN202
        seen["act"] = act
        return original(z, act, *rest)

    alm.update_critic = spy
    env_actions = low + torch.rand(16, 2) * (high - low)
    from baselines.alm import ALMBatch, Sequences
    from usbpo_cli.agents.buffers import Batch

    k = alm.horizon
    sequences = Sequences(
        torch.randn(k + 1, 16, 4), low + torch.rand(k, 16, 2) * (high - low), torch.zeros(16)
    )
    transitions = Batch(
        torch.randn(16, 4), env_actions, torch.zeros(16), torch.randn(16, 4), torch.zeros(16)
    )
    alm.update(ALMBatch(sequences, transitions))
    torch.testing.assert_close(seen["act"], (env_actions - (high + low) / 2) / ((high - low) / 2))
    assert seen["act"].abs().max() <= 1.0


def test_sequence_windows_need_every_state_dimension_to_continue() -> None:
    """An episode boundary where the next episode's first state shares one coordinate with
    the last next-state (here the time step) still breaks the window."""
    from test_alm import fill_episodes

    from baselines.alm import sequence_starts_valid
    from usbpo_cli.agents.buffers import ReplayBuffer

    buffer = ReplayBuffer(100, 2, 1, "cpu")
    fill_episodes(buffer, [3, 3], ["truncated", "open"])
    buffer.obs[3, 1] = buffer.next_obs[2, 1]  # episode 1 starts at "step 3" of its own
    assert sequence_starts_valid(buffer, torch.tensor([1, 2, 3]), 3).tolist() == [
        False, False, True
    ]  # fmt: skip


def test_no_window_starts_in_the_unfilled_part_of_the_buffer() -> None:
    """Past `size` the slots are zeros, whose next states 'continue' into the next zeros."""
    from baselines.alm import sequence_starts_valid
    from usbpo_cli.agents.buffers import ReplayBuffer

    buffer = ReplayBuffer(100, 2, 1, "cpu")
    for step in range(5):
        buffer.add(
            torch.tensor([0.0, step]), torch.zeros(1), 0.0, torch.tensor([0.0, step + 1]), 0.0
        )
    starts = torch.tensor([2, 5, 6, 50])
    assert sequence_starts_valid(buffer, starts, 2).tolist() == [True, False, False, False]


def test_sampled_starts_are_all_valid_even_where_slot_0_is_not() -> None:
    """Slot 0 ends an episode (terminated), so no window of 2 starts there; every sampled start
    must be valid."""
    from test_alm import fill_episodes

    from baselines.alm import sample_sequence_starts, sequence_starts_valid
    from usbpo_cli.agents.buffers import ReplayBuffer

    buffer = ReplayBuffer(100, 2, 1, "cpu", torch.Generator().manual_seed(0))
    fill_episodes(buffer, [1, 30], ["terminated", "open"])
    picked = sample_sequence_starts(buffer, 64, 2)
    assert picked.numel() == 64
    assert sequence_starts_valid(buffer, picked, 2).all()
    assert 0 not in picked.tolist()


def test_the_full_scan_tops_up_to_exactly_n_valid_starts() -> None:
    """Few valid windows (one 3-step episode among 200 one-step ones): rejection sampling
    cannot find 64 in its rounds, so the full scan draws the rest; the result is exactly 64
    starts, all valid."""
    from test_alm import fill_episodes

    from baselines.alm import sample_sequence_starts, sequence_starts_valid
    from usbpo_cli.agents.buffers import ReplayBuffer

    buffer = ReplayBuffer(1000, 2, 1, "cpu", torch.Generator().manual_seed(0))
    fill_episodes(buffer, [1] * 200 + [3], ["terminated"] * 200 + ["open"])
    picked = sample_sequence_starts(buffer, 64, 2)
    assert picked.numel() == 64
    assert sequence_starts_valid(buffer, picked, 2).all()
    assert set(picked.tolist()) <= {200, 201}


def test_scanning_in_chunks_finds_each_start_once_in_order() -> None:
    from test_alm import fill_episodes

    from baselines.alm import valid_sequence_starts
    from usbpo_cli.agents.buffers import ReplayBuffer

    buffer = ReplayBuffer(100, 2, 1, "cpu")
    fill_episodes(buffer, [4, 2, 5], ["terminated", "truncated", "open"])
    whole = valid_sequence_starts(buffer, 2)
    assert whole.tolist() == [0, 1, 2, 4, 6, 7, 8, 9]
    for chunk in (1, 2, 3, 5):
        assert valid_sequence_starts(buffer, 2, chunk=chunk).tolist() == whole.tolist()


def test_learning_starts_as_soon_as_one_window_exists() -> None:
    """A buffer with exactly one K-step window inside an episode is enough to learn from."""
    from usbpo_cli.runs.config import resolve_config

    config, _ = resolve_config(ALMConfig, "InvertedPendulum", "tiny", {})
    learner = ALMAgent("InvertedPendulum-v4", config, seed=0, total_steps=1000)
    learner.begin()
    k = config.alm_seq_len
    states = torch.randn(k + 1, learner.obs_dim)
    for t in range(k):  # one episode of exactly K transitions: one window
        learner.real_buffer.add(states[t], torch.zeros(learner.act_dim), 1.0, states[t + 1], 0.0)
    before = [p.detach().clone() for p in learner.policy.actor.parameters()]
    learner.learn(config.initial_steps)
    assert learner.sequences_ready
    assert any(not torch.equal(p, b) for p, b in zip(learner.policy.actor.parameters(), before))
