"""PDML at agent level, against hand computations on constructed states and actors.

Every stored transition number k has obs[0] = k, and every actor is set so that its pre-tanh
Gaussian on state s is N(a * s[0] + b, sd^2), a line in the transition number. The policy
distance of a segment then depends on *which* states it is averaged over and on *which* snapshot
the segment is paired with, and each is computed here by hand:

    KL(N(m_p, s_p^2) || N(m_q, s_q^2)) = log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2
    TV bound of segment k = mean over its probe states s of sqrt(KL(pi(s) || snapshot_k(s)) / 2)
    weight of a row of segment k proportional to 1 / TV bound (warm-up: factor x the oldest's)

with pi the current actor. The probe states of a segment [start, end) with n = end - start
rows are the `pdml_tv_states` = c (or n if fewer) rows start + floor(j n / c), j = 0..c-1:
evenly spaced over the whole segment. Segment k is collected by the actor as it was at model
training k (its snapshot).
"""

from __future__ import annotations

import math

import pytest
import torch

import usbpo_cli.agents.dyna as dyna
from baselines.pdml import PDMLAgent, PDMLConfig
from usbpo_cli.runs.config import resolve_config

ENV = "InvertedPendulum-v4"  # obs_dim 4, act_dim 1


def kl_1d(mu_p: float, sd_p: float, mu_q: float, sd_q: float) -> float:
    """KL(N(mu_p, sd_p^2) || N(mu_q, sd_q^2)), by hand."""
    return math.log(sd_q / sd_p) + (sd_p**2 + (mu_p - mu_q) ** 2) / (2 * sd_q**2) - 0.5


class Line:
    """A policy whose pre-tanh Gaussian on state s is N(a * s[0] + b, sd^2)."""

    def __init__(self, a: float, b: float, sd: float) -> None:
        self.a, self.b, self.sd = a, b, sd

    def mean(self, s0: float) -> float:
        return self.a * s0 + self.b

    def set_on(self, actor: torch.nn.Module) -> None:
        """Write the line into the SAC actor's body (Linear, ReLU, Linear, ReLU, Linear): the
        first two layers pass relu(s[0]) = s[0] (transition numbers are >= 0) through unit 0,
        the head maps it to the mean a * s[0] + b and a constant log-std log(sd)."""
        first, _, second, _, head = actor.body  # each layer's weights [seeds, out, in]
        with torch.no_grad():
            for layer in (first, second, head):
                layer.weight.zero_()
                layer.bias.zero_()
            first.weight[0, 0, 0] = 1.0  # seed 0, the only one
            second.weight[0, 0, 0] = 1.0
            head.weight[0, 0, 0] = self.a
            head.bias.copy_(torch.tensor([self.b, math.log(self.sd)]))


def tv_bound(current: Line, snapshot: Line, states: list[int]) -> float:
    """Pinsker's bound averaged over the given states, by hand."""
    per_state = [
        math.sqrt(kl_1d(current.mean(s), current.sd, snapshot.mean(s), snapshot.sd) / 2)
        for s in states
    ]
    return sum(per_state) / len(per_state)


def make_agent(**overrides: object) -> PDMLAgent:
    config, _ = resolve_config(PDMLConfig, "InvertedPendulum", "tiny", dict(overrides))
    return PDMLAgent(ENV, config, seed=0, total_steps=1000)


def add_numbered(agent: PDMLAgent, start: int, stop: int) -> None:
    """Transitions number start..stop-1, one `add` each (as the loop adds real data):
    obs = (k, k/100, -k/100, 1), act = k/1000, reward k, next obs = obs + 0.5."""
    for k in range(start, stop):
        obs = torch.tensor([float(k), k / 100, -k / 100, 1.0])
        act = torch.tensor([k / 1000])
        agent.real_buffer.add(obs, act, float(k), obs + 0.5, 0.0)


def normalised(per_row: list[float]) -> list[float]:
    total = sum(per_row)
    return [w / total for w in per_row]


# ---------------------------------------------------------------------------------------------
# which states and which snapshot feed the policy distance


A = Line(0.10, 0.0, 1.0)
B = Line(-0.05, 0.5, 0.5)
C = Line(0.02, 0.1, 0.8)
D = Line(0.03, -0.2, 1.2)


def test_probe_states_are_evenly_spaced_and_paired_with_the_opening_snapshot() -> None:
    """Warm-up 0..3; training 0 (actor A) opens segment 0 = 4..9 (6 rows); training 1 (actor B)
    opens segment 1 = 10..14 (5 rows); training 2 (actor C) opens segment 2 = 15..16 (2 rows);
    training 3 (actor D) closes it. With 3 probe states per segment: segment 0 probes
    4 + floor(j 6 / 3) = 4, 6, 8; segment 1 probes 10 + floor(j 5 / 3) = 10, 11, 13 (not the
    first three, not a spacing of floor(5 / 3) = 1); segment 2 has fewer rows than probes, so
    both rows 15, 16. Each segment keeps the Gaussian of the snapshot that opened it (A, B, C),
    not of the next one, on exactly those states, even though the live actor moved on."""
    agent = make_agent(pdml_tv_states=3)
    actor = agent.policy.actor
    add_numbered(agent, 0, 4)
    schedule = [(A, 10), (B, 15), (C, 17), (D, None)]
    for line, stop in schedule:
        line.set_on(actor)
        agent.take_snapshot()
        if stop is not None:
            add_numbered(agent, agent.real_buffer.total_added, stop)
    assert agent.boundaries == [4, 10, 15, 17]
    probes = [4, 6, 8, 10, 11, 13, 15, 16]
    owners = [A, A, A, B, B, B, C, C]
    assert agent.probe_index.tolist() == probes
    assert agent.probe_segment.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    expected_mean = [line.mean(s) for line, s in zip(owners, probes)]
    expected_log_std = [math.log(line.sd) for line in owners]
    assert agent.probe_mean.squeeze(-1).tolist() == pytest.approx(expected_mean, abs=1e-6)
    assert agent.probe_log_std.squeeze(-1).tolist() == pytest.approx(expected_log_std, abs=1e-6)

    # data_weights with the current actor D: 1 / TV per row, warm-up 0.05 x segment 0's
    tv = [tv_bound(D, A, [4, 6, 8]), tv_bound(D, B, [10, 11, 13]), tv_bound(D, C, [15, 16])]
    per_row = [0.05 / tv[0]] * 4 + [1 / tv[0]] * 6 + [1 / tv[1]] * 5 + [1 / tv[2]] * 2
    expected = normalised(per_row)
    assert sum(expected[-2:]) > 0.02  # the newest segment's floor (pdml_max_rate) is idle
    weights = agent.data_weights()
    assert weights.shape == (17,)
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)


def test_a_segment_collected_by_the_current_policy_dominates() -> None:
    """If the current actor equals the snapshot that opened segment 1, that segment's TV bound is
    0 (KL of a Gaussian with itself), floored at 1e-6: its rows outweigh every other row by
    orders of magnitude, while the others keep 1 / TV by hand."""
    agent = make_agent(pdml_tv_states=3)
    actor = agent.policy.actor
    add_numbered(agent, 0, 4)
    for line, stop in [(A, 10), (B, 15), (C, None)]:
        line.set_on(actor)
        agent.take_snapshot()
        if stop is not None:
            add_numbered(agent, agent.real_buffer.total_added, stop)
    B.set_on(actor)  # the policy returns to B
    weights = agent.data_weights()
    tv0 = tv_bound(B, A, [4, 6, 8])
    assert weights[10:].min() > 1e4 * weights[:10].max()
    per_row = [0.05 / tv0] * 4 + [1 / tv0] * 6 + [1 / 1e-6] * 5
    assert weights.tolist() == pytest.approx(normalised(per_row), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# after the real buffer's ring wraps around


def wrapped_agent(final: Line) -> PDMLAgent:
    """A 12-slot real buffer, 2 probe states per segment. Warm-up 0..3; training 0 (A) opens
    segment 0 = 4..7, training 1 (B) segment 1 = 8..11, training 2 (C) segment 2 = 12..18,
    training 3 (D) closes it; then the actor is set to `final`. 19 transitions were added, so
    the buffer holds 7..18 (transition k in slot k mod 12): the warm-up and 4..6 were
    overwritten. Probes: segment 0 at 4, 6 (both overwritten, though its row 7 survives),
    segment 1 at 8, 10, segment 2 at 12 + floor(j 7 / 2) = 12, 15."""
    agent = make_agent(replay_size=12, pdml_tv_states=2)
    assert agent.real_buffer.capacity == 12
    actor = agent.policy.actor
    add_numbered(agent, 0, 4)
    for line, stop in [(A, 8), (B, 12), (C, 19), (D, None)]:
        line.set_on(actor)
        agent.take_snapshot()
        if stop is not None:
            add_numbered(agent, agent.real_buffer.total_added, stop)
    final.set_on(actor)
    return agent


def test_positions_and_training_rows_are_oldest_first_after_the_ring_wraps() -> None:
    """Row r of `model_training_data` (oldest first) is transition 7 + r, and `_positions(r)`
    is its slot (7 + r) mod 12: 7, 8, 9, 10, 11, 0, 1, ..., 6."""
    agent = wrapped_agent(D)
    buffer = agent.real_buffer
    assert (len(buffer), buffer.total_added, buffer.pointer) == (12, 19, 7)
    assert agent.boundaries == [4, 8, 12, 19]
    assert agent.probe_index.tolist() == [4, 6, 8, 10, 12, 15]
    rows = torch.arange(12)
    positions = agent._positions(rows)
    assert positions.tolist() == [7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 6]
    assert buffer.obs[positions, 0].tolist() == list(range(7, 19))
    inputs, targets = agent.model_training_data()  # [seeds, rows, ...]: its one seed
    assert inputs[0, :, 0].tolist() == list(range(7, 19))
    assert targets[0, :, 0].tolist() == list(range(7, 19))  # the reward is the number too


def test_weights_after_the_ring_wraps_skip_overwritten_probes() -> None:
    """Rows 7..18: row 7 belongs to segment 0, whose probe states 4 and 6 were overwritten, so
    it gets weight 0 (their slots now hold 16 and 18, states of another segment that must not be
    used); the warm-up is gone. Segment 1 (rows 8..11) weighs 1 / TV(D vs B on 8, 10), segment
    2 (rows 12..18) 1 / TV(D vs C on 12, 15)."""
    agent = wrapped_agent(D)
    weights = agent.data_weights()
    tv1, tv2 = tv_bound(D, B, [8, 10]), tv_bound(D, C, [12, 15])
    expected = normalised([0.0] + [1 / tv1] * 4 + [1 / tv2] * 7)
    assert weights.shape == (12,)
    assert weights[0].item() == 0.0
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)


def test_rollouts_start_from_the_weighted_rows_after_the_ring_wraps() -> None:
    """With the current actor equal to C, segment 2 (transitions 12..18) has TV 0 and segment 1
    a TV near 51 (B's sd of 0.5 against C's means), so segment 2 holds all but ~1e-7 of the
    weight: every start state is one of 12..18, each about equally often. And a one-hot weight
    on row r starts every rollout from transition 7 + r, in slot (7 + r) mod 12."""
    far_b = Line(-0.05, 5.0, 0.05)
    agent = make_agent(replay_size=12, pdml_tv_states=2)
    actor = agent.policy.actor
    add_numbered(agent, 0, 4)
    for line, stop in [(A, 8), (far_b, 12), (C, 19), (D, None)]:
        line.set_on(actor)
        agent.take_snapshot()
        if stop is not None:
            add_numbered(agent, agent.real_buffer.total_added, stop)
    C.set_on(actor)
    agent.weights = agent.data_weights()
    assert agent.weights[5:].sum().item() > 1 - 1e-6
    torch.manual_seed(0)
    starts = agent.rollout_start_states(7000)[0]  # its one seed
    counts = torch.bincount(starts[:, 0].long(), minlength=19)
    assert counts[:12].sum().item() == 0
    assert counts[12:].tolist() == pytest.approx([1000] * 7, abs=150)
    # the whole state, not only its number, is the stored one
    assert torch.equal(starts[:, 1], starts[:, 0] / 100)

    for row in (0, 4, 5, 11):
        agent.weights = torch.zeros(12)
        agent.weights[row] = 1.0
        starts = agent.rollout_start_states(20)[0]  # its one seed
        assert starts[:, 0].tolist() == [7.0 + row] * 20


def test_train_model_fits_on_weights_aligned_with_the_training_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`train_model_and_roll_out` first closes the open segment (the snapshot), then hands
    phase 1 one weight per row of `model_training_data`, in its order: the row of transition k
    gets its segment's weight. Checked on the wrapped buffer right after training 3's data: the
    weights phase 1 sees equal the hand values of the previous test, row by row against the
    inputs' numbers."""
    agent = make_agent(replay_size=12, pdml_tv_states=2)
    actor = agent.policy.actor
    add_numbered(agent, 0, 4)
    for line, stop in [(A, 8), (B, 12), (C, 19)]:
        line.set_on(actor)
        agent.take_snapshot()
        add_numbered(agent, agent.real_buffer.total_added, stop)
    D.set_on(actor)
    seen = {}

    class Stop(Exception):
        pass

    def spy(model, opt, inputs, targets, *, sample_weights=None, **settings):  # noqa: ANN202
        seen["inputs"], seen["weights"] = inputs, sample_weights
        raise Stop

    monkeypatch.setattr(dyna, "fit_ensemble", spy)
    with pytest.raises(Stop):
        agent.train_model_and_roll_out(19 + agent.config.initial_steps)
    assert agent.boundaries == [4, 8, 12, 19]
    numbers = seen["inputs"][0, :, 0].tolist()  # its one seed
    assert numbers == list(range(7, 19))
    tv1, tv2 = tv_bound(D, B, [8, 10]), tv_bound(D, C, [12, 15])
    weight_of = {
        7: 0.0,
        **dict.fromkeys(range(8, 12), 1 / tv1),
        **dict.fromkeys(range(12, 19), 1 / tv2),
    }
    expected = normalised([weight_of[int(k)] for k in numbers])
    assert seen["weights"][0].tolist() == pytest.approx(expected, rel=1e-5)  # its one seed
    assert torch.equal(agent.model_sample_weights(), seen["weights"][0])
