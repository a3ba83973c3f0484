"""The Dyna loop's wiring: when the model trains, what one training records, what M1 is, and the
divergence guard on the model, each against values built or computed independently in the test.
(The maths of rollouts, batches and delta is in tests/test_dyna.py.)"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import usbpo_cli.agents.dyna as dyna
from baselines.mbpo import MBPOAgent
from usbpo_cli.agents.dyna import DynaConfig
from usbpo_cli.errors import TrainingDiverged
from usbpo_cli.models.ensemble import FitResult, GaussianEnsemble
from usbpo_cli.models.wasserstein import shift_and_bias

ENV = "InvertedPendulum-v4"


def make_agent(**overrides: object) -> MBPOAgent:
    options: dict[str, object] = {
        "ensemble_size": 4,
        "num_elites": 2,
        "model_hidden_size": 16,
        "model_hidden_layers": 2,
        "model_weight_decay": (1e-5, 1e-5, 1e-5),
        "model_max_epochs": 2,
        "hidden_size": 16,
        "rollout_batch_size": 32,
        "epoch_length": 100,
        "model_train_freq": 50,
        "initial_steps": 10,
        "updates_per_step": 3,
        "batch_size": 16,
    }
    options.update(overrides)
    return MBPOAgent(ENV, DynaConfig(**options), seed=0, total_steps=3000)


def fill_real(agent: MBPOAgent, n: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(n):
        obs = torch.randn(agent.obs_dim, generator=gen) * 0.1
        act = torch.rand(agent.act_dim, generator=gen) * 6 - 3
        agent.real_buffer.add(obs, act, 1.0, obs + 0.01 * act.sum(), 0.0)


def fit_result(train_loss: float = 1.0, holdout: float = 1.0) -> FitResult:
    return FitResult(train_loss, holdout, torch.zeros(4), 1, torch.zeros(2, 5), torch.zeros(2, 5))


# ---------------------------------------------------------------------------------------------
# the divergence guard on the model


@pytest.mark.parametrize(
    ("train_loss", "holdout", "bound", "diverged"),
    [
        (1.0, 1.0, 0.5, False),
        (math.nan, 1.0, 0.5, True),
        (1.0, math.inf, 0.5, True),
        (-math.inf, 1.0, 0.5, True),
        (1.0, 1.0, 20.0, False),  # the bound itself is allowed: "above 20" diverges
        (1.0, 1.0, 20.01, True),
        (1.0, 1.0, 35.0, True),
        (1.0, 1.0, math.nan, True),
        (1.0, 1.0, -5.0, False),
    ],
)
def test_check_model_stops_on_non_finite_losses_and_a_log_variance_bound_above_20(
    train_loss: float, holdout: float, bound: float, diverged: bool
) -> None:
    model = GaussianEnsemble(4, 1, 4, 2, 8, 2)
    with torch.no_grad():
        model.max_logvar.fill_(-10.0)
        model.max_logvar[0, 0, 2] = bound
    fit = fit_result(train_loss, holdout)
    if diverged:
        with pytest.raises(TrainingDiverged):
            dyna.check_model(model, fit, step=7)
    else:
        dyna.check_model(model, fit, step=7)


# ---------------------------------------------------------------------------------------------
# when the model trains, and what learn() does


def test_learn_trains_the_model_every_model_train_freq_steps_then_updates_the_policy() -> None:
    agent = make_agent()
    calls: list[tuple[str, int]] = []
    agent.train_model_and_roll_out = lambda step: calls.append(("model", step))
    agent.update_policy = lambda updates: calls.append(("policy", updates))
    for step in range(10, 111):
        agent.learn(step)
    model_steps = [step for kind, step in calls if kind == "model"]
    assert model_steps == [10, 60, 110]  # counted from the end of the random phase
    assert [c for c in calls if c[0] == "policy"] == [("policy", 3)] * 101
    first = calls.index(("model", 60))
    assert calls[first + 1] == ("policy", 3)  # the policy learns from the new model's data


def test_train_model_fits_then_rolls_out_from_the_new_model() -> None:
    agent = make_agent()
    order: list[str] = []
    agent.fit_model = lambda step: order.append(f"fit {step}")
    agent.rollout = lambda step: order.append(f"rollout {step}") or 0
    agent.train_model_and_roll_out(60)
    assert order == ["fit 60", "rollout 60"]


# ---------------------------------------------------------------------------------------------
# one model training: M1, phase 2's hook, and what is recorded


def test_fit_model_freezes_m1_before_phase_1_and_passes_it_to_phase_2() -> None:
    """M1 is the model as it was before this training (weights and normaliser), frozen; the
    phase-2 hook gets it together with phase 1's result."""
    agent = make_agent()
    fill_real(agent, 300)
    with torch.no_grad():
        agent.model.input_mean.fill_(0.25)
    before = copy.deepcopy(agent.model.state_dict())
    seen: dict[str, object] = {}

    def hook(frozen: GaussianEnsemble, fit: FitResult) -> None:
        seen["frozen"], seen["fit"] = frozen, fit

    agent.fine_tune_model = hook
    agent.fit_model(60)
    frozen = seen["frozen"]
    assert frozen is not agent.model
    for key, value in before.items():
        assert torch.equal(frozen.state_dict()[key], value), key
    assert not all(p.requires_grad for p in frozen.parameters())
    assert not torch.equal(agent.model.input_mean, before["input_mean"])  # refitted
    assert isinstance(seen["fit"], FitResult)


def test_fit_model_records_the_training_and_the_shift_and_bias_before_and_after_phase_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The row gets phase 1's losses and epochs as `fit_ensemble` returned them, one training,
    and shift/bias of the model against M1 on 1024 holdout pairs, before and after a phase 2
    (here a stand-in that moves the model, so before and after differ)."""
    agent = make_agent(model_holdout_ratio=0.5, model_max_holdout=5000)
    fill_real(agent, 2400)  # 1200 held out, so the diagnostics take their 1024
    results: list[FitResult] = []
    real_fit = dyna.fit_ensemble
    monkeypatch.setattr(
        dyna, "fit_ensemble", lambda *a, **k: results.append(real_fit(*a, **k)) or results[-1]
    )
    sizes: list[int] = []
    real_shift_and_bias = dyna.shift_and_bias

    def counting(model_1, model_2, inputs, *args, **kwargs):
        sizes.append(inputs.shape[-2])  # pairs per seed
        return real_shift_and_bias(model_1, model_2, inputs, *args, **kwargs)

    monkeypatch.setattr(dyna, "shift_and_bias", counting)
    states: dict[str, object] = {}

    def phase2(frozen: GaussianEnsemble, fit: FitResult) -> None:
        states["frozen"], states["m2"] = frozen, copy.deepcopy(agent.model)
        with torch.no_grad():
            for param in agent.model.net.parameters():
                param.add_(0.2)

    agent.fine_tune_model = phase2
    torch.manual_seed(3)
    agent.fit_model(60)
    fit = results[0].with_seed_axis()  # per seed: the agent's one seed
    metrics = {name: agent.recorded(name) for name in agent._metrics}
    assert metrics["model_loss_train"] == pytest.approx(fit.train_loss)
    assert metrics["model_loss_holdout"] == pytest.approx(fit.holdout_mse)
    assert metrics["model_epochs"] == fit.epochs
    assert metrics["model_trainings"] == [1.0] and "model_trainings" in agent._summed
    assert sizes == [1024, 1024]
    validation = fit.holdout_inputs[0, :1024]  # the agent's one seed
    # recompute with fixed member draws: the recorded values came from their own draws, so
    # compare to the exact average over every pair of elites
    frozen, m2 = states["frozen"], states["m2"]
    before_shift, before_bias = exact_shift_bias(frozen, m2, validation)
    after_shift, after_bias = exact_shift_bias(frozen, agent.model, validation)
    assert metrics["model_shift_before"][0] == pytest.approx(before_shift, rel=0.1)
    assert metrics["model_bias_before"][0] == pytest.approx(before_bias, rel=0.1)
    assert metrics["model_shift"][0] == pytest.approx(after_shift, rel=0.1)
    assert metrics["model_bias"][0] == pytest.approx(after_bias, rel=0.1)
    assert abs(after_shift - before_shift) > 0.3 * before_shift  # the stand-in really moved it


def exact_shift_bias(
    frozen: GaussianEnsemble, model: GaussianEnsemble, inputs: torch.Tensor
) -> tuple[float, float]:
    """Shift and bias averaged exactly over every (k1, k2) pair of elites instead of one random
    draw per sample: the expectation the recorded estimate samples."""
    n = inputs.shape[0]
    shifts, biases = [], []
    with torch.no_grad():
        for k1 in frozen.elites[0].tolist():
            for k2 in model.elites[0].tolist():
                shift, bias = shift_and_bias(
                    frozen, model, inputs, torch.full((n,), k1), torch.full((n,), k2)
                )
                shifts.append(shift.item())
                biases.append(bias.item())
    return sum(shifts) / len(shifts), sum(biases) / len(biases)


def test_each_rollout_records_its_length() -> None:
    agent = make_agent(rollout_schedule=(0, 1, 2, 2))
    fill_real(agent, 50)
    agent.rollout(60)
    assert agent.recorded("rollout_length") == [2.0]


def test_model_training_data_is_inputs_s_a_and_targets_r_and_the_state_change() -> None:
    """Phase 1 learns [r, s' - s] from [s, a], oldest row first."""
    agent = make_agent()
    rows = [
        (
            torch.tensor([1.0, 2.0, 3.0, 4.0]),
            torch.tensor([0.5]),
            7.0,
            torch.tensor([2.0, 0, 3, 9]),
        ),
        (
            torch.tensor([0.0, -1.0, 1.0, 2.0]),
            torch.tensor([-1.5]),
            -2.0,
            torch.tensor([0.5, 0, 0, 0]),
        ),
    ]
    for obs, act, rew, next_obs in rows:
        agent.real_buffer.add(obs, act, rew, next_obs, 0.0)
    inputs, targets = agent.model_training_data()  # [seeds, rows, ...]: the agent's one seed
    assert inputs.tolist() == [[[1.0, 2.0, 3.0, 4.0, 0.5], [0.0, -1.0, 1.0, 2.0, -1.5]]]
    assert targets.tolist() == [[[7.0, 1.0, -2.0, 0.0, 5.0], [-2.0, 0.5, 1.0, -1.0, -2.0]]]


def test_rollout_epochs_count_from_the_end_of_the_random_phase_even_at_one_step_epochs() -> None:
    """epoch = (step - initial_steps) // epoch_length, never negative: at the first learning
    step the schedule (0, 10, 1, 11) gives length 1, one step later 2."""
    agent = make_agent(epoch_length=1, rollout_schedule=(0, 10, 1, 11))
    assert agent.rollout_length_at(10) == 1
    assert agent.rollout_length_at(11) == 2
    assert agent.rollout_length_at(3) == 1


def test_a_training_whose_loss_is_not_finite_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """fit_model checks the fitted model before using it: a NaN phase-1 loss raises
    TrainingDiverged (the loop then rolls back to the last checkpoint)."""
    agent = make_agent()
    fill_real(agent, 100)
    monkeypatch.setattr(dyna, "fit_ensemble", lambda *a, **k: fit_result(math.nan, 1.0))
    with pytest.raises(TrainingDiverged):
        agent.fit_model(60)
