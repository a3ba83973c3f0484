"""The shared Dyna loop (`DynaAgent`, MBPO's) against hand computations on constructed states.

- Model rollouts: with a deterministic fake model, policy and termination rule, exactly the
  transitions up to and including each row's terminal one land in the model buffer.
- Policy batches: `int(batch_size * real_ratio)` real rows, the rest model rows.
- Delta (USB-PO's Fig. 3): the bias estimate on model-buffer inputs from before the update minus
  the same on the inputs rolled out after it, with the bias estimate recomputed by hand.
- MBPO's linear rollout-length schedule and the model buffer's capacity, by hand.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from cli_helpers import assert_validation  # tests/ is on sys.path

from baselines.mbpo import MBPOAgent
from usbpo_cli.agents.base import LoopState
from usbpo_cli.agents.buffers import Batch, ReplayBuffer, SeedBuffers
from usbpo_cli.agents.dyna import DynaConfig
from usbpo_cli.envs.termination import TerminationFn
from usbpo_cli.models.ensemble import GaussianEnsemble

ENV = "InvertedPendulum-v4"  # obs 4, act 1


def make_agent(**overrides: object) -> MBPOAgent:
    """An MBPO agent with a tiny ensemble and tiny policy."""
    options: dict[str, object] = {
        "ensemble_size": 5,
        "num_elites": 3,
        "model_hidden_size": 16,
        "model_hidden_layers": 2,
        "hidden_size": 16,
        "rollout_batch_size": 4,
        "epoch_length": 100,
        "model_train_freq": 50,
        "initial_steps": 10,
        "rollout_schedule": (1, 2, 4, 4),
    }
    options.update(overrides)
    return MBPOAgent(ENV, DynaConfig(**options), seed=0, total_steps=1000)


class RowIdPolicy:
    """`act(obs)`: the first observation coordinate as the action (a row's id below)."""

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return obs[:, :1].clone()


def counting_model_step(
    obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic model: obs[3] counts the steps, reward = 10 * row + step (states with a
    leading seed axis, as the agent rolls out)."""
    rew = 10 * obs[..., 0] + obs[..., 3]
    next_obs = obs.clone()
    next_obs[..., 3] += 1
    return rew, next_obs


def terminate_at(steps: dict[int, int]) -> TerminationFn:
    """Row r terminates on its step `steps[r]` (0-based) and only then: a rollout that the
    rule would let continue afterwards must still stay stopped."""

    def termination(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        rows, step = next_obs[:, 0].long(), next_obs[:, 3] - 1
        target = torch.tensor([steps.get(int(r), -1) for r in rows], dtype=step.dtype)
        return step == target

    return termination


def start_states(n: int) -> torch.Tensor:
    """Row r starts at (r, 0, 0, 0), for the agent's one seed: [1, n, 4]."""
    obs = torch.zeros(n, 4)
    obs[:, 0] = torch.arange(n, dtype=torch.float32)
    return obs.unsqueeze(0)


@pytest.mark.parametrize(
    ("terminal", "expected_counts"),
    [
        # row 0 ends at step 0, row 1 at step 2, row 2 never, row 3 at step 1; length 4
        pytest.param({0: 0, 1: 2, 3: 1}, [1, 3, 4, 2], id="one-row-survives"),
        # every row ends before the last step: the rollout stops early
        pytest.param({0: 0, 1: 2, 2: 1, 3: 1}, [1, 3, 2, 2], id="all-end-early"),
    ],
)
def test_terminated_rollouts_add_nothing_after_their_terminal_transition(
    terminal: dict[int, int], expected_counts: list[int]
) -> None:
    """Row r stores its transitions for steps 0..t_r (the terminal one with done = 1), none
    after; a never-terminating row stores all `rollout_length` steps with done = 0. Each stored
    transition continues from the previous one's next state."""
    agent = make_agent()
    agent.rollout_start_states = start_states
    agent.policy = RowIdPolicy()
    agent.model.sample_step = counting_model_step
    agent.termination = terminate_at(terminal)
    [added] = agent.rollout(agent.config.initial_steps + 2 * agent.config.epoch_length)
    assert agent.rollout_length == 4
    data = agent.model_buffer.ordered()
    assert added == len(agent.model_buffer) == sum(expected_counts)
    rows, steps = data.obs[:, 0].long(), data.obs[:, 3].long()
    stored = sorted(zip(rows.tolist(), steps.tolist(), data.done.tolist()))
    expected = [
        (row, step, 1.0 if terminal.get(row) == step else 0.0)
        for row, count in enumerate(expected_counts)
        for step in range(count)
    ]
    assert stored == expected
    assert torch.equal(data.act[:, 0], data.obs[:, 0])
    assert torch.equal(data.rew, 10 * data.obs[:, 0] + data.obs[:, 3])
    assert torch.equal(data.next_obs[:, 3], data.obs[:, 3] + 1)


def test_rollout_resizes_the_model_buffer_when_the_length_grows() -> None:
    """Schedule (0, 1, 1, 4): length 1 before the first epoch ends, 4 after. Capacity is
    retain * length * rollout_batch_size * epoch_length / model_train_freq: 1*1*4*100/50 = 8,
    then 1*4*4*100/50 = 32."""
    agent = make_agent(rollout_schedule=(0, 1, 1, 4))
    assert agent.model_buffer.capacity == 8
    agent.rollout_start_states = start_states
    own_policy = agent.policy
    agent.policy = RowIdPolicy()
    agent.model.sample_step = counting_model_step
    agent.termination = terminate_at({})
    assert agent.rollout(10) == [4]  # one step of 4 rows (the one seed's)
    assert agent.rollout(110) == [16]  # four steps of 4 rows
    assert agent.model_buffer.capacity == 32
    assert len(agent.model_buffer) == 20  # the length-1 rollout's rows were kept
    assert agent.recorded("rollout_length") == [1.0, 4.0]
    # A checkpoint taken now resumes in a fresh agent (capacity 8 again) with the grown
    # buffer: capacity 32, the same 20 rows in the same order, the same length.
    fresh = make_agent(rollout_schedule=(0, 1, 1, 4))
    assert fresh.model_buffer.capacity == 8
    agent.policy = own_policy  # the scripted one has no state to save
    agent.loops[0] = LoopState(obs=np.zeros(agent.obs_dim))  # as after an evaluation row
    fresh.load_state_dict(agent.state_dict())
    assert fresh.model_buffer.capacity == 32 and fresh.rollout_length == 4
    for mine, theirs in zip(fresh.model_buffer.ordered(), agent.model_buffer.ordered()):
        assert torch.equal(mine, theirs)


# ---------------------------------------------------------------------------------------------
# policy batches


def fill(buffer: ReplayBuffer, n: int, sign: float) -> None:
    """n transitions whose every field is `sign` (done: 1 for model rows, 0 for real)."""
    ones = torch.ones(n)
    buffer.add_batch(
        sign * torch.ones(n, buffer.obs_dim),
        sign * torch.ones(n, buffer.act_dim),
        sign * ones,
        sign * torch.ones(n, buffer.obs_dim),
        (sign < 0) * ones,
    )


@pytest.mark.parametrize(
    ("batch_size", "real_ratio", "n_real"),
    [(256, 0.05, 12), (10, 0.37, 3), (64, 0.5, 32)],  # int(12.8) = 12, int(3.7) = 3
)
def test_policy_batch_mixes_int_batch_times_ratio_real_rows(
    batch_size: int, real_ratio: float, n_real: int
) -> None:
    """Real rows carry +1 everywhere, model rows -1 (done 1): a batch has exactly
    int(batch_size * real_ratio) rows of +1, the rest -1, and no row mixes the two; while the
    model buffer is empty the whole batch is real."""
    agent = make_agent(batch_size=batch_size, real_ratio=real_ratio)
    fill(agent.real_buffer, 50, +1.0)
    batch = Batch(*(field[0] for field in agent.policy_batch()))  # the agent's one seed
    assert batch.rew.shape == (batch_size,)
    assert bool((batch.rew == 1).all())
    fill(agent.model_buffer, 8, -1.0)
    batch = Batch(*(field[0] for field in agent.policy_batch()))
    assert batch.rew.shape == (batch_size,)
    real = batch.rew == 1
    assert int(real.sum()) == n_real
    assert int((batch.rew == -1).sum()) == batch_size - n_real
    sign = batch.rew.unsqueeze(-1)
    for field in (batch.obs, batch.act, batch.next_obs):
        assert torch.equal(field, sign.expand_as(field))
    assert torch.equal(batch.done, (~real).float())


# ---------------------------------------------------------------------------------------------
# delta


def bias_by_hand(model: GaussianEnsemble, inputs: torch.Tensor, k: int) -> float:
    """1/(B-1) * sum_{b != k} W2(p^k, p^b), W2 = sqrt(||mu-mu'||^2 + ||sigma-sigma'||^2), float64,
    averaged over the inputs."""
    with torch.no_grad():
        mean, logvar = model(inputs)
    mean, std = mean.double().numpy(), np.exp(0.5 * logvar.double().numpy())
    members = mean.shape[0]
    per_sample = sum(
        np.sqrt(((mean[k] - mean[b]) ** 2).sum(-1) + ((std[k] - std[b]) ** 2).sum(-1))
        for b in range(members)
        if b != k
    )
    return float(np.mean(per_sample / (members - 1)))


def test_bias_estimate_matches_the_formula() -> None:
    """With one elite (member 3) the bias estimate is deterministic: the by-hand sum."""
    agent = make_agent(num_elites=1)
    agent.model.elites.fill_(3)
    inputs = torch.randn(64, agent.model.in_dim)
    assert agent._bias_estimate(inputs.unsqueeze(0)).item() == pytest.approx(
        bias_by_hand(agent.model, inputs, 3), rel=1e-5
    )


def test_delta_is_bias_before_minus_bias_after() -> None:
    """The model buffer holds only (s_b, a_b) = (3, ..., 3) from before the update; the update
    (fit_model a no-op) rolls out only (s_a, a_a) = (1, ..., 1, 0). With one elite (member 3)
    delta = bias(s_b, a_b) - bias(s_a, a_a), each by hand, and positive here (the members
    disagree more at (3, ..., 3); asserted before it is relied on). Nothing is recorded on the
    first training (empty model buffer)."""
    torch.manual_seed(0)
    agent = make_agent(num_elites=1, rollout_batch_size=8, model_retain_epochs=5)
    agent.model.elites.fill_(3)
    agent.fit_model = lambda step: None
    agent.rollout_start_states = lambda n: torch.ones(1, n, agent.obs_dim)  # its one seed
    agent.policy = SimpleNamespace(act=lambda obs: torch.zeros(obs.shape[0], agent.act_dim))
    agent.model.sample_step = lambda obs, act, generator=None: (
        torch.zeros(obs.shape[:-1]),
        obs.clone(),
    )
    agent.termination = terminate_at({})
    step = agent.config.initial_steps

    agent.train_model_and_roll_out(step)  # the first training: nothing before it to compare with
    assert agent.recorded("delta") == []

    agent.model_buffers = SeedBuffers(
        agent.model_buffer.capacity, agent.obs_dim, agent.act_dim, agent.device, agent.generators
    )
    fill(agent.model_buffer, 20, 3.0)
    agent.train_model_and_roll_out(step)
    before = bias_by_hand(agent.model, torch.full((1, agent.model.in_dim), 3.0), 3)
    rolled = torch.cat([torch.ones(1, agent.obs_dim), torch.zeros(1, agent.act_dim)], dim=-1)
    after = bias_by_hand(agent.model, rolled, 3)
    assert before > after + 0.05 and after > 0.01  # a clear sign, and before + after differs
    assert agent.recorded("delta") == [pytest.approx(before - after, rel=1e-4)]


# ---------------------------------------------------------------------------------------------
# schedule and capacity


def paper_agent(**settings: object) -> MBPOAgent:
    """An MBPO agent with the paper's loop settings (and a tiny model and policy)."""
    small = {"model_hidden_size": 16, "model_hidden_layers": 2, "hidden_size": 16}
    return MBPOAgent(ENV, DynaConfig(**small, **settings), seed=0, total_steps=1000)


def length_at(schedule: tuple[int, int, int, int], step: int) -> int:
    agent = paper_agent(rollout_schedule=schedule, initial_steps=5000, epoch_length=1000)
    return agent.rollout_length_at(step)


def at_epoch(epoch: int, offset: int = 0) -> int:
    """The env step at which `epoch` epochs have passed since the 5000 initial steps."""
    return 5000 + epoch * 1000 + offset


@pytest.mark.parametrize(
    ("epoch", "offset", "length"),
    [
        (-5, 0, 1),  # still exploring
        (0, 0, 1),
        (20, 0, 1),  # min_epoch
        (21, 0, 1),  # 1 + 1/130 * 14 = 1.11
        (29, 999, 1),  # 1 + 9/130 * 14 = 1.97: truncated, not rounded
        (30, 0, 2),  # 1 + 10/130 * 14 = 2.08
        (85, 0, 8),  # 1 + 65/130 * 14 = 8
        (85, 999, 8),  # same epoch
        (100, 0, 9),  # 1 + 80/130 * 14 = 9.62
        (141, -1, 13),  # still epoch 140: 1 + 120/130 * 14 = 13.92
        (141, 0, 14),  # 1 + 121/130 * 14 = 14.03
        (150, 0, 15),  # max_epoch
        (400, 0, 15),  # and beyond
    ],
)
def test_rollout_length_follows_mbpos_linear_schedule(epoch: int, offset: int, length: int) -> None:
    """Hopper's (20, 150, 1, 15): length = int(1 + (epoch - 20) / 130 * 14), clipped to
    [1, 15], with epoch = (step - initial_steps) // epoch_length."""
    assert length_at((20, 150, 1, 15), at_epoch(epoch, offset)) == length


def test_rollout_length_on_other_tasks_schedules() -> None:
    """Ant (20, 100, 1, 25) at epoch 60: 1 + 40/80 * 24 = 13; Humanoid (20, 300, 1, 25) at
    epoch 160: 1 + 140/280 * 24 = 13, at 300: 25; constant schedules stay at 1."""
    assert length_at((20, 100, 1, 25), at_epoch(60)) == 13
    assert length_at((20, 100, 1, 25), at_epoch(100)) == 25
    assert length_at((20, 300, 1, 25), at_epoch(160)) == 13
    assert length_at((20, 300, 1, 25), at_epoch(300)) == 25
    for epoch in (0, 20, 75, 150, 500):
        assert length_at((20, 150, 1, 1), at_epoch(epoch)) == 1
        assert length_at((1, 15, 1, 1), at_epoch(epoch)) == 1


@pytest.mark.parametrize(
    ("settings", "length", "capacity"),
    [
        # paper: 1 epoch * 15 steps * 100k starts * (1000 / 250) rollouts per epoch
        ({}, 15, 6_000_000),
        # Humanoid: retain 5, train every 1000 steps: 5 * 25 * 100k * 1
        ({"model_retain_epochs": 5, "model_train_freq": 1000}, 25, 12_500_000),
        # InvertedPendulum: epoch 250 steps, train every 250: 1 * 1 * 100k * 1
        ({"epoch_length": 250}, 1, 100_000),
        # tiny: 1 * 3 * 256 * (100 / 50)
        ({"rollout_batch_size": 256, "epoch_length": 100, "model_train_freq": 50}, 3, 1536),
    ],
)
def test_model_capacity_holds_retain_epochs_of_rollouts(
    settings: dict[str, int], length: int, capacity: int
) -> None:
    """capacity = model_retain_epochs * length * rollout_batch_size * epoch_length /
    model_train_freq (transitions of `model_retain_epochs` epochs of rollouts)."""
    assert paper_agent(**settings).model_capacity(length) == capacity


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({}, True),
        ({"real_ratio": 0.0}, True),  # model data only
        ({"real_ratio": 1.0}, True),  # real data only
        ({"real_ratio": -0.01}, False),
        ({"real_ratio": 1.01}, False),
        ({"ensemble_size": 7, "num_elites": 7}, True),  # every member an elite
        ({"ensemble_size": 7, "num_elites": 8}, False),
        ({"model_hidden_layers": 2, "model_weight_decay": (1e-4, 1e-4, 1e-4)}, True),
        ({"model_hidden_layers": 2, "model_weight_decay": (1e-4,) * 4}, False),
        ({"rollout_schedule": (5, 5, 1, 1)}, True),  # a fixed length from epoch 5
        ({"rollout_schedule": (6, 5, 1, 1)}, False),
        ({"rollout_schedule": (0, 5, 0, 1)}, False),
        ({"rollout_schedule": (0, 5, 1, 0)}, False),
        ({"model_holdout_ratio": 0.5}, True),
        ({"model_holdout_ratio": 0.0}, False),
        ({"model_holdout_ratio": 1.0}, False),
        ({"gamma": 1.5}, False),  # the off-policy loop's own checks come along
        *[
            ({name: 0}, False)
            for name in (
                "model_train_freq",
                "rollout_batch_size",
                "ensemble_size",
                "num_elites",
                "model_hidden_size",
                "model_hidden_layers",
                "model_batch_size",
                "model_retain_epochs",
                "model_patience",
            )
        ],
    ],
)
def test_dyna_settings_are_checked_at_their_bounds(changes: dict, ok: bool) -> None:
    assert_validation(DynaConfig(**changes), ok)
