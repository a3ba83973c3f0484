"""CMLO behaviours the other CMLO tests left open (found by mutation testing), each pinned by a
hand value: empty point sets have no hull volume; compute intervals count from the last update
only (none before the first, and every step when the interval is 1); a trigger that knows no
coverage at an update takes the ratio as 1; the prediction error is that of the model's
prediction on the real (s, a) pair itself; every learning step updates the policy; and a row
with two model updates shows the last one's step and event sum."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cli_helpers import assert_seeds_run_one_per_process, assert_validation  # tests/ is on sys.path

from baselines.cmlo import CMLOAgent, CMLOConfig, EventTrigger, hull_volume
from usbpo_cli.runs.config import resolve_config

ENV = "InvertedPendulum-v4"  # obs 4 dims, action 1


def make_agent(**overrides) -> CMLOAgent:
    config, _ = resolve_config(CMLOConfig, "InvertedPendulum", "tiny", overrides)
    return CMLOAgent(ENV, config, seed=0, total_steps=1000)


def fire_steps(trigger: EventTrigger, steps: int, error: float) -> list[int]:
    """Drive the trigger as the agent does (error, coverage at an interval's end with a constant
    volume, then the rule); the steps at which the model was updated."""
    fired = []
    for step in range(steps):
        if trigger.last_update is not None:
            trigger.observe_error(error)
        if trigger.coverage_due(step):
            trigger.observe_coverage(1.0)
        if trigger.should_update(step):
            fired.append(step)
            trigger.updated(step, 1.0)
    return fired


# ---------------------------------------------------------------------------------------------
# hull volume


@pytest.mark.parametrize("dims", [0, 1, 2, 3, 4])
def test_an_empty_point_set_has_no_volume(dims: int) -> None:
    """The hull of no points is empty: volume (length, area) 0 in any dimension."""
    assert hull_volume(np.empty((0, dims))) == 0.0


# ---------------------------------------------------------------------------------------------
# the trigger


def test_no_compute_interval_ends_before_the_first_update() -> None:
    """Intervals count from the last update: with none yet, no step ends one."""
    trigger = EventTrigger(alpha=1.0, compute_interval=5, min_interval=0, max_interval=100)
    assert not any(trigger.coverage_due(step) for step in range(-10, 50))
    trigger.updated(7, 1.0)
    assert [s for s in range(50) if trigger.coverage_due(s)] == [12, 17, 22, 27, 32, 37, 42, 47]


def test_a_compute_interval_of_one_adds_a_term_every_step_after_an_update() -> None:
    """Interval 1, each term 0.4, alpha 1, no minimum: the sum is 0.4, 0.8, 1.2 one, two,
    three steps after an update, so the model retrains every third step."""
    trigger = EventTrigger(alpha=1.0, compute_interval=1, min_interval=0, max_interval=100)
    assert fire_steps(trigger, 10, error=math.exp(0.4) - 1.0) == [0, 3, 6, 9]
    trigger.updated(20, 1.0)
    assert [trigger.coverage_due(s) for s in (20, 21, 22)] == [False, True, True]


def test_a_trigger_that_knows_no_coverage_at_the_update_takes_the_ratio_as_one() -> None:
    """Built as if updated at step 0 but with no coverage known then (as a fresh trigger): the
    term is log(1 * bias + 1), whatever the volume now, as for a zero volume then."""
    trigger = EventTrigger(alpha=1.0, compute_interval=10, last_update=0)
    trigger.observe_error(1.0)
    assert trigger.coverage_due(10)
    assert trigger.observe_coverage(5.0) == pytest.approx(math.log(2.0))
    assert trigger.event_sum == pytest.approx(math.log(2.0))


# ---------------------------------------------------------------------------------------------
# the agent


def make_action_predictor(agent: CMLOAgent) -> None:
    """Every member predicts reward 0 and s' - s = (a, a, a, a) for the action a.

    Each hidden layer passes inputs 0..4 through as x + 100 (SiLU(z) = z * sigmoid(z), and
    sigmoid(100 + x) is 1 in float32 for |x| <= 1); the head takes 100 off input 4, the action.
    """
    model = agent.model
    in_dim = model.in_dim
    layers = model.net.layers
    with torch.no_grad():
        model.input_mean.zero_()
        model.input_std.fill_(1.0)
        for k, layer in enumerate(layers):
            layer.weight.zero_()
            layer.bias.zero_()
            if k == len(layers) - 1:
                layer.weight[:, agent.obs_dim, 1 : 1 + agent.obs_dim] = 1.0
                layer.bias[:, 0, 1 : 1 + agent.obs_dim] = -100.0
            else:
                layer.weight[:, range(in_dim), range(in_dim)] = 1.0
                if k == 0:
                    layer.bias[:, 0, :in_dim] = 100.0


def test_prediction_error_uses_the_models_prediction_on_the_real_state_action_pair() -> None:
    """The model predicts s' = s + (a, a, a, a): error 0 on a real step that does exactly that,
    and ||(a, a, a, a)|| = 2|a| = 1 on a real step where nothing moves."""
    agent = make_agent()
    make_action_predictor(agent)
    agent.trigger.updated(0, 1.0)  # a model exists
    obs = torch.tensor([0.25, -0.5, 0.75, 1.0])
    action = torch.tensor([0.5])
    agent.after_env_step(obs, action, 0.0, obs + 0.5)
    assert agent.trigger.error_sum == pytest.approx(0.0, abs=1e-5)
    agent.after_env_step(obs, action, 0.0, obs)
    assert agent.trigger.error_sum == pytest.approx(1.0, abs=1e-5)
    assert agent.trigger.error_count == 2


def scripted(agent: CMLOAgent) -> list[tuple[str, int]]:
    """Replace model fitting, rollouts, coverage and policy updates by recorders."""
    calls: list[tuple[str, int]] = []
    agent.fit_model = lambda step: calls.append(("fit", step))
    agent.rollout = lambda step, starts=None: 0
    agent.coverage = lambda: 1.0
    agent.update_policy = lambda updates: calls.append(("policy", updates))
    return calls


def test_every_learning_step_updates_the_policy_whether_or_not_the_model_retrains() -> None:
    agent = make_agent(updates_per_step=3, cmlo_rollout_every_step=False)
    calls = scripted(agent)
    for step in range(100, 104):
        agent.learn(step)
    assert calls == [("fit", 100)] + [("policy", 3)] * 4


def test_a_learning_step_changes_the_policy() -> None:
    """With real updates: the critic's weights move after one learning step."""
    agent = make_agent()
    agent.fit_model = lambda step: None
    agent.rollout = lambda step, starts=None: 0
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        obs = torch.randn(agent.obs_dim, generator=gen)
        act = torch.rand(agent.act_dim, generator=gen) * 2 - 1
        agent.real_buffer.add(obs, act, 1.0, obs + 0.1, 0.0)
    before = [p.detach().clone() for p in agent.policy.critic.parameters()]
    agent.learn(100)
    after = list(agent.policy.critic.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))


def test_a_row_with_two_model_updates_shows_the_last_ones_step_and_event_sum() -> None:
    """First update at step 100 (event sum 0); a per-step error with log(e + 1) = 1.5 and an
    interval of 10 give a sum of 1.5 > alpha 1 at step 110, the minimum 10 steps on. The row
    shows 111 env steps taken at the last update and its sum 1.5, not means of the two."""
    agent = make_agent(
        cmlo_alpha=1.0, cmlo_compute_interval=10, cmlo_min_interval=10, cmlo_max_interval=500
    )
    calls = scripted(agent)
    agent.learn(100)
    for step in range(101, 111):
        agent.trigger.observe_error(math.exp(1.5) - 1.0)
        agent.learn(step)
    assert [c for c in calls if c[0] == "fit"] == [("fit", 100), ("fit", 110)]
    row = agent._row(111, [], 0.0)
    assert row["model_update_step"] == 111.0
    assert row["event_sum"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({}, True),
        ({"cmlo_alpha": 0.0}, True),  # alpha = 0: every positive event sum triggers
        ({"cmlo_alpha": -0.01}, False),
        ({"cmlo_min_interval": 0}, True),
        ({"cmlo_min_interval": 500, "cmlo_max_interval": 500}, True),  # a fixed interval
        ({"cmlo_min_interval": 501, "cmlo_max_interval": 500}, False),
        ({"cmlo_min_interval": -1}, False),
        ({"cmlo_hull_states": 4}, True),  # the fewest points with a 3-D hull volume
        ({"cmlo_hull_states": 3}, False),
        ({"cmlo_compute_interval": 0}, False),
        ({"cmlo_min_interval": 0, "cmlo_max_interval": 0}, False),
        ({"cmlo_rollout_batch_size": 0}, False),
        ({"real_ratio": 1.5}, False),  # MBPO's own settings are checked too
    ],
)
def test_cmlo_settings_are_checked_at_their_bounds(changes: dict, ok: bool) -> None:
    assert_validation(CMLOConfig(**changes), ok)


def test_cmlo_seeds_train_one_per_process_and_the_grid_says_why(tmp_path) -> None:
    """CMLO's trigger fires at different env steps for each seed, so its seeds cannot step
    in lockstep as one agent: a grid plans one unit per seed (and says so) where SAC's three
    seeds make one unit, and the agent itself refuses two seeds."""
    assert_seeds_run_one_per_process(
        tmp_path,
        CMLOAgent,
        CMLOConfig(),
        "cmlo",
        "its model-training trigger fires at different steps for each seed",
    )
