"""PPO: GAE with terminations and time limits by hand, the clipped losses at their boundaries, the
running normalisers against numpy, the initialisation, where rows fall, a tiny run that resumes
exactly, one that learns, and bad settings."""

from __future__ import annotations

import math
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from cli_helpers import (  # tests/ is on sys.path
    assert_resume_reproduces,
    assert_validation,
    progress_rows,
    tiny_run,
    usbpo_inproc,
)

from baselines.ppo import (
    ActorCritic,
    PPOAgent,
    PPOConfig,
    RewardScaler,
    RunningMeanStd,
    clipped_surrogate_loss,
    generalised_advantages,
    next_state_values,
    value_loss,
)
from usbpo_cli.errors import UsageError
from usbpo_cli.runs.config import resolve_config
from usbpo_cli.runs.csvlog import PROGRESS_COLUMNS
from usbpo_cli.runs.runner import RunSpec, run_training
from usbpo_cli.util.settings import parse_overrides

ENV = "InvertedPendulum-v4"

# ---------------------------------------------------------------------------------------------
# GAE


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


def test_gae_by_hand_with_a_termination_a_time_limit_and_the_rollout_end() -> None:
    # t0 ordinary, t1 terminates, t2 hits the time limit (final obs worth 10), t3 is the last
    # step of the rollout (bootstrapped from the value after it, 3)
    gamma, lam = 0.9, 0.5
    rewards, values = column(1, 2, 3, 4), column(0.5, 1.0, 1.5, 2.0)
    terminated, truncated = column(0, 1, 0, 0), column(0, 0, 1, 0)
    truncation_values = column(0, 0, 10.0, 0)
    next_values = next_state_values(values, torch.tensor([3.0]), truncated, truncation_values)
    assert next_values.squeeze(1).tolist() == [1.0, 1.5, 10.0, 3.0]
    advantages, targets = generalised_advantages(
        rewards, values, next_values, terminated, torch.maximum(terminated, truncated), gamma, lam
    )
    delta3 = 4 + 0.9 * 3.0 - 2.0  # bootstraps from the value after the rollout
    delta2 = 3 + 0.9 * 10.0 - 1.5  # bootstraps from the final observation, not the reset one
    delta1 = 2 - 1.0  # terminated: no future
    delta0 = 1 + 0.9 * 1.0 - 0.5
    expected = [delta0 + 0.9 * 0.5 * delta1, delta1, delta2, delta3]  # no carry over an end
    assert advantages.squeeze(1).tolist() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx([1.85, 1.0, 10.5, 4.7])
    assert targets.squeeze(1).tolist() == pytest.approx([2.35, 2.0, 12.0, 6.7])


def test_gae_without_episode_ends_is_the_discounted_sum_of_deltas() -> None:
    zeros = column(0, 0, 0, 0)
    advantages, _ = generalised_advantages(
        column(1, 1, 1, 1), zeros, zeros, zeros, zeros, gamma=0.9, gae_lambda=0.5
    )
    # each delta is 1; A_t = 1 + 0.45 A_{t+1}
    assert advantages.squeeze(1).tolist() == pytest.approx([1.743625, 1.6525, 1.45, 1.0])


def test_termination_wins_over_a_simultaneous_time_limit() -> None:
    one = column(1.0)
    next_values = next_state_values(column(0.0), torch.tensor([7.0]), one, column(10.0))
    advantages, _ = generalised_advantages(one * 2, column(0.0), next_values, one, one, 0.9, 0.95)
    assert advantages.item() == 2.0  # the pole fell on the last allowed step: no bootstrap


def test_gae_columns_are_independent_envs() -> None:
    rewards = torch.tensor([[1.0, 5.0], [1.0, 5.0]])
    zeros = torch.zeros(2, 2)
    ends = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    advantages, _ = generalised_advantages(rewards, zeros, zeros, ends, ends, 1.0, 1.0)
    assert advantages[:, 0].tolist() == [2.0, 1.0]
    assert advantages[:, 1].tolist() == [5.0, 5.0]


# ---------------------------------------------------------------------------------------------
# losses


def test_clipped_surrogate_at_and_beyond_the_clip_boundaries() -> None:
    ratios = [0.5, 0.8, 1.0, 1.2, 1.5]
    ratio = torch.tensor(ratios * 2, requires_grad=True)
    advantages = torch.tensor([1.0] * 5 + [-1.0] * 5)
    per_sample = [-0.5, -0.8, -1.0, -1.2, -1.2] + [0.8, 0.8, 1.0, 1.2, 1.5]
    loss = clipped_surrogate_loss(ratio, advantages, clip=0.2)
    assert loss.item() == pytest.approx(np.mean(per_sample))
    loss.backward()
    per_sample_grad = (ratio.grad * len(ratios) * 2).tolist()
    # A > 0: zero gradient once the ratio is above 1.2; A < 0: once it is below 0.8. Exactly on
    # the boundary the gradient is still the unclipped one (the derivative from inside).
    assert per_sample_grad == [-1.0, -1.0, -1.0, -1.0, 0.0] + [0.0, 1.0, 1.0, 1.0, 1.0]


def test_clipped_surrogate_scales_with_the_advantage() -> None:
    ratio = torch.tensor([1.1, 2.0], requires_grad=True)
    loss = clipped_surrogate_loss(ratio, torch.tensor([3.0, 3.0]), clip=0.2)
    assert loss.item() == pytest.approx((-3.3 - 3.6) / 2)
    loss.backward()
    assert ratio.grad.tolist() == pytest.approx([-1.5, 0.0])


def test_value_loss_plain_and_clipped_by_hand() -> None:
    old, values = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])
    targets = torch.tensor([0.5, 2.0])
    assert value_loss(values, old, targets, None).item() == pytest.approx(0.5 * (0.25 + 1) / 2)
    # moved predictions are 0.2: errors 0.09 and 3.24; the larger of each pair counts
    clipped = value_loss(values, old, targets, 0.2).item()
    assert clipped == pytest.approx(0.5 * (0.25 + 3.24) / 2)


# ---------------------------------------------------------------------------------------------
# normalisers


def test_running_mean_std_matches_numpy_over_uneven_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 64, 3, 200)]
    exact = RunningMeanStd((4,), epsilon=0.0)
    default = RunningMeanStd((4,))
    for batch in batches:
        exact.update(batch)
        default.update(batch)
    data = np.concatenate(batches)
    np.testing.assert_allclose(exact.mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(exact.var, data.var(0), rtol=1e-12)
    assert exact.count == len(data)
    # the 1e-4 pseudo-count at mean 0, variance 1 barely moves the estimate
    np.testing.assert_allclose(default.mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(default.var, data.var(0), rtol=1e-5)


def test_normalise_centres_scales_and_clips() -> None:
    stats = RunningMeanStd((2,), epsilon=0.0)
    stats.update(np.array([[0.0, 10.0], [2.0, 10.0]]))  # mean (1, 10), var (1, 0)
    out = stats.normalise(np.array([[3.0, 10.0], [1.0, 11.0]]), clip=10.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[2.0, 0.0], [0.0, 10.0]], rtol=1e-6)  # 1/sqrt(1e-8) -> 10


def test_reward_scaler_divides_by_the_std_of_discounted_returns_and_restarts_them() -> None:
    scaler = RewardScaler(num_envs=2, gamma=0.5, clip=10.0)
    rewards = [np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1.0, 2.0])]
    ends = [np.array([False, True]), np.array([False, False]), np.array([False, False])]
    seen = []
    for reward, end in zip(rewards, ends, strict=True):
        scaled = scaler(reward, end)
        seen.append(scaler.returns.copy())
        # env 1's return restarts after its episode end; env 0's keeps discounting
    assert seen[0].tolist() == [1.0, 0.0]
    assert seen[1].tolist() == [1.5, 2.0]
    assert seen[2].tolist() == [1.75, 3.0]
    returns_fed = np.array([1.0, 2.0, 1.5, 2.0, 1.75, 3.0])
    np.testing.assert_allclose(scaled, np.array([1.0, 2.0]) / returns_fed.std(), rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# networks


def test_orthogonal_init_gains_zero_biases_and_unit_std() -> None:
    torch.manual_seed(0)
    net = ActorCritic(obs_dim=11, act_dim=3, hidden_size=64)

    def gram(weight: torch.Tensor) -> torch.Tensor:  # the smaller side's Gram matrix
        return weight @ weight.T if weight.shape[0] <= weight.shape[1] else weight.T @ weight

    for body, head_gain in ((net.actor_mean, 0.01), (net.critic, 1.0)):
        linears = [m for m in body if isinstance(m, torch.nn.Linear)]
        assert [layer.out_features for layer in linears[:2]] == [64, 64]
        assert all(isinstance(m, torch.nn.Tanh) for m in body if not isinstance(m, torch.nn.Linear))
        for layer, gain in zip(linears, (math.sqrt(2.0), math.sqrt(2.0), head_gain), strict=True):
            g = gram(layer.weight.detach())
            assert torch.allclose(g, gain**2 * torch.eye(len(g)), atol=1e-5 * max(1.0, gain**2))
            assert torch.count_nonzero(layer.bias) == 0
    assert torch.count_nonzero(net.actor_log_std) == 0  # std 1, independent of the state
    means = net.actor_mean(torch.randn(256, 11))
    assert means.abs().max() < 0.1  # the 0.01 head: the initial policy is nearly centred


# ---------------------------------------------------------------------------------------------
# the agent


def make_agent(total_steps: int = 300, **changes: object) -> PPOAgent:
    config, _ = resolve_config(PPOConfig, "InvertedPendulum", "tiny", dict(changes))
    return PPOAgent(ENV, config, seed=0, total_steps=total_steps)


def test_a_time_limit_bootstraps_from_the_final_observation() -> None:
    agent = make_agent(ppo_num_envs=1, ppo_num_steps=8)
    agent.begin()
    limit = agent.envs.envs[0]
    while not hasattr(limit, "_max_episode_steps"):
        limit = limit.env
    limit._max_episode_steps = 3  # the pendulum cannot fall within 3 steps from its start
    finals = []
    step = agent.envs.step

    def spying_step(actions: np.ndarray):  # noqa: ANN202
        result = step(actions)
        finals.append(result[4].get("final_obs"))
        return result

    agent.envs.step = spying_step
    # stop right after the second time limit, so the normaliser is as it was at that step
    value_after = agent.collect(6, [])
    rollout = agent.rollout
    assert rollout.truncated[:6, 0].tolist() == [0, 0, 1, 0, 0, 1]
    assert rollout.terminated[:6, 0].tolist() == [0] * 6
    final = agent.obs_stats.normalise(finals[5][0][None], 10.0)
    with torch.no_grad():
        expected = agent.model.value(torch.as_tensor(final))
    assert rollout.truncation_values[5, 0].item() == pytest.approx(expected.item(), abs=1e-6)
    # what follows a time limit is the new episode's first state, whose value differs
    assert abs(rollout.truncation_values[5, 0].item() - value_after.item()) > 1e-4


def test_evaluation_does_not_move_the_normaliser() -> None:
    agent = make_agent()
    agent.begin()
    agent.collect(20, [])
    before = agent.obs_stats.state_dict()
    [returns] = agent.evaluate()  # seed 0, the only one
    after = agent.obs_stats.state_dict()
    assert len(returns) == 1 and returns[0] > 0
    assert before["count"] == after["count"]
    np.testing.assert_array_equal(before["mean"], after["mean"])


def run_in_process(root: Path, steps: int, overrides: list[str]) -> list[dict[str, str]]:
    run_training(RunSpec(ENV, "ppo", 0, steps, root, preset="tiny", overrides=overrides))
    return progress_rows(root)


def test_rows_fall_at_the_first_rollout_end_after_each_epoch_and_at_the_end(tmp_path) -> None:
    # rollouts of 2 envs x 30 steps end at 60, 120, 180, 240, then 50 steps remain: a
    # shortened rollout of 25 steps per env ends the run at 290
    rows = run_in_process(tmp_path / "run", 290, ["ppo_num_steps=30"])
    assert [int(row["env_step"]) for row in rows] == [120, 240, 290]
    assert [int(row["epoch"]) for row in rows] == [1, 2, 2]
    # an odd remainder is rounded up to a whole step of every env
    rows = run_in_process(tmp_path / "odd", 105, ["ppo_num_steps=50"])
    assert [int(row["env_step"]) for row in rows] == [100, 106]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run("ppo", tmp_path_factory.mktemp("ppo"))


def test_tiny_run_writes_the_shared_columns(finished_run: Path) -> None:
    rows = progress_rows(finished_run)
    assert list(rows[0]) == list(PROGRESS_COLUMNS)
    assert [int(row["env_step"]) for row in rows] == [100, 200, 300]
    for row in rows:
        for key in ("critic_loss", "actor_loss", "eval_return_mean", "train_return"):
            assert math.isfinite(float(row[key])), key
        for key in ("t_env", "t_policy", "t_eval"):
            assert float(row[key]) > 0, key
        empty = ["alpha", "model_loss_train", "model_shift", "delta", "t_model_phase1"]
        assert all(row[key] == "" for key in empty)
    assert float(rows[0]["critic_loss"]) > 0


def test_tiny_run_resumes_exactly(finished_run: Path, tmp_path: Path) -> None:
    assert_resume_reproduces("ppo", finished_run, tmp_path)


# ---------------------------------------------------------------------------------------------
# config


def test_ppo_takes_the_task_epoch_length_and_none_of_the_off_policy_settings() -> None:
    config, deviations = resolve_config(PPOConfig, "InvertedPendulum", "paper", {})
    assert config.epoch_length == 250 and deviations == {}
    assert (config.ppo_num_steps, config.ppo_num_minibatches, config.ppo_epochs) == (2048, 32, 10)
    with pytest.raises(UsageError, match="no such setting"):
        parse_overrides(["replay_size=10"], PPOConfig)
    assert parse_overrides(["ppo.clip=0.3"], PPOConfig) == {"ppo_clip": 0.3}
    PPOConfig().validate()


@pytest.mark.parametrize(
    ("pair", "needle"),
    [
        ("ppo_num_minibatches=0", "ppo_num_minibatches must be positive"),
        ("ppo_num_steps=-5", "ppo_num_steps must be positive"),
        ("ppo_clip=0", "ppo_clip must be positive"),
        ("ppo_lr=-1e-4", "ppo_lr must be positive"),
        ("ppo_gae_lambda=1.5", "ppo_gae_lambda must lie in [0, 1]"),
        ("gamma=0", "gamma must lie in (0, 1]"),
        ("ppo_entropy_coef=-0.1", "ppo_entropy_coef must be >= 0"),
        ("ppo_num_minibatches=5000", "cannot exceed the rollout size"),
        ("ppo_clip_value_loss=maybe", "not a valid bool"),
        ("updates_per_step=3", "no such setting"),
    ],
)
def test_bad_settings_exit_2_with_one_line(tmp_path: Path, pair: str, needle: str) -> None:
    args = ["train", "--env", ENV, "--algo", "ppo", "--steps", "100", "--quiet"]
    result = usbpo_inproc(*args, "--set", pair, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_every_observation_the_policy_sees_is_folded_into_the_normaliser() -> None:
    """The normaliser's mean and variance are those of every raw observation observed so far
    (the first reset's included) plus its prior (pseudo-count 1e-4 at mean 0, variance 1),
    computed here in one pass over all of them rather than batch by batch."""
    agent = make_agent(ppo_num_envs=2, ppo_num_steps=16)
    seen: list[np.ndarray] = []
    observe = agent.observe

    def recording_observe(raw_obs: np.ndarray) -> torch.Tensor:
        seen.append(np.array(raw_obs, dtype=np.float64))
        return observe(raw_obs)

    agent.observe = recording_observe
    agent.begin()
    agent.collect(12, [])
    rows = np.concatenate(seen)
    assert rows.shape == (2 * 13, agent.obs_stats.mean.shape[0])  # the reset, then 12 steps
    prior = 1e-4
    total = prior + len(rows)
    mean = rows.sum(0) / total  # the prior's mass sits at 0
    var = (prior * (1.0 + mean**2) + ((rows - mean) ** 2).sum(0)) / total
    np.testing.assert_allclose(agent.obs_stats.mean, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(agent.obs_stats.var, var, rtol=1e-9, atol=1e-12)
    assert agent.obs_stats.count == pytest.approx(total, rel=1e-12)


def _first_eval_state(seed: int) -> np.ndarray:
    config, _ = resolve_config(PPOConfig, "InvertedPendulum", "tiny", {"eval_episodes": 1})
    agent = PPOAgent(ENV, config, seed=seed, total_steps=300)
    agent.begin()
    states = []
    reset = agent.eval_env.reset

    def recording_reset(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        result = reset(*args, **kwargs)
        states.append(np.array(result[0]))
        return result

    agent.eval_env.reset = recording_reset
    agent.evaluate()
    return states[0]


def test_the_evaluation_env_is_seeded_from_the_run_seed() -> None:
    """Evaluation episodes start where the seed says (the eval env is seeded with seed +
    10000 at the start), so two runs of one seed evaluate on the same start states; an
    unseeded eval env would draw them from the OS's entropy."""
    first, again, other = _first_eval_state(0), _first_eval_state(0), _first_eval_state(1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # plain gymnasium: an env reset once with seed 10000, then reset again for the episode
    plain = gymnasium.make(ENV)
    plain.reset(seed=10_000)
    np.testing.assert_array_equal(first, plain.reset()[0])


def test_ppo_validation_includes_every_agents_checks() -> None:
    with pytest.raises(UsageError, match="epoch_length"):
        PPOConfig(epoch_length=0).validate()
    with pytest.raises(UsageError, match="eval_episodes"):
        PPOConfig(eval_episodes=-1).validate()


def test_train_returns_are_the_summed_rewards_of_each_finished_episode() -> None:
    """Episode returns computed here from the rewards and episode ends the envs hand back
    (short time limits, so several episodes end in each env) equal what the agent logs."""
    agent = make_agent(ppo_num_envs=2, ppo_num_steps=40)
    agent.begin()
    for env in agent.envs.envs:
        limit = env
        while not hasattr(limit, "_max_episode_steps"):
            limit = limit.env
        limit._max_episode_steps = 7
    running, expected = np.zeros(2), []
    step = agent.envs.step

    def recording_step(actions: np.ndarray):  # noqa: ANN202
        result = step(actions)
        running[:] += result[1] * 0.5 + 0.25  # rewards reshaped below, to tell +1 from 1 step
        for i in np.flatnonzero(result[2] | result[3]):
            expected.append(float(running[i]))
            running[i] = 0.0
        return result[0], result[1] * 0.5 + 0.25, *result[2:]

    agent.envs.step = recording_step
    logged: list[float] = []
    agent.collect(40, logged)
    assert len(expected) >= 8
    assert logged == pytest.approx(expected, abs=1e-9)


def test_rows_report_wall_time_as_elapsed_time(tmp_path: Path) -> None:
    start = time.perf_counter()
    rows = run_in_process(tmp_path / "run", 290, ["ppo_num_steps=30"])
    elapsed = time.perf_counter() - start
    times = [float(row["wall_time_s"]) for row in rows]
    assert 0 < times[0] <= times[1] <= times[2] <= elapsed


def test_progress_is_reported_at_rollout_ends_between_rows(tmp_path: Path) -> None:
    """Rollouts of 2 x 30 steps end at 60, 120, 180, 240, 290; rows fall at 120, 240 and 290
    (epoch 100), so the ends at 60 and 180 are reported as progress without a row."""
    agent = make_agent(total_steps=290, ppo_num_steps=30)
    calls: list[tuple] = []

    class Discard:
        def write(self, row: dict) -> None:
            pass

    agent.train(Discard(), lambda step, phase, row: calls.append((step, phase, row)))
    progress = {step for step, phase, row in calls if phase is None and row is None}
    assert {60, 180} <= progress


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({"gamma": 1.0}, True),
        ({"gamma": 1.5}, False),
        ({"ppo_gae_lambda": 0.0}, True),
        ({"ppo_gae_lambda": 1.0}, True),
        ({"ppo_gae_lambda": 1.1}, False),
        ({"ppo_num_envs": 1, "ppo_num_steps": 4, "ppo_num_minibatches": 4}, True),
        ({"ppo_num_envs": 1, "ppo_num_steps": 4, "ppo_num_minibatches": 5}, False),
    ],
)
def test_validation_bounds_are_inclusive_where_the_maths_allows(changes: dict, ok: bool) -> None:
    """gamma = 1 (undiscounted) and lambda in {0, 1} are valid GAE; one row per minibatch is
    the most minibatches a rollout can make."""
    assert_validation(PPOConfig(**changes), ok)


def test_a_checkpoint_of_another_env_count_is_refused() -> None:
    one = make_agent(ppo_num_envs=1)
    one.begin()
    two = make_agent(ppo_num_envs=2)
    two.begin()
    with pytest.raises(ValueError):
        two.load_state_dict(one.state_dict())


def test_reward_scaling_survives_a_zero_variance() -> None:
    """The epsilon under the square root is what keeps a zero variance finite: statistics of
    a long run of equal discounted returns (variance 0), then that same return again, leave
    the variance 0, and the reward r is divided by sqrt(0 + 1e-8): r * 1e4."""
    scaler = RewardScaler(1, 0.99, 10.0)
    reward = 1e-5
    scaler.load_state_dict(
        {
            "returns": np.zeros(1),
            "stats": {"mean": np.array(reward), "var": np.array(0.0), "count": 1e12},
        }
    )
    scaled = scaler(np.array([reward]), np.array([False]))
    assert scaler.stats.var == 0.0
    assert scaled[0] == pytest.approx(reward * 1e4, rel=1e-5)
