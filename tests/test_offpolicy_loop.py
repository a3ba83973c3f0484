"""The off-policy loop (agents/offpolicy.py) against the environment's own record: every real
transition stored as gymnasium returned it (the next state before any reset, done only when
the episode terminated, never when it was cut by the time limit), uniform random actions from
the seed's own generator before learning starts, learning on every step after, and each row's
training return the mean of the episodes that ended since the row before."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch

from baselines.model_free import ModelFreeAgent, SACConfig
from usbpo_cli.agents.base import no_report
from usbpo_cli.agents.offpolicy import OffPolicyAgent
from usbpo_cli.runs.config import resolve_config

ENV = "InvertedPendulum-v4"
INITIAL, TOTAL, EPOCH, TIME_LIMIT = 30, 75, 25, 6


class Recorder:
    """Wraps an env's step and reset, keeping what gymnasium returned."""

    def __init__(self, env: Any) -> None:
        self.env, self.steps, self.resets = env, [], []
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
            self.steps.append((before, np.array(action), reward, self.obs, terminated, truncated))
            return obs, reward, terminated, truncated, info

        env.reset, env.step = recorded_reset, recorded_step


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def write(self, row: dict) -> None:
        self.rows.append(row)


@pytest.fixture(scope="module")
def trained() -> tuple[OffPolicyAgent, Recorder, list[int], torch.Tensor, list[dict], dict]:
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
    seen: dict[str, list] = {"hook": [], "reports": []}
    agent.after_env_step = lambda *transition: seen["hook"].append(transition)
    stream = torch.Generator().manual_seed(0)
    stream.set_state(agent.generators[0].get_state())  # the seed's stream as training starts
    rows = Rows()
    agent.train(rows, lambda *report: seen["reports"].append(report))
    return agent, recorder, learned, stream, rows.rows, seen


def test_every_transition_is_stored_as_gymnasium_returned_it(trained) -> None:
    agent, recorder, *_ = trained
    steps = recorder.steps
    assert len(steps) == TOTAL
    terminated = [s[4] for s in steps]
    truncated = [s[5] and not s[4] for s in steps]
    assert any(terminated) and any(truncated), "the test needs both kinds of episode end"
    buffer = agent.real_buffer
    assert len(buffer) == TOTAL
    for i, (obs, action, reward, next_obs, ended, _) in enumerate(steps):
        assert np.array_equal(buffer.obs[i].numpy(), obs), f"obs of step {i}"
        assert np.allclose(buffer.act[i].numpy(), action.ravel()), f"action of step {i}"
        assert buffer.rew[i].item() == pytest.approx(reward), f"reward of step {i}"
        assert np.array_equal(buffer.next_obs[i].numpy(), next_obs), f"next obs of step {i}"
        assert buffer.done[i].item() == float(ended), f"done of step {i} (cut: {truncated[i]})"


def test_an_episode_that_ends_either_way_starts_again_from_a_reset(trained) -> None:
    _, recorder, *_ = trained
    starts = {at: obs for at, obs in recorder.resets}
    for i, (obs, *_rest) in enumerate(recorder.steps):
        if i == 0 or recorder.steps[i - 1][4] or recorder.steps[i - 1][5]:
            assert i in starts and np.array_equal(obs, starts[i]), f"step {i} follows a reset"
        else:
            assert i not in starts and np.array_equal(obs, recorder.steps[i - 1][3])


def test_random_actions_come_from_the_seeds_stream_then_learning_runs_every_step(trained) -> None:
    agent, recorder, learned, stream, *_ = trained
    low, high = agent.act_low, agent.act_high
    for i in range(INITIAL):
        expected = low + torch.rand(agent.act_dim, generator=stream) * (high - low)
        assert np.allclose(recorder.steps[i][1].ravel(), expected.numpy()), f"step {i}"
    # from then on the policy acts (its own noise draw takes the stream's next numbers)
    uniform = low + torch.rand(agent.act_dim, generator=stream) * (high - low)
    assert not np.allclose(recorder.steps[INITIAL][1].ravel(), uniform.numpy())
    assert learned == list(range(INITIAL, TOTAL))


def test_the_transition_hook_sees_every_step_before_any_reset(trained) -> None:
    _, recorder, *_, seen = trained
    assert len(seen["hook"]) == TOTAL
    for i, ((obs, action, reward, next_obs, *_), hooked) in enumerate(
        zip(recorder.steps, seen["hook"])
    ):
        assert np.array_equal(hooked[0].numpy(), obs) and hooked[2] == pytest.approx(reward)
        assert np.allclose(hooked[1].numpy(), action.ravel())
        assert np.array_equal(hooked[3].numpy(), next_obs), f"step {i}"


def test_progress_is_reported_every_50_steps_between_rows(trained) -> None:
    *_, seen = trained
    between = [step for step, phase, last in seen["reports"] if phase is None and last is None]
    # steps 0 and 50 are not row steps (rows at 25, 50 and 75 env steps done)
    assert between == [1, 51]


def test_a_short_runs_replay_buffer_holds_its_steps_and_no_more(trained) -> None:
    agent, *_ = trained
    assert agent.config.replay_size > TOTAL
    assert agent.real_buffer.capacity == TOTAL


def test_each_row_reports_the_episodes_that_ended_since_the_last(trained) -> None:
    _, recorder, _, _, rows, _ = trained
    assert [row["env_step"] for row in rows] == [25, 50, 75]
    ended: list[list[float]] = [[] for _ in rows]
    episode = 0.0
    for i, (_, _, reward, _, terminated, truncated) in enumerate(recorder.steps):
        episode += reward
        if terminated or truncated:
            ended[i // EPOCH].append(episode)
            episode = 0.0
    for row, returns in zip(rows, ended):
        expected = float(np.mean(returns)) if returns else None
        assert row["train_return"] == pytest.approx(expected)


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
