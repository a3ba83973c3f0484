"""The off-policy loop (agents/offpolicy.py) against the environment's own record: every real
transition stored as gymnasium returned it (the next state before any reset, done only when
the episode terminated, never when it was cut by the time limit), uniform random actions from
the seed's own generator before learning starts, learning on every step after, and each row's
training return the mean of the episodes that ended since the row before."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from baselines.model_free import ModelFreeAgent, SACConfig
from usbpo_cli.agents.base import no_report
from usbpo_cli.agents.offpolicy import OffPolicyAgent
from usbpo_cli.runs.config import resolve_config

ENV = "InvertedPendulum-v4"
INITIAL, TOTAL, EPOCH, TIME_LIMIT = 30, 75, 25, 6


class Step(NamedTuple):
    """One env step as gymnasium returned it (`obs` is the state the step started from)."""

    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    terminated: bool
    truncated: bool

    @property
    def ended(self) -> bool:
        return self.terminated or self.truncated


class Recorder:
    """Wraps an env's step and reset, keeping what gymnasium returned."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.steps: list[Step] = []
        self.resets: list[tuple[int, np.ndarray]] = []  # (steps taken before it, its state)
        self.obs: np.ndarray | None = None
        step, reset = env.step, env.reset

        def recorded_reset(**kwargs: Any) -> tuple:
            obs, info = reset(**kwargs)
            self.obs = np.asarray(obs, dtype=np.float32)
            self.resets.append((len(self.steps), self.obs))
            return obs, info

        def recorded_step(action: np.ndarray) -> tuple:
            before = self.obs
            obs, reward, terminated, truncated, info = step(action)
            self.obs = np.asarray(obs, dtype=np.float32)
            self.steps.append(
                Step(before, np.array(action), reward, self.obs, terminated, truncated)
            )
            return obs, reward, terminated, truncated, info

        env.reset, env.step = recorded_reset, recorded_step


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def write(self, row: dict) -> None:
        self.rows.append(row)


class Trained(NamedTuple):
    """A short SAC run and everything recorded about it."""

    agent: OffPolicyAgent
    recorder: Recorder
    learned: list[int]  # the steps `learn` was called at
    stream: torch.Generator  # the seed's generator as training started
    rows: list[dict]
    hooked: list[tuple]  # the arguments of every `after_env_step` call
    reports: list[tuple]  # the arguments of every progress report
    took: float  # wall seconds the whole `train` call took


@pytest.fixture(scope="module")
def trained() -> Trained:
    config, _ = resolve_config(
        SACConfig,
        "InvertedPendulum",
        "tiny",
        {"initial_steps": INITIAL, "epoch_length": EPOCH, "eval_episodes": 1, "batch_size": 8},
    )
    agent = ModelFreeAgent(ENV, config, seed=3, total_steps=TOTAL)
    # make_env's outermost layer is gymnasium's TimeLimit: short episodes, so that some are
    # cut by it and others terminate
    agent.env._max_episode_steps = TIME_LIMIT
    recorder = Recorder(agent.env)
    learned: list[int] = []
    learn = agent.learn

    def counted_learn(step: int) -> None:
        learned.append(step)
        learn(step)

    agent.learn = counted_learn
    hooked: list[tuple] = []
    reports: list[tuple] = []
    agent.after_env_step = lambda *transition: hooked.append(transition)
    stream = torch.Generator().manual_seed(0)
    stream.set_state(agent.generators[0].get_state())
    rows = Rows()
    began = time.perf_counter()
    agent.train(rows, lambda *report: reports.append(report))
    took = time.perf_counter() - began
    return Trained(agent, recorder, learned, stream, rows.rows, hooked, reports, took)


def test_every_transition_is_stored_as_gymnasium_returned_it(trained: Trained) -> None:
    steps = trained.recorder.steps
    assert len(steps) == TOTAL
    cut = [step.truncated and not step.terminated for step in steps]
    assert any(s.terminated for s in steps) and any(cut), "the test needs both kinds of end"
    buffer = trained.agent.real_buffer
    assert len(buffer) == TOTAL
    for i, step in enumerate(steps):
        assert np.array_equal(buffer.obs[i].numpy(), step.obs), f"obs of step {i}"
        assert np.allclose(buffer.act[i].numpy(), step.action.ravel()), f"action of step {i}"
        assert buffer.rew[i].item() == pytest.approx(step.reward), f"reward of step {i}"
        assert np.array_equal(buffer.next_obs[i].numpy(), step.next_obs), f"next obs of step {i}"
        assert buffer.done[i].item() == float(step.terminated), f"done of step {i} (cut: {cut[i]})"


def test_an_episode_that_ends_either_way_starts_again_from_a_reset(trained: Trained) -> None:
    steps = trained.recorder.steps
    starts = dict(trained.recorder.resets)
    for i, step in enumerate(steps):
        if i == 0 or steps[i - 1].ended:
            assert i in starts and np.array_equal(step.obs, starts[i]), f"step {i} follows a reset"
        else:
            assert i not in starts and np.array_equal(step.obs, steps[i - 1].next_obs)


def test_random_actions_come_from_the_seeds_stream_then_learning_runs_every_step(
    trained: Trained,
) -> None:
    agent, steps, stream = trained.agent, trained.recorder.steps, trained.stream
    low, high = agent.act_low, agent.act_high
    for i in range(INITIAL):
        expected = low + torch.rand(agent.act_dim, generator=stream) * (high - low)
        assert np.allclose(steps[i].action.ravel(), expected.numpy()), f"step {i}"
    # from then on the policy acts (its own noise draw takes the stream's next numbers)
    uniform = low + torch.rand(agent.act_dim, generator=stream) * (high - low)
    assert not np.allclose(steps[INITIAL].action.ravel(), uniform.numpy())
    assert trained.learned == list(range(INITIAL, TOTAL))


def test_the_transition_hook_sees_every_step_before_any_reset(trained: Trained) -> None:
    assert len(trained.hooked) == TOTAL
    for i, (step, (obs, action, reward, next_obs)) in enumerate(
        zip(trained.recorder.steps, trained.hooked)
    ):
        assert np.array_equal(obs.numpy(), step.obs) and reward == pytest.approx(step.reward)
        assert np.allclose(action.numpy(), step.action.ravel())
        assert np.array_equal(next_obs.numpy(), step.next_obs), f"step {i}"


def test_progress_is_reported_every_50_steps_between_rows(trained: Trained) -> None:
    between = [step for step, phase, last in trained.reports if phase is None and last is None]
    # steps 0 and 50 are not row steps (rows at 25, 50 and 75 env steps done)
    assert between == [1, 51]


def test_a_short_runs_replay_buffer_holds_its_steps_and_no_more(trained: Trained) -> None:
    assert trained.agent.config.replay_size > TOTAL
    assert trained.agent.real_buffer.capacity == TOTAL


def test_each_row_reports_the_episodes_that_ended_since_the_last(trained: Trained) -> None:
    assert [row["env_step"] for row in trained.rows] == [25, 50, 75]
    ended: list[list[float]] = [[] for _ in trained.rows]
    episode = 0.0
    for i, step in enumerate(trained.recorder.steps):
        episode += step.reward
        if step.ended:
            ended[i // EPOCH].append(episode)
            episode = 0.0
    for row, returns in zip(trained.rows, ended):
        expected = float(np.mean(returns)) if returns else None
        assert row["train_return"] == pytest.approx(expected)


def test_a_new_runs_clock_starts_at_zero(trained: Trained) -> None:
    """Each row's wall time is the time since the run began: increasing, and within the time
    the whole training call took."""
    times = [row["wall_time_s"] for row in trained.rows]
    assert 0.0 < times[0] and times == sorted(times)
    assert times[-1] <= trained.took


def two_seed_agent(env: str, family: str, total: int) -> ModelFreeAgent:
    config, _ = resolve_config(
        SACConfig, family, "tiny", {"initial_steps": 100, "eval_episodes": 0}
    )
    return ModelFreeAgent(env, config, seed=[3, 4], total_steps=total)


def test_two_seeds_act_each_with_its_own_policy() -> None:
    # Hopper: three action dims, so a seed's action cannot pass for a squeezed axis
    config, _ = resolve_config(SACConfig, "Hopper", "tiny", {})
    pair = two_seed_agent("Hopper-v4", "Hopper", 100)
    lone = [ModelFreeAgent("Hopper-v4", config, seed=s, total_steps=100) for s in (3, 4)]
    obs = np.random.default_rng(0).normal(size=(2, pair.obs_dim)).astype(np.float32)
    actions = pair.act_deterministic_seeds(obs)
    assert not np.allclose(lone[0].act_deterministic(obs[1]), lone[1].act_deterministic(obs[1]))
    for s, agent in enumerate(lone):
        assert np.allclose(actions[s], agent.act_deterministic(obs[s]), atol=1e-6)
    assert pair.act_seeds(torch.as_tensor(obs)).shape == (2, 3)  # what the loop steps with


def test_seeds_trained_together_continue_their_clock_after_a_resume() -> None:
    agent = two_seed_agent(ENV, "InvertedPendulum", 25)
    agent.begin()
    for loop in agent.loops:
        loop.wall_time_s = 100.0  # as a checkpoint taken 100 s into each seed's run leaves it
    rows = [Rows(), Rows()]
    began = time.perf_counter()
    agent.train(rows, [no_report] * 2, [None] * 2)
    took = time.perf_counter() - began
    for seed_rows in rows:
        # each seed's clock is its share of the process's: 100 s, then half of this stretch
        assert 100.0 <= seed_rows.rows[-1]["wall_time_s"] <= 100.0 + took / 2 + 1e-6
