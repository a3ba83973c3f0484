"""PDML details the other PDML tests left open (found by mutation testing), each pinned by a hand
value on states and segments built by hand:

- the actor's head of width 2 x act_dim splits into mean and log-std with more than two action
  dimensions (with act_dim 1 or 2 a wrong split count gives the same halves);
- a segment of a single transition is a policy segment like any other: the oldest one sets the
  warm-up weight, the newest one is the one the max-rate floor raises, and a lone one is not
  "only warm-up data";
- a segment's TV bound is the mean over its surviving probe states, also when only one survives
  (divided by 1, not given up as if none survived);
- a probe state stored at exactly the oldest surviving transition still counts.

The agent-level tests reuse the numbered transitions and line policies of test_pdml_agent.py:
transition k has obs[0] = k, and each actor's pre-tanh Gaussian on state s is
N(a * s[0] + b, sd^2), so every TV bound is a hand computation over named states.
"""

from __future__ import annotations

import math

import pytest
import torch
from cli_helpers import assert_seeds_run_one_per_process, assert_validation  # tests/ is on sys.path
from test_pdml_agent import A, B, C, D, add_numbered, make_agent, normalised, tv_bound

from baselines.pdml import PDMLAgent, PDMLConfig, actor_gaussian, segment_weights
from usbpo_cli.agents.sac import TanhGaussianActor

# ---------------------------------------------------------------------------------------------
# the actor's Gaussian with three action dimensions


def test_actor_gaussian_splits_a_three_dim_head_into_mean_and_log_std() -> None:
    """act_dim 3 (Hopper's): the head's 6 outputs are [mean (3), raw log-std (3)], the log-std
    clamped to [-20, 2] as the actor clamps it. A constant head makes them the same on every
    state."""
    low, high = torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0])
    actor = TanhGaussianActor(5, 3, 8, low, high)
    head = actor.body[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.5, -1.0, 2.0, 0.1, -25.0, 3.0]))
    obs = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    mean, log_std = actor_gaussian(actor, obs)
    assert mean.shape == log_std.shape == (4, 3)
    assert mean.tolist() == [[0.5, -1.0, 2.0]] * 4
    assert log_std.flatten().tolist() == pytest.approx([0.1, -20.0, 2.0] * 4)


# ---------------------------------------------------------------------------------------------
# one-transition segments in the pure weighting

T, F = True, False


def weights_of(tv: list[float], sizes: list[int], warmup: list[bool], **rates: float) -> list:
    return segment_weights(
        torch.tensor(tv, dtype=torch.float64), torch.tensor(sizes), torch.tensor(warmup), **rates
    ).tolist()


def test_a_one_transition_oldest_segment_sets_the_warm_up_weight() -> None:
    """Warm-up 4 rows, segment 0 of one row with TV 0.5, segment 1 of 3 rows with TV 0.25: a
    segment-0 row weighs 2, a segment-1 row 4, a warm-up row 0.05 x 2 = 0.1 (the oldest policy
    segment's, though it holds a single row); total 0.4 + 2 + 12 = 14.4, the newest segment
    holds 12 / 14.4, above the 2% floor."""
    got = weights_of([0.0, 0.5, 0.25], [4, 1, 3], [T, F, F], max_rate=0.02, warmup_factor=0.05)
    assert got == pytest.approx([w / 14.4 for w in [0.1] * 4 + [2.0] + [4.0] * 3], rel=1e-12)


def test_a_lone_one_transition_segment_is_not_warm_up_only_data() -> None:
    """Warm-up 3 rows, then one policy segment of a single row with TV 0.5: a warm-up row weighs
    0.05 x 2 = 0.1, the segment's row 2; total 2.3 (not uniform, as with warm-up data only)."""
    got = weights_of([0.0, 0.5], [3, 1], [T, F], max_rate=0.02, warmup_factor=0.05)
    assert got == pytest.approx([0.1 / 2.3] * 3 + [2.0 / 2.3], rel=1e-12)


def test_the_floor_raises_a_one_transition_newest_segment() -> None:
    """No warm-up rows left; segment 0 of 4 rows with TV 0.25 (row weight 4, mass 16), the newest
    segment of one row with TV 100 (mass 0.01, a share 0.01 / 16.01 below max_rate 0.1). The
    floor raises the newest row to w with w / (16 + w) = 0.1: w = 16 / 9, the total 160 / 9,
    so each segment-0 row holds 4 x 9 / 160 = 0.225 and the newest row exactly 0.1."""
    got = weights_of([0.0, 0.25, 100.0], [0, 4, 1], [T, F, F], max_rate=0.1, warmup_factor=0.05)
    assert got == pytest.approx([0.225] * 4 + [0.1], rel=1e-6)


# ---------------------------------------------------------------------------------------------
# at agent level: probe counts of one, and a probe at the oldest surviving transition


def test_segments_with_one_probe_and_one_row_weigh_by_that_probe() -> None:
    """Two probe states per segment. Warm-up 0..3; training 0 (actor A) opens segment 0 = {4},
    a single row; training 1 (B) opens segment 1 = 5..8, probed at 5 + floor(j 4 / 2) = 5, 7;
    training 2 (C) opens segment 2 = {9}, a single row; training 3 (D) closes it. The probe
    counts are 1, 2, 1: segment 0's TV bound is D against A on state 4 alone (divided by one
    probe, not two, and not dropped as if no probe survived), segment 2's D against C on 9."""
    agent = make_agent(pdml_tv_states=2)
    actor = agent.policy.actor
    add_numbered(agent, 0, 4)
    for line, stop in [(A, 5), (B, 9), (C, 10), (D, None)]:
        line.set_on(actor)
        agent.take_snapshot()
        if stop is not None:
            add_numbered(agent, agent.real_buffer.total_added, stop)
    assert agent.boundaries == [4, 5, 9, 10]
    assert agent.probe_index.tolist() == [4, 5, 7, 9]
    assert agent.probe_segment.tolist() == [0, 1, 1, 2]

    tv0, tv1, tv2 = tv_bound(D, A, [4]), tv_bound(D, B, [5, 7]), tv_bound(D, C, [9])
    assert min(abs(tv0 - tv1), abs(tv2 - tv1)) > 0.1  # the segments are told apart
    per_row = [0.05 / tv0] * 4 + [1 / tv0] + [1 / tv1] * 4 + [1 / tv2]
    expected = normalised(per_row)
    assert expected[-1] > 0.02  # the newest segment's floor is idle
    weights = agent.data_weights()
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)


def test_a_probe_at_the_oldest_surviving_transition_still_counts() -> None:
    """A 12-slot real buffer, two probe states per segment. Warm-up 0..3; training 0 (A) opens
    segment 0 = 4..7, training 1 (B) segment 1 = 8..11 (probes 8, 10), training 2 (C) segment
    2 = 12..19 (probes 12 + floor(j 8 / 2) = 12, 16), training 3 (D) closes it. 20 transitions
    were added, so the buffer holds 8..19: transition 8, segment 1's first probe, is the oldest
    one kept and still counts in segment 1's TV bound; the warm-up and segment 0 are gone."""
    agent = make_agent(replay_size=12, pdml_tv_states=2)
    assert agent.real_buffer.capacity == 12
    actor = agent.policy.actor
    add_numbered(agent, 0, 4)
    for line, stop in [(A, 8), (B, 12), (C, 20), (D, None)]:
        line.set_on(actor)
        agent.take_snapshot()
        if stop is not None:
            add_numbered(agent, agent.real_buffer.total_added, stop)
    buffer = agent.real_buffer
    assert (len(buffer), buffer.total_added) == (12, 20)
    assert agent.probe_index.tolist() == [4, 6, 8, 10, 12, 16]
    assert buffer.obs[8 % 12, 0].item() == 8.0  # slot 8 still holds transition 8

    tv1, tv2 = tv_bound(D, B, [8, 10]), tv_bound(D, C, [12, 16])
    assert not math.isclose(tv1, tv_bound(D, B, [10]), rel_tol=1e-3)  # state 8 matters
    expected = normalised([1 / tv1] * 4 + [1 / tv2] * 8)
    weights = agent.data_weights()
    assert weights.shape == (12,)
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({}, True),
        ({"pdml_max_rate": 0.0}, True),  # no floor: weights by policy distance alone
        ({"pdml_max_rate": 0.999}, True),
        ({"pdml_max_rate": 1.0}, False),  # a floor of 1 would leave nothing to weight
        ({"pdml_max_rate": -0.01}, False),
        ({"pdml_warmup_factor": 0.0}, True),
        ({"pdml_warmup_factor": -0.1}, False),
        ({"pdml_tv_states": 1}, True),
        ({"pdml_tv_states": 0}, False),
        ({"policy": "td3", "td3_exploration_noise": 0.05}, True),
        ({"policy": "td3", "td3_exploration_noise": 0.0}, False),  # no Gaussian to compare
        ({"real_ratio": 1.5}, False),  # MBPO's own settings are checked too
    ],
)
def test_pdml_settings_are_checked_at_their_bounds(changes: dict, ok: bool) -> None:
    assert_validation(PDMLConfig(**changes), ok)


def test_pdml_seeds_train_one_per_process_and_the_grid_says_why(tmp_path) -> None:
    """PDML keeps one policy snapshot and one set of segment weights: a grid plans one unit
    per seed (and says so) where SAC's seeds make one unit; the agent refuses two seeds."""
    assert_seeds_run_one_per_process(
        tmp_path,
        PDMLAgent,
        PDMLConfig(),
        "pdml",
        "its policy snapshots and data weights are written for one seed",
    )


def test_the_floor_gives_a_many_row_newest_segment_exactly_max_rate() -> None:
    """Two old segments of 4 rows at TV 0.1 (weight 10 a row) and a newest one of 3 rows at
    TV 10 (weight 0.1 a row) hold 80 and 0.3: under the 0.2 floor. Raised so that it holds
    exactly 0.2 of the total, the newest row weight w solves 3w / (80 + 3w) = 0.2, so
    w = 0.2 * 80 / (0.8 * 3) = 20/3; normalised by 100, old rows weigh 0.1 and newest 1/15."""
    weights = segment_weights(
        torch.tensor([0.1, 0.1, 10.0]),
        torch.tensor([4, 4, 3]),
        torch.tensor([False, False, False]),
        max_rate=0.2,
        warmup_factor=0.05,
    )
    expected = torch.tensor([0.1] * 8 + [1.0 / 15.0] * 3, dtype=torch.float64)
    torch.testing.assert_close(weights, expected)
    assert float(weights[-3:].sum()) == pytest.approx(0.2)
