"""PDML: the TV bound and segment weights against hand computations, the agent's segmentation of
real data by model trainings, weighted phase-1 sampling in `fit_ensemble`, and a tiny run that
resumes exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from cli_helpers import (  # tests/ is on sys.path
    assert_resume_reproduces,
    progress_rows,
    tiny_run,
)
from test_ensemble import fit, linear_dynamics, make_model

import usbpo_cli.models.ensemble as ensemble
from baselines.pdml import PDMLAgent, PDMLConfig, segment_weights, tv_upper_bound
from usbpo_cli.runs.config import resolve_config

ENV = "InvertedPendulum-v4"
LOG2 = math.log(2.0)


def kl_1d(mu_p: float, sd_p: float, mu_q: float, sd_q: float) -> float:
    """KL(N(mu_p, sd_p^2) || N(mu_q, sd_q^2)), by hand."""
    return math.log(sd_q / sd_p) + (sd_p**2 + (mu_p - mu_q) ** 2) / (2 * sd_q**2) - 0.5


# ---------------------------------------------------------------------------------------------
# the TV bound and the pure weighting


def test_tv_bound_is_pinskers_on_the_closed_form_kl() -> None:
    t = torch.tensor
    tv = tv_upper_bound(t([[0.5], [0.5]]), t([[0.0], [0.0]]), t([[1.0], [0.0]]), t([[LOG2], [0.0]]))
    assert tv.tolist() == pytest.approx(
        [math.sqrt(kl_1d(0.5, 1, 1, 2) / 2), math.sqrt(kl_1d(0.5, 1, 0, 1) / 2)]
    )
    assert tv_upper_bound(t([0.3]), t([-1.0]), t([0.3]), t([-1.0])).item() == 0.0


# ---------------------------------------------------------------------------------------------
# the agent: segments by model training, snapshots, TV on each segment's own states


def set_gaussian(actor: torch.nn.Module, mean: float, std: float) -> None:
    """Make the actor's pre-tanh Gaussian the same N(mean, std^2) on every state."""
    last = actor.body[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([mean, math.log(std)]))


def add_transitions(agent: PDMLAgent, n: int) -> None:
    for _ in range(n):
        obs = torch.randn(agent.obs_dim)
        agent.real_buffer.add(obs, torch.zeros(agent.act_dim), 0.0, obs + 0.1, 0.0)


@pytest.fixture
def agent() -> PDMLAgent:
    config, _ = resolve_config(PDMLConfig, "InvertedPendulum", "tiny", {})
    return PDMLAgent(ENV, config, seed=0, total_steps=1000)


def test_agent_weights_match_a_hand_computation(agent: PDMLAgent) -> None:
    actor = agent.policy.actor
    add_transitions(agent, 4)  # warm-up
    set_gaussian(actor, 0.0, 1.0)
    agent.take_snapshot()  # training 0: snapshot A = N(0, 1)
    add_transitions(agent, 2)  # segment 0, after A
    set_gaussian(actor, 1.0, 2.0)
    agent.take_snapshot()  # training 1: snapshot B = N(1, 4)
    add_transitions(agent, 2)  # segment 1, after B
    set_gaussian(actor, 0.5, 1.0)  # the current policy C = N(0.5, 1)
    agent.take_snapshot()
    assert agent.boundaries == [4, 6, 8]
    assert agent.probe_segment.tolist() == [0, 0, 1, 1]
    weights = agent.data_weights()

    tv0 = math.sqrt(kl_1d(0.5, 1, 0, 1) / 2)  # C against A: sqrt(0.125 / 2) = 0.25
    tv1 = math.sqrt(kl_1d(0.5, 1, 1, 2) / 2)  # C against B
    per_row = [0.05 / tv0] * 4 + [1 / tv0] * 2 + [1 / tv1] * 2
    assert tv0 == pytest.approx(0.25)
    assert weights.tolist() == pytest.approx([w / sum(per_row) for w in per_row], rel=1e-5)
    assert weights.sum().item() == pytest.approx(1.0, rel=1e-6)

    # the current policy equal to B: segment 1, which B collected, weighs the most
    set_gaussian(actor, 1.0, 2.0)
    weights = agent.data_weights()
    assert weights[6:].min() > 100 * weights[:6].max()


def test_rollouts_start_from_weighted_states(agent: PDMLAgent) -> None:
    add_transitions(agent, 10)
    agent.take_snapshot()
    agent.weights = torch.zeros(10)
    agent.weights[7] = 1.0
    starts = agent.rollout_start_states(50)
    assert torch.equal(starts, agent.real_buffer.obs[7].expand(1, 50, -1))  # its one seed


# ---------------------------------------------------------------------------------------------
# fit_ensemble with and without sample weights


def test_fit_without_weights_is_the_unweighted_fit() -> None:
    """`sample_weights=None` is the plain fit: the same random draws and the same result as
    leaving the argument out (with and without the bootstrap)."""
    for bootstrap in (True, False):
        results = []
        for extra in ({}, {"sample_weights": None}):
            model = make_model(3)
            inputs, targets = linear_dynamics(300, seed=1)
            torch.manual_seed(11)
            result = fit(model, inputs, targets, max_epochs=6, bootstrap=bootstrap, **extra)
            total = sum(p.double().sum().item() for p in model.parameters())
            results.append((result.train_loss, result.holdout_mse, model.elites[0].tolist(), total))
            assert result.epochs == 6
        assert results[0] == results[1]


def test_weighted_fit_trains_on_the_weighted_rows_only(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs, targets = linear_dynamics(200, seed=2)
    inputs[:, 0] = torch.arange(200, dtype=torch.float32)  # the row id, to see who is trained on
    weights = torch.zeros(200)
    weights[:60] = 1.0
    seen: list[torch.Tensor] = []
    original = ensemble.mle_backward

    def spy(model, batch_inputs, *args, **kwargs):
        seen.append(batch_inputs[..., 0].flatten())
        return original(model, batch_inputs, *args, **kwargs)

    monkeypatch.setattr(ensemble, "mle_backward", spy)
    model = make_model(0)
    torch.manual_seed(0)
    result = fit(model, inputs, targets, max_epochs=3, sample_weights=weights)
    trained = torch.cat(seen).long().unique()
    assert trained.max().item() < 60 and trained.numel() > 30
    # the holdout stays a uniform split over all rows
    held = result.holdout_inputs[:, 0].long()
    assert held.numel() == 40 and (held >= 60).sum().item() > 10
    # every epoch still visits as many rows as the unweighted fit would
    assert sum(s.numel() for s in seen) == 3 * 7 * (200 - 40)


# ---------------------------------------------------------------------------------------------
# a tiny run, and exact resume


@pytest.fixture(scope="module")
def pdml_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run("pdml", tmp_path_factory.mktemp("pdml"))


def test_tiny_run_trains_on_mbpo_schedule(pdml_run: Path) -> None:
    rows = progress_rows(pdml_run)
    assert [int(r["env_step"]) for r in rows] == [100, 200, 300]
    for row in rows[1:]:
        assert float(row["model_trainings"]) == 2.0  # tiny: every 50 steps, as MBPO
        assert row["model_loss_train"] != "" and row["rollout_length"] != ""
        assert row["model_update_step"] == row["event_sum"] == ""  # CMLO's columns


def test_resume_continues_bit_exactly(pdml_run: Path, tmp_path: Path) -> None:
    assert_resume_reproduces("pdml", pdml_run, tmp_path)


def test_a_single_policy_segment_already_weighs_warm_up_data_down() -> None:
    """Warm-up (4 rows) then one policy segment (2 rows) of TV 0.5: a segment row weighs
    1 / 0.5 = 2, a warm-up row 0.05 x 2 = 0.1; normalised over 4 x 0.1 + 2 x 2 = 4.4. The
    newest segment holds 4/4.4, far above the 2% floor."""
    weights = segment_weights(
        torch.tensor([0.0, 0.5]), torch.tensor([4, 2]), torch.tensor([True, False])
    )
    expected = torch.tensor([0.1] * 4 + [2.0] * 2, dtype=torch.float64) / 4.4
    assert torch.allclose(weights, expected)
