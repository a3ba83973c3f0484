"""CMLO at agent level: which states feed the prediction error and the coverage hull (across the
ring buffer's seam), and when rollouts happen (every env step, as the authors' code, or MBPO's
schedule), each checked against hand values on constructed states."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from baselines.cmlo import CMLOAgent, CMLOConfig
from usbpo_cli.runs.config import resolve_config

ENV = "InvertedPendulum-v4"  # obs 4 dims, action 1


def make_agent(**overrides) -> CMLOAgent:
    config, _ = resolve_config(CMLOConfig, "InvertedPendulum", "tiny", overrides)
    return CMLOAgent(ENV, config, seed=0, total_steps=1000)


def set_member_deltas(agent: CMLOAgent, deltas: list[list[float]]) -> None:
    """Member m predicts next_obs - obs = deltas[m] on every input (reward 0)."""
    last = agent.model.net.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        for member, delta in enumerate(deltas):
            last.bias[member, 0, 1 : 1 + agent.obs_dim] = torch.tensor(delta)


def test_prediction_error_is_the_elites_mean_l2_error_on_the_real_transition() -> None:
    """bias term: mean over the elites of ||s + delta_e - s'||; non-elites are not asked."""
    agent = make_agent()
    agent.trigger.last_update = 0  # a model exists
    members = agent.model.ensemble_size
    deltas = [[100.0, 100.0, 100.0, 100.0]] * members  # non-elites: absurd
    agent.model.elites.copy_(torch.tensor([1, 3, 4, 5, 6][: agent.model.num_elites]))
    elites = agent.model.elites[0].tolist()
    exact = [3.0, 4.0, 0.0, 0.0]  # the real change
    off = [0.0, 0.0, 0.0, 0.0]  # an error of 5
    for k, member in enumerate(elites):
        deltas = deltas[:member] + [exact if k % 2 == 0 else off] + deltas[member + 1 :]
    set_member_deltas(agent, deltas)
    obs = torch.tensor([0.1, -0.2, 0.3, 0.0])
    next_obs = obs + torch.tensor(exact)  # the real step
    agent.after_env_step(obs, torch.tensor([0.5]), 1.0, next_obs)
    wrong = sum(1 for k in range(len(elites)) if k % 2 == 1)
    assert agent.trigger.error_count == 1
    assert agent.trigger.error_sum == pytest.approx(5.0 * wrong / len(elites), rel=1e-5)


def test_no_error_is_observed_before_the_first_model() -> None:
    agent = make_agent()
    obs = torch.zeros(agent.obs_dim)
    agent.after_env_step(obs, torch.zeros(1), 0.0, obs + 1.0)
    assert agent.trigger.error_count == 0 and agent.trigger.error_sum == 0.0


def test_coverage_reads_the_most_recent_states_across_the_ring_seam() -> None:
    """The newest 8 states are the corners of a cube of side 2 (volume 8 in its own PCA
    projection); older states are far away, so reading any of them changes the volume. With
    capacity 20 and 27 states added, the newest 8 sit in slots 19 and 0..6."""
    agent = make_agent(replay_size=20, cmlo_hull_states=8)
    gen = torch.Generator().manual_seed(0)
    for _ in range(19):
        far = torch.randn(agent.obs_dim, generator=gen) * 100
        agent.real_buffer.add(far, torch.zeros(1), 0.0, far, 0.0)
    for corner in itertools.product((-1.0, 1.0), repeat=3):
        state = torch.tensor([*corner, 0.0])
        agent.real_buffer.add(state, torch.zeros(1), 0.0, state, 0.0)
    assert agent.real_buffer.pointer == 7 and len(agent.real_buffer) == 20
    assert agent.coverage() == pytest.approx(8.0, rel=1e-6)


def test_the_event_sum_adds_log_of_ratio_times_bias_plus_one_at_each_compute_interval() -> None:
    """Hand value: coverage 8 at the update, 27 (side 3) at the interval end, mean error 0.5:
    log(27 / 8 * 0.5 + 1) is added once, at exactly `compute_interval` steps after it."""
    agent = make_agent(cmlo_hull_states=8, cmlo_compute_interval=20)
    agent.trigger.updated(100, 8.0)
    agent.trigger.observe_error(0.25)
    agent.trigger.observe_error(0.75)
    calls: list[int] = []
    agent.fit_model = lambda step: calls.append(step)  # the trigger must not fire here
    agent.rollout = lambda step, starts=None: 0
    agent.update_policy = lambda updates: None
    for corner in itertools.product((-1.5, 1.5), repeat=3):
        state = torch.tensor([*corner, 0.0])
        agent.real_buffer.add(state, torch.zeros(1), 0.0, state, 0.0)
    for step in range(101, 120):
        agent.learn(step)
    assert agent.trigger.event_sum == 0.0
    agent.learn(120)
    assert agent.trigger.event_sum == pytest.approx(math.log(27.0 / 8.0 * 0.5 + 1.0), rel=1e-6)
    assert calls == []


def rollout_calls(agent: CMLOAgent, steps: range) -> list[tuple[int, int | None]]:
    """(step, start states) of every rollout while the loop learns at `steps`, with model
    training, rollouts and policy updates replaced by recorders."""
    calls: list[tuple[int, int | None]] = []
    agent.fit_model = lambda step: None
    agent.coverage = lambda: 1.0
    agent.rollout = lambda step, starts=None: calls.append((step, starts)) or 0
    agent.update_policy = lambda updates: None
    for step in steps:
        agent.learn(step)
    return calls


def test_rollouts_start_every_env_step_once_a_model_exists() -> None:
    agent = make_agent()  # tiny: initial_steps 100, model_train_freq 50
    calls = rollout_calls(agent, range(100, 160))
    assert calls == [(step, 400) for step in range(100, 160)]


def test_mbpos_rollout_schedule_is_an_option() -> None:
    agent = make_agent(cmlo_rollout_every_step=False)
    calls = rollout_calls(agent, range(100, 260))
    assert calls == [(100, None), (150, None), (200, None), (250, None)]


def test_model_buffer_holds_the_retained_epochs_of_per_step_rollouts() -> None:
    """retain epochs x rollout length x starts per step x steps per epoch."""
    agent = make_agent(model_retain_epochs=2, epoch_length=100, cmlo_rollout_batch_size=30)
    assert agent.model_capacity(3) == 2 * 3 * 30 * 100
    mbpo_like = make_agent(cmlo_rollout_every_step=False, model_retain_epochs=2, epoch_length=100)
    c = mbpo_like.config
    assert mbpo_like.model_capacity(3) == 2 * 3 * c.rollout_batch_size * 100 // 50
