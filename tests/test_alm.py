"""ALM: the latent KL, the classifier loss and reward, lambda-returns, the exploration schedule
and the action noise against hand computations; K-step sequences that never cross an episode end
or the ring's seam; which networks each update moves; a tiny run that resumes exactly; bad
settings rejected with exit code 2."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from cli_helpers import (  # tests/ is on sys.path
    assert_resume_reproduces,
    progress_rows,
    tiny_run,
    usbpo_inproc,
)

from baselines.alm import (
    ALMAgent,
    ALMConfig,
    classifier_loss,
    exploration_std,
    gather_sequences,
    lambda_returns,
    noisy_action,
    sample_sequence_starts,
    sequence_starts_valid,
    valid_sequence_starts,
)
from usbpo_cli.agents.buffers import ReplayBuffer
from usbpo_cli.runs.config import resolve_config

ENV = "InvertedPendulum-v4"


# ---------------------------------------------------------------------------------------------
# hand-checkable pieces


def test_classifier_loss_is_binary_cross_entropy_by_hand() -> None:
    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    real, imagined = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])
    by_hand = -(log_sigmoid(2.0) + log_sigmoid(-1.0) + log_sigmoid(-0.5) + log_sigmoid(-3.0)) / 4
    assert classifier_loss(real, imagined).item() == pytest.approx(by_hand)
    # a confident, correct classifier costs almost nothing; a confident wrong one a lot
    assert classifier_loss(torch.tensor([20.0]), torch.tensor([-20.0])).item() < 1e-8
    assert classifier_loss(torch.tensor([-20.0]), torch.tensor([20.0])).item() > 19.0


def test_lambda_returns_by_hand() -> None:
    rewards = torch.tensor([[1.0], [2.0]])  # r_0, r_1
    next_values = torch.tensor([[10.0], [20.0]])  # V_1, V_2
    gamma, lam = 0.9, 0.5
    g1 = 2.0 + gamma * 20.0  # the last step bootstraps fully
    g0 = 1.0 + gamma * ((1 - lam) * 10.0 + lam * g1)
    assert lambda_returns(rewards, next_values, gamma, lam)[:, 0].tolist() == pytest.approx(
        [g0, g1]
    )
    # lambda 1: the K-step discounted return plus the discounted terminal value
    assert lambda_returns(rewards, next_values, gamma, 1.0)[0, 0].item() == pytest.approx(
        1.0 + gamma * 2.0 + gamma**2 * 20.0
    )
    # lambda 0: one-step TD targets
    assert lambda_returns(rewards, next_values, gamma, 0.0)[:, 0].tolist() == pytest.approx(
        [1.0 + gamma * 10.0, 2.0 + gamma * 20.0]
    )


def test_exploration_std_schedule_endpoints() -> None:
    assert exploration_std(0, 1.0, 0.1, 100_000) == 1.0
    assert exploration_std(50_000, 1.0, 0.1, 100_000) == pytest.approx(0.55)
    assert exploration_std(100_000, 1.0, 0.1, 100_000) == pytest.approx(0.1)
    assert exploration_std(10**7, 1.0, 0.1, 100_000) == pytest.approx(0.1)
    # the learner reads it at its progress, which learning sets from the env step
    config, _ = resolve_config(ALMConfig, "InvertedPendulum", "tiny", {})
    agent = ALMAgent(ENV, config, seed=0, total_steps=1000)
    assert agent.policy.exploration_std() == 1.0
    agent.learn(config.initial_steps + 49_999)  # no sequences yet: only the schedule moves
    assert agent.policy.exploration_std() == pytest.approx(0.55)


def test_action_noise_is_clipped_and_passes_gradients() -> None:
    torch.manual_seed(0)
    mean = torch.zeros(10_000, 1, requires_grad=True)
    action = noisy_action(mean, 1.0, 0.3)
    assert action.abs().max().item() == pytest.approx(0.3)
    assert action.std().item() == pytest.approx(0.27, abs=0.02)  # a N(0, 1) clipped at 0.3
    action.sum().backward()
    assert torch.equal(mean.grad, torch.ones_like(mean))
    # at the bounds the value is clipped but the gradient passes straight through
    edge = torch.tensor([[0.95], [-0.99]], requires_grad=True)
    clipped = noisy_action(edge, 1.0, None)
    assert clipped.abs().max().item() <= 1.0
    clipped.sum().backward()
    assert edge.grad.tolist() == [[1.0], [1.0]]
    assert torch.equal(noisy_action(edge, 0.0, 0.3), edge)


# ---------------------------------------------------------------------------------------------
# K-step sequences from the ring buffer


def fill_episodes(buffer: ReplayBuffer, lengths: list[int], ends: list[str]) -> None:
    """Add episodes whose states carry (episode id, time step); an episode ends terminated,
    truncated (done 0, next state not continued) or not at all ('open')."""
    for episode, (length, end) in enumerate(zip(lengths, ends)):
        for step in range(length):
            obs = torch.tensor([float(episode), float(step)])
            next_obs = torch.tensor([float(episode), float(step + 1)])
            done = float(end == "terminated" and step == length - 1)
            buffer.add(obs, torch.zeros(1), 0.0, next_obs, done)


def window_is_one_episode(buffer: ReplayBuffer, start: int, length: int) -> bool:
    idx = [(start + j) % buffer.capacity for j in range(length)]
    episodes = {buffer.obs[i, 0].item() for i in idx}
    steps = [buffer.obs[i, 1].item() for i in idx]
    consecutive = all(b == a + 1 for a, b in zip(steps, steps[1:]))
    no_early_end = all(buffer.done[i].item() == 0.0 for i in idx[:-1])
    return len(episodes) == 1 and consecutive and no_early_end


@pytest.mark.parametrize("length", [1, 3])
def test_sequence_sampling_never_crosses_an_episode_end(length: int) -> None:
    buffer = ReplayBuffer(20, 2, 1, "cpu")
    # 24 transitions into 20 slots: the ring wraps, and the oldest episode loses its start
    ends = ["truncated", "terminated", "truncated", "terminated", "truncated", "open"]
    fill_episodes(buffer, [6, 2, 4, 5, 3, 4], ends)
    assert buffer.pointer == 4 and buffer.obs[4].tolist() == [0.0, 4.0]
    by_hand = [s for s in range(20) if window_is_one_episode(buffer, s, length)]
    # the seam: windows may not run from the newest slot (pointer - 1) into the oldest
    by_hand = [s for s in by_hand if all((s + j) % 20 != buffer.pointer for j in range(1, length))]
    assert valid_sequence_starts(buffer, length).tolist() == by_hand
    if length == 3:
        assert 0 < len(by_hand) < 20  # some windows are excluded, some are not
        # a terminated transition may end a window, never sit inside one
        terminal = int(torch.nonzero(buffer.done)[-1])
        assert (terminal - 2) % 20 in by_hand and (terminal - 1) % 20 not in by_hand

    torch.manual_seed(0)
    starts = sample_sequence_starts(buffer, 2000, length)
    assert starts.shape == (2000,)
    assert set(starts.tolist()) == set(by_hand)  # uniform over the valid windows: all appear
    assert sequence_starts_valid(buffer, starts, length).all()

    sequences = gather_sequences(buffer, starts[:50], length)
    assert sequences.obs.shape == (length + 1, 50, 2) and sequences.act.shape == (length, 50, 1)
    # s_0 .. s_K are consecutive states of one episode
    assert (sequences.obs[:, :, 0] == sequences.obs[:1, :, 0]).all()
    assert (sequences.obs[1:, :, 1] - sequences.obs[:-1, :, 1] == 1).all()


def test_sequences_never_cross_the_ring_seam() -> None:
    """States that repeat with period 5 make the newest next state equal the oldest state: only
    the seam check can tell that window apart."""
    buffer = ReplayBuffer(5, 2, 1, "cpu")
    for step in range(7):  # slots now hold steps 5, 6, 2, 3, 4; the pointer is at slot 2
        buffer.add(
            torch.tensor([0.0, step % 5]),
            torch.zeros(1),
            0.0,
            torch.tensor([0.0, (step + 1) % 5]),
            0.0,
        )
    assert buffer.pointer == 2
    assert torch.equal(buffer.next_obs[1], buffer.obs[2])  # continuity alone would pass
    # in time order the slots are 2, 3, 4, 0, 1: windows of 3 start at slots 2, 3 and 4
    assert valid_sequence_starts(buffer, 3).tolist() == [2, 3, 4]


def test_sequences_in_a_buffer_not_yet_full() -> None:
    buffer = ReplayBuffer(100, 2, 1, "cpu")
    fill_episodes(buffer, [2, 4], ["terminated", ""])
    # episode 0 is too short for 3 steps; episode 1 has windows starting at its steps 0 and 1
    assert valid_sequence_starts(buffer, 3).tolist() == [2, 3]
    empty = ReplayBuffer(100, 2, 1, "cpu")
    fill_episodes(empty, [2, 2], ["terminated", "truncated"])
    assert valid_sequence_starts(empty, 3).numel() == 0
    with pytest.raises(RuntimeError, match="no 3-step sequence"):
        sample_sequence_starts(empty, 8, 3)
    # a termination inside a window rules it out even if the states happened to continue
    flagged = ReplayBuffer(100, 2, 1, "cpu")
    fill_episodes(flagged, [5], ["open"])
    flagged.done[1] = 1.0
    assert valid_sequence_starts(flagged, 3).tolist() == [2]


# ---------------------------------------------------------------------------------------------
# the updates move the networks they should, and only those


@pytest.fixture
def agent() -> ALMAgent:
    config, _ = resolve_config(ALMConfig, "InvertedPendulum", "tiny", {})
    agent = ALMAgent(ENV, config, seed=0, total_steps=1000)
    agent.begin()
    obs = torch.randn(agent.obs_dim)
    for _ in range(200):  # one long episode of random-walk states
        next_obs = obs + 0.1 * torch.randn(agent.obs_dim)
        agent.real_buffer.add(obs, torch.rand(agent.act_dim) * 6 - 3, 1.0, next_obs, 0.0)
        obs = next_obs
    return agent


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def moved(module: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(module.parameters(), before))


def test_each_update_moves_only_its_own_networks(agent: ALMAgent) -> None:
    alm = agent.policy
    names = ("encoder", "model", "reward", "classifier", "critic", "actor")
    batch = agent.policy_batch()

    before = {name: snapshot(getattr(alm, name)) for name in names}
    loss = alm.update_encoder_and_model(batch.sequences, std=0.5)
    assert torch.isfinite(loss)
    assert [moved(getattr(alm, n), before[n]) for n in names] == [True] * 2 + [False] * 4
    assert all(p.grad is None for p in alm.critic.parameters())  # frozen, nothing left behind

    z = torch.randn(batch.transitions.obs.shape[0], agent.config.alm_latent_dim)
    before = {name: snapshot(getattr(alm, name)) for name in names}
    alm.world_opt.zero_grad(set_to_none=True)
    alm.update_actor(z, std=0.5)
    assert [moved(getattr(alm, n), before[n]) for n in names] == [False] * 5 + [True]
    assert all(p.grad is None for p in alm.model.parameters())


def test_full_update_returns_finite_losses_and_moves_targets(agent: ALMAgent) -> None:
    alm = agent.policy
    targets = snapshot(alm.encoder_target) + snapshot(alm.critic_target)
    losses = alm.update(agent.policy_batch())
    assert set(losses) == {"model_loss_train", "critic_loss", "actor_loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    after = snapshot(alm.encoder_target) + snapshot(alm.critic_target)
    assert any(not torch.equal(a, b) for a, b in zip(after, targets))
    # the actions reach the env in its own units (InvertedPendulum: [-3, 3])
    actions = alm.act(torch.randn(500, agent.obs_dim))
    assert actions.abs().max().item() <= 3.0 and actions.abs().max().item() > 1.0


# ---------------------------------------------------------------------------------------------
# a tiny run, exact resume, bad input


@pytest.fixture(scope="module")
def alm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run("alm", tmp_path_factory.mktemp("alm"))


def test_tiny_run_writes_finite_alm_losses(alm_run: Path) -> None:
    rows = progress_rows(alm_run)
    assert [int(r["env_step"]) for r in rows] == [100, 200, 300]
    for row in rows[1:]:  # learning starts after the 100 random steps of the tiny preset
        for column in ("model_loss_train", "critic_loss", "actor_loss"):
            assert math.isfinite(float(row[column])), column
        assert row["alpha"] == row["model_loss_holdout"] == row["rollout_length"] == ""
        assert row["t_policy"] != ""


def test_resume_continues_bit_exactly(alm_run: Path, tmp_path: Path) -> None:
    assert_resume_reproduces("alm", alm_run, tmp_path)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("alm_seq_len=0", "alm_seq_len must be positive"),
        ("alm_lambda=1.5", "alm_lambda must lie in"),
        ("alm_classifier_weight=-0.1", "alm_classifier_weight must be >= 0"),
        ("policy=sac", "policy must be alm"),
        ("batch_size=1", "batch_size >= 2"),
        ("alm_expl_steps=0", "alm_expl_steps must be positive"),
    ],
)
def test_bad_settings_exit_2(setting: str, message: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ("train", "--env", ENV, "--algo", "alm", "--steps", "10", "--set", setting)
    result = usbpo_inproc(*args, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_paper_values_are_the_defaults() -> None:
    config, deviations = resolve_config(ALMConfig, "HalfCheetah", "paper", {})
    assert deviations == {}
    assert (config.alm_latent_dim, config.hidden_size, config.alm_model_hidden_size) == (
        50,
        512,
        1024,
    )
    assert (config.policy_lr, config.batch_size, config.alm_seq_len) == (1e-4, 512, 3)
    assert (config.alm_expl_start, config.alm_expl_end, config.alm_expl_steps) == (1.0, 0.1, 1e5)
    assert config.alm_classifier_weight == 0.1 and config.updates_per_step == 1
