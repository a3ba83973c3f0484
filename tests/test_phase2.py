"""USB-PO phase 2 (`USBPOAgent.fine_tune_model` and `objective`) against the maths of DESIGN.md.

J = model shift + model bias, with
    W2(p, q)    = sqrt(||mu_p - mu_q||^2 + ||sigma_p - sigma_q||^2)          (diagonal Gaussians)
    model shift = W2(p_M1^k1(s, a), p_M2^k2(s, a))
    model bias  = 1/(B-1) * sum_{b != k2} W2(p_M2^k2(s, a), p_M2^b(s, a)),
both averaged over the (s, a) pairs. J is recomputed here in float64 numpy from the members'
Gaussians, independently of `usbpo_cli.models.wasserstein`. The loop's control flow (descent, best
snapshot kept, early stopping on a relative gain above `phase2_min_improvement`, elites re-picked
by holdout MSE, skipped on an empty model buffer) is checked on a toy ensemble, some cases with
the validation values scripted so that the expected step count and snapshot follow by hand.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from cli_helpers import assert_validation  # tests/ is on sys.path

from usbpo_cli.agents.buffers import SeedBuffers
from usbpo_cli.agents.usbpo import USBPOAgent, USBPOConfig
from usbpo_cli.models.ensemble import FitResult, GaussianEnsemble

ENV = "InvertedPendulum-v4"  # obs 4, act 1: model inputs 5, outputs 5
State = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# helpers


def make_agent(**overrides: object) -> USBPOAgent:
    """A USB-PO agent with a tiny ensemble (5 members, 2 hidden layers of 16)."""
    options: dict[str, object] = {
        "ensemble_size": 5,
        "num_elites": 5,
        "model_hidden_size": 16,
        "model_hidden_layers": 2,
        "hidden_size": 16,
        "rollout_batch_size": 64,
        "epoch_length": 100,
        "model_train_freq": 50,
        "initial_steps": 10,
        "phase2_batch_size": 64,
        "phase2_val_size": 64,
        "phase2_lr": 1e-3,
        "phase2_max_steps": 10,
        "phase2_patience": 10,
    }
    options.update(overrides)
    return USBPOAgent(ENV, USBPOConfig(**options), seed=0, total_steps=1000)


def prepare(
    agent: USBPOAgent, scale: float = 0.3, seed: int = 0
) -> tuple[GaussianEnsemble, FitResult]:
    """Freeze M1, perturb the agent's model into a different M2, fill the model buffer with
    (s, a) pairs and build the phase-1 holdout set; returns (M1, FitResult)."""
    torch.manual_seed(seed)
    model = agent.model
    frozen = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        for param in model.net.parameters():
            param.add_(scale * torch.randn_like(param))
    n = agent.model_buffer.capacity
    obs, act = torch.randn(n, agent.obs_dim), torch.randn(n, agent.act_dim)
    agent.model_buffer.add_batch(obs, act, torch.zeros(n), obs, torch.zeros(n))
    holdout_inputs = torch.randn(200, model.in_dim)
    holdout_targets = torch.randn(200, model.out_dim)
    fit = FitResult(0.0, 0.0, torch.zeros(model.ensemble_size), 1, holdout_inputs, holdout_targets)
    return frozen, fit


def gaussians(model: GaussianEnsemble, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Every member's mean and standard deviation, [B, N, out], as float64 numpy."""
    with torch.no_grad():
        mean, logvar = model(inputs)
    return mean.double().numpy(), np.exp(0.5 * logvar.double().numpy())


def w2(mp: np.ndarray, sp: np.ndarray, mq: np.ndarray, sq: np.ndarray) -> np.ndarray:
    """W2 between diagonal Gaussians, over the last axis."""
    return np.sqrt(((mp - mq) ** 2).sum(-1) + ((sp - sq) ** 2).sum(-1))


def shift_bias_by_hand(
    frozen: GaussianEnsemble,
    model: GaussianEnsemble,
    inputs: torch.Tensor,
    k1: np.ndarray | list[int],
    k2: np.ndarray | list[int],
) -> tuple[float, float]:
    """Batch-mean model shift and model bias with member k1[i] of M1 and k2[i] of M2 for
    sample i, written out as the sums of DESIGN.md."""
    m1, s1 = gaussians(frozen, inputs)
    m2, s2 = gaussians(model, inputs)
    members, n = m2.shape[0], m2.shape[1]
    shifts, biases = [], []
    for i in range(n):
        a, b = int(k1[i]), int(k2[i])
        shifts.append(w2(m1[a, i], s1[a, i], m2[b, i], s2[b, i]))
        others = [w2(m2[b, i], s2[b, i], m2[o, i], s2[o, i]) for o in range(members) if o != b]
        biases.append(sum(others) / (members - 1))
    return float(np.mean(shifts)), float(np.mean(biases))


def expected_j(frozen: GaussianEnsemble, model: GaussianEnsemble, inputs: torch.Tensor) -> float:
    """J averaged exactly over the elite draws: every (k1, k2) pair of elites alike."""
    n = inputs.shape[0]
    total, pairs = 0.0, 0
    for k1 in frozen.elites[0].tolist():
        for k2 in model.elites[0].tolist():
            shift, bias = shift_bias_by_hand(frozen, model, inputs, [k1] * n, [k2] * n)
            total, pairs = total + shift + bias, pairs + 1
    return total / pairs


def state_of(model: GaussianEnsemble) -> State:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def same_weights(a: State, b: State) -> bool:
    """Exactly equal parameters and normaliser (elites are re-picked after phase 2: excluded)."""
    return all(torch.equal(a[key], b[key]) for key in a if key != "elites")


class Spy:
    """Wraps `agent.objective`. Training calls (no k1 given) run the real J; each validation
    call (k1 given, one before the first step and one after every step) snapshots the model
    and returns either the real J or the next value of `script`."""

    def __init__(self, agent: USBPOAgent, script: list[float] | None = None) -> None:
        self.agent, self.real = agent, agent.objective
        self.script = None if script is None else iter(script)
        self.states: list[State] = []  # [phase-1 model, after step 1, after step 2, ...]
        self.values: list[float] = []
        self.validations: list[tuple] = []  # (inputs, k1, k2) of each validation call
        self.train_calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]] = []
        self.after_step: list[float] = []  # J of the previous training batch after its step
        self.grad_l1: list[float] = []
        agent.objective = self

    def __call__(
        self,
        frozen: GaussianEnsemble,
        inputs: torch.Tensor,
        k1: torch.Tensor | None = None,
        k2: torch.Tensor | None = None,
        frozen_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if inputs.dim() == 3:  # the agent's one seed: judge it as a lone seed, answer per seed
            lone = [x if x is None else x[0] for x in (k1, k2)]
            out = None if frozen_out is None else tuple(x[0] for x in frozen_out)
            return self(frozen, inputs[0], *lone, out).reshape(1)
        model = self.agent.model
        if k1 is None:  # a training step: draw the members here so the batch can be re-scored
            k1 = frozen.elites[0][torch.randint(frozen.num_elites, (inputs.shape[0],))]
            k2 = model.elites[0][torch.randint(model.num_elites, (inputs.shape[0],))]
            j = self.real(frozen, inputs, k1, k2)
            self.train_calls.append((inputs, k1, k2, j.item()))
            return j
        if self.train_calls:  # the step has been taken: re-score its batch, read its gradient
            batch, t1, t2, _ = self.train_calls[-1]
            with torch.no_grad():
                self.after_step.append(self.real(frozen, batch, t1, t2).item())
            grads = [p.grad.abs().sum().item() for p in model.parameters() if p.grad is not None]
            self.grad_l1.append(sum(grads))
        self.states.append(state_of(model))
        self.validations.append((inputs, k1, k2))
        if self.script is not None:
            value = torch.tensor(next(self.script), dtype=torch.float64)
        else:
            value = self.real(frozen, inputs, k1, k2, frozen_out)
        self.values.append(value.item())
        return value


def rows_within(rows: torch.Tensor, pool: torch.Tensor) -> bool:
    """Whether every row of `rows` is a row of `pool`."""
    return bool((rows.unsqueeze(1) == pool.unsqueeze(0)).all(-1).any(1).all())


def steps_recorded(agent: USBPOAgent) -> int:
    """The `phase2_steps` metric this training recorded (see `OffPolicyAgent.record`)."""
    values = agent.recorded("phase2_steps")
    assert len(values) == 1
    return int(values[0])


# ---------------------------------------------------------------------------------------------
# the objective


@pytest.mark.parametrize("terms", ["both", "shift", "bias"])
def test_objective_matches_an_independent_w2_computation(terms: str) -> None:
    """J = shift + bias ("both"), shift only or bias only, each against the float64 sums of
    DESIGN.md with the same per-sample members k1 (M1's elites) and k2 (M2's elites)."""
    agent = make_agent(num_elites=3, phase2_terms=terms)
    frozen, _ = prepare(agent)
    torch.manual_seed(1)
    inputs = torch.randn(48, agent.model.in_dim)
    k1 = frozen.elites[0][torch.randint(3, (48,))]
    k2 = agent.model.elites[0][torch.randint(3, (48,))]
    shift, bias = shift_bias_by_hand(frozen, agent.model, inputs, k1.numpy(), k2.numpy())
    assert shift > 0.1 and bias > 0.1 and abs(shift - bias) > 0.1  # the terms are told apart
    expected = {"both": shift + bias, "shift": shift, "bias": bias}[terms]
    got = agent.objective(frozen, inputs, k1, k2).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # M1's predictions passed in once give the same J
    cached = frozen.member_mean_std(inputs, k1)
    assert agent.objective(frozen, inputs, k1, k2, cached).item() == pytest.approx(got, rel=1e-6)


def test_objective_draws_its_members_from_each_ensembles_elites() -> None:
    """Without given members, k1 comes from M1's elites and k2 from M2's: with one elite each
    (M1: member 4, M2: member 2) J is the by-hand J with those members for every sample."""
    agent = make_agent(num_elites=1)
    frozen, _ = prepare(agent)
    frozen.elites.fill_(4)
    agent.model.elites.fill_(2)
    inputs = torch.randn(32, agent.model.in_dim)
    shift, bias = shift_bias_by_hand(frozen, agent.model, inputs, [4] * 32, [2] * 32)
    assert agent.objective(frozen, inputs).item() == pytest.approx(shift + bias, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# descent and the best snapshot


def test_one_step_moves_j_down_by_the_first_order_amount() -> None:
    """Adam's first step is theta -= lr * g / (|g| + eps), so to first order the training
    batch's J changes by -lr * sum|g| < 0 (descent; ascent would give +lr * sum|g|). The batch
    is `phase2_batch_size` (s, a) pairs from the model buffer."""
    lr = 1e-5
    agent = make_agent(phase2_max_steps=1, phase2_lr=lr)
    frozen, fit = prepare(agent)
    spy = Spy(agent)
    agent.fine_tune_model(frozen, fit)
    assert steps_recorded(agent) == 1
    (batch, _, _, before), after = spy.train_calls[0], spy.after_step[0]
    # the step's batch: phase2_batch_size (s, a) pairs from the model buffer
    buffer = agent.model_buffer
    assert batch.shape == (agent.config.phase2_batch_size, agent.model.in_dim)
    assert rows_within(batch, torch.cat([buffer.obs, buffer.act], dim=-1))
    first_order = -lr * spy.grad_l1[0]
    assert first_order < -1e-5  # a change far above float32 noise on J ~ 1
    assert after - before == pytest.approx(first_order, rel=0.05)


def test_phase2_lowers_j_and_keeps_its_best_snapshot() -> None:
    """With real validation on `phase2_val_size` real holdout pairs: the kept model scores the
    lowest validation J seen (recomputed independently), strictly below the phase-1 model's,
    every snapshot being scored on the same pairs and members; and the expected J over the
    elite draws falls on the holdout inputs."""
    agent = make_agent(phase2_max_steps=20, phase2_patience=20, phase2_lr=1e-3)
    frozen, fit = prepare(agent)
    j_before = expected_j(frozen, agent.model, fit.holdout_inputs)
    spy = Spy(agent)
    agent.fine_tune_model(frozen, fit)
    inputs, k1, k2 = spy.validations[-1]  # phase2_val_size pairs from the real holdout set
    assert inputs.shape == (agent.config.phase2_val_size, agent.model.in_dim)
    assert rows_within(inputs, fit.holdout_inputs)
    for other in spy.validations:  # every snapshot scored on the same pairs and members
        assert all(torch.equal(a, b) for a, b in zip(other, spy.validations[-1]))
    shift, bias = shift_bias_by_hand(frozen, agent.model, inputs, k1.numpy(), k2.numpy())
    best = int(np.argmin(spy.values))
    assert shift + bias == pytest.approx(spy.values[best], rel=1e-5)
    assert same_weights(state_of(agent.model), spy.states[best])
    assert spy.values[best] < 0.95 * spy.values[0]  # phase 2 improved on the phase-1 model
    assert expected_j(frozen, agent.model, fit.holdout_inputs) < 0.95 * j_before


def test_every_step_worse_restores_the_phase1_model_exactly() -> None:
    """The phase-1 model is the first snapshot: if validation J rises after every step, the
    weights that remain are exactly the phase-1 weights, after `phase2_patience` steps."""
    agent = make_agent(phase2_max_steps=10, phase2_patience=4, phase2_lr=1e-2)
    frozen, fit = prepare(agent)
    phase1 = state_of(agent.model)
    spy = Spy(agent, script=[1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0])
    agent.fine_tune_model(frozen, fit)
    assert steps_recorded(agent) == 4
    assert not same_weights(spy.states[-1], phase1)  # the steps did move the weights
    assert same_weights(state_of(agent.model), phase1)


def test_gradient_ascent_restores_the_phase1_model_exactly() -> None:
    """The same with real validation: the optimiser's step is replaced by an ascent step on J,
    so no snapshot beats the phase-1 model and it is what remains."""
    agent = make_agent(phase2_max_steps=20, phase2_patience=3)
    frozen, fit = prepare(agent)
    phase1 = state_of(agent.model)

    def ascend() -> None:
        with torch.no_grad():
            for param in agent.model.parameters():
                if param.grad is not None:
                    param.add_(param.grad.sign(), alpha=2e-2)

    agent.phase2_opt.step = ascend
    spy = Spy(agent)
    agent.fine_tune_model(frozen, fit)
    assert all(value > spy.values[0] for value in spy.values[1:])  # every step made J worse
    assert steps_recorded(agent) == 3
    assert same_weights(state_of(agent.model), phase1)


# ---------------------------------------------------------------------------------------------
# early stopping on scripted validation values


def shrinking(start: float, factor: float, count: int) -> list[float]:
    return [start * factor**i for i in range(count)]


@pytest.mark.parametrize(
    ("script", "patience", "max_steps", "steps", "best"),
    [
        # never better: stop after exactly `patience` steps, keep the phase-1 model
        pytest.param([1.0] * 12, 3, 10, 3, 0, id="flat"),
        # 10% better every step: run all `max_steps`, keep the last
        pytest.param(shrinking(1.0, 0.9, 8), 2, 6, 6, 6, id="always-better"),
        # relative gain 1.01e-4 > 1e-4 each step: every step counts as an improvement
        pytest.param(shrinking(1.0, 1 - 1.01e-4, 8), 2, 6, 6, 6, id="just-above-threshold"),
        # relative gain 0.99e-4 < 1e-4 against the phase-1 J: no step counts
        pytest.param([1.0] + [1 - 0.99e-4] * 10, 3, 10, 3, 0, id="just-below-threshold"),
        # gains are measured against the best J, not the previous one: 0.6e-4 then 1.2e-4
        # below 1.0 is an improvement at step 2 (only 0.6e-4 against step 1's value)
        pytest.param([1.0, 1 - 0.6e-4] + [1 - 1.2e-4] * 10, 3, 10, 5, 2, id="against-best"),
        # an improvement resets the count: worse, worse, better, then worse until patience
        pytest.param([1.0, 1.2, 1.1, 0.5, 0.6, 0.7, 0.8, 0.9], 3, 10, 6, 3, id="reset"),
        # the best in the middle of a run cut by max_steps
        pytest.param([1.0, 0.9, 0.8, 0.85, 0.95, 0.99, 1.0], 10, 5, 5, 2, id="best-in-middle"),
        # relative, not absolute: at J ~ 1000 a drop of 0.05 is a gain of 5e-5 (none), and a
        # drop of 0.2 is 2e-4 (one)
        pytest.param([1000.0] + [999.95] * 4, 3, 10, 3, 0, id="relative-at-scale-1000"),
        pytest.param([1000.0, 999.8] + [999.79] * 4, 3, 10, 4, 1, id="relative-gain-at-1000"),
    ],
)
def test_early_stopping_and_restored_snapshot(
    script: list[float], patience: int, max_steps: int, steps: int, best: int
) -> None:
    """Steps taken and the snapshot kept for scripted validation J values (the first is the
    phase-1 model's): a step improves when (best - J) / |best| > 1e-4; the loop stops after
    `phase2_patience` steps in a row without improvement or `phase2_max_steps` in all, and the
    model is restored to the snapshot after step `best` (0: the phase-1 model)."""
    agent = make_agent(phase2_max_steps=max_steps, phase2_patience=patience, phase2_lr=1e-2)
    frozen, fit = prepare(agent)
    spy = Spy(agent, script=script)
    agent.fine_tune_model(frozen, fit)
    assert steps_recorded(agent) == steps
    assert len(spy.states) == steps + 1
    for i in range(steps):  # every step moved the weights, so the snapshots are told apart
        assert not same_weights(spy.states[i], spy.states[i + 1])
    assert same_weights(state_of(agent.model), spy.states[best])


def test_a_gain_of_exactly_the_threshold_is_not_an_improvement() -> None:
    """The rule is a strict `>`: with the threshold 2^-10 and J going from 1 to 1 - 2^-10
    (both exact in binary), the relative gain equals the threshold and does not count."""
    agent = make_agent(phase2_max_steps=6, phase2_patience=2, phase2_min_improvement=2.0**-10)
    frozen, fit = prepare(agent)
    Spy(agent, script=[1.0] + [1.0 - 2.0**-10] * 6)
    agent.fine_tune_model(frozen, fit)
    assert steps_recorded(agent) == 2


def test_validation_pairs_are_drawn_from_the_whole_holdout_set() -> None:
    """`phase2_val_size` rows drawn from all 200 holdout rows (not from a leading few): the
    draw covers rows far down the set, and every validation call sees the same rows."""
    agent = make_agent(phase2_max_steps=3, phase2_val_size=64)
    frozen, fit = prepare(agent)
    spy = Spy(agent)
    agent.fine_tune_model(frozen, fit)
    inputs = spy.validations[0][0]
    assert inputs.shape[0] == 64 and rows_within(inputs, fit.holdout_inputs)
    index = (inputs.unsqueeze(1) == fit.holdout_inputs.unsqueeze(0)).all(-1).float().argmax(1)
    assert index.max() >= 100 and len(set(index.tolist())) > 40  # about 54 distinct expected
    for other, _, _ in spy.validations[1:]:
        assert torch.equal(other, inputs)


def test_leftover_gradients_from_phase_1_do_not_leak_into_phase_2() -> None:
    """Phase 1 leaves its last minibatch's gradients on the parameters; phase 2 must clear them
    before each step, so stale gradients change nothing: two agents, one with large junk
    gradients on every parameter, take the same phase-2 steps."""
    results = []
    for junk in (False, True):
        agent = make_agent(phase2_max_steps=3, phase2_patience=3)
        frozen, fit = prepare(agent)
        if junk:
            for param in agent.model.parameters():
                param.grad = torch.full_like(param, 50.0)
        torch.manual_seed(5)
        agent.fine_tune_model(frozen, fit)
        results.append(state_of(agent.model))
    assert same_weights(results[0], results[1])


# ---------------------------------------------------------------------------------------------
# elites and the empty buffer


def test_elites_are_repicked_by_holdout_mse_after_phase2() -> None:
    """Member b predicts the constant mean c_b (zero last-layer weights), so its holdout MSE
    against constant targets t is (c_b - t)^2: with c = (0.5, 0.1, 0.4, 0.05, 0.3) and
    t = 0.42 the MSEs are (0.0064, 0.1024, 0.0004, 0.1369, 0.0144), so the two elites are
    members 2 and 0, replacing the worst two (3 and 1) set before phase 2. The validation
    members were drawn per sample from M1's elites and M2's elites before the re-pick."""
    agent = make_agent(num_elites=2, phase2_max_steps=10, phase2_patience=2)
    frozen, fit = prepare(agent)
    out = agent.model.out_dim
    last = agent.model.net.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        for member, c in enumerate((0.5, 0.1, 0.4, 0.05, 0.3)):
            last.bias[member, 0, :out] = c
        agent.model.elites.copy_(torch.tensor([3, 1]))
    fit.holdout_targets = torch.full_like(fit.holdout_targets, 0.42)
    frozen.elites.copy_(torch.tensor([4, 2]))
    spy = Spy(agent, script=[1.0, 2.0, 3.0, 4.0])  # every step worse: the model built remains
    agent.fine_tune_model(frozen, fit)
    _, k1, k2 = spy.validations[-1]  # validation members: per sample, from each ensemble's elites
    assert set(k1.tolist()) == {4, 2} and set(k2.tolist()) == {3, 1}
    assert sorted(agent.model.elites[0].tolist()) == [0, 2]
    assert agent.model.elites[0].tolist() == [2, 0]  # best first


def test_phase2_is_skipped_while_the_model_buffer_is_empty() -> None:
    """On the first training there is no model data: 0 steps, the model and the phase-2
    optimiser untouched."""
    agent = make_agent()
    frozen, fit = prepare(agent)
    agent.model_buffers = SeedBuffers(
        agent.model_buffer.capacity, agent.obs_dim, agent.act_dim, agent.device, agent.generators
    )
    before = state_of(agent.model)
    agent.fine_tune_model(frozen, fit)
    assert steps_recorded(agent) == 0
    assert all(torch.equal(before[key], value) for key, value in agent.model.state_dict().items())
    assert len(agent.phase2_opt.state) == 0


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({}, True),
        ({"phase2_patience": 1, "phase2_max_steps": 1}, True),  # one step, then stop
        ({"phase2_patience": 0}, False),
        ({"phase2_max_steps": 0}, False),
        ({"phase2_batch_size": 0}, False),
        ({"phase2_val_size": 0}, False),
        ({"phase2_terms": "shift"}, True),
        ({"phase2_terms": "both,bias"}, False),
        ({"real_ratio": 1.5}, False),  # MBPO's own settings are checked too
        ({"rollout_batch_size": 0}, False),
    ],
)
def test_usbpo_settings_are_checked_at_their_bounds(changes: dict, ok: bool) -> None:
    assert_validation(USBPOConfig(**changes), ok)
