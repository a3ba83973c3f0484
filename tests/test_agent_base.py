"""What every agent shares (agents/base.py), checked against definitions written in the test:
the evaluation protocol (S seeds evaluated together see exactly the calls each would see
alone), one row per evaluation (losses averaged over the updates that reported them, metrics
averaged, summed or the latest, times split between the seeds), the order in which a row is
checked, checkpointed and written, and each seed's own generator and evaluation env."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.spaces import Box

from usbpo_cli.agents.base import (
    AgentConfig,
    BaseAgent,
    LoopState,
    check_finite,
    evaluate_episodes,
    evaluate_seeds,
    evaluation_row,
    per_seed,
)
from usbpo_cli.envs.tasks import make_env
from usbpo_cli.errors import TrainingDiverged

ENV = "Pendulum-v1"


class Scripted(gym.Env):
    """Episodes of fixed lengths; each ends by termination or by truncation as scripted, and
    the reward of a step is 10 * (episode number) + (step in the episode) + action[0]. Every
    call is logged."""

    observation_space = Box(-np.inf, np.inf, (2,), np.float32)
    action_space = Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, lengths: list[int], truncates: list[bool]) -> None:
        self.lengths, self.truncates = lengths, truncates
        self.calls: list[tuple] = []
        self.episode, self.t = -1, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        self.episode, self.t = self.episode + 1, 0
        self.calls.append(("reset",))
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.array([self.episode, self.t], dtype=np.float32)

    def step(self, action: np.ndarray) -> tuple:
        self.calls.append(("step", float(action[0])))
        reward = 10.0 * self.episode + self.t + float(action[0])
        self.t += 1
        length = self.lengths[self.episode % len(self.lengths)]
        ended = self.t == length
        truncate = self.truncates[self.episode % len(self.truncates)]
        return self._obs(), reward, ended and not truncate, ended and truncate, {}


def scripted_return(episode: int, length: int, action: float) -> float:
    """The closed form of one scripted episode's return under a constant action."""
    return sum(10.0 * episode + t + action for t in range(length))


def test_evaluate_episodes_sums_each_episode_ended_either_way() -> None:
    env = Scripted(lengths=[3, 2, 4], truncates=[False, True, False])
    returns = evaluate_episodes(env, lambda obs: np.array([0.5]), 3)
    assert returns == [
        scripted_return(0, 3, 0.5),
        scripted_return(1, 2, 0.5),
        scripted_return(2, 4, 0.5),
    ]
    # one reset per episode and no step past the last episode's end
    assert env.calls.count(("reset",)) == 3
    assert len(env.calls) == 3 + 3 + 2 + 4


def test_evaluating_seeds_together_gives_each_env_its_lone_calls() -> None:
    """Three seeds whose episodes end at different steps: evaluated together, each env gets
    exactly the calls (and so the returns) it gets when evaluated alone, and a seed whose
    episodes are done is stepped no further while the others go on."""
    scripts = [([3], [False]), ([1, 5], [True, False]), ([2, 2], [False, True])]

    def act(obs: np.ndarray) -> np.ndarray:
        # each seed's action depends on its own observation only (episode and step)
        return 0.1 * obs[:, :1] - 0.05 * obs[:, 1:]

    together = [Scripted(*script) for script in scripts]
    returns = evaluate_seeds(together, act, 2)
    for env, script, got in zip(together, scripts, returns):
        alone = Scripted(*script)
        assert evaluate_episodes(alone, lambda o: act(o[None])[0], 2) == got
        assert env.calls == alone.calls
    assert [len(r) for r in returns] == [2, 2, 2]


def test_no_episodes_means_no_call_to_the_env() -> None:
    env = Scripted([3], [False])
    assert evaluate_seeds([env, Scripted([3], [False])], lambda o: o[:, :1], 0) == [[], []]
    assert env.calls == []


def test_an_evaluation_row_from_its_definition() -> None:
    returns, train = [1.0, 2.0, 4.0], [3.0, 5.0]
    row = evaluation_row(2999, 1000, returns, train, 12.5)
    mean = 7.0 / 3.0
    population_std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 3)
    assert row["env_step"] == 2999 and row["epoch"] == 2
    assert row["eval_return_mean"] == pytest.approx(mean)
    assert row["eval_return_std"] == pytest.approx(population_std)
    assert row["train_return"] == 4.0 and row["wall_time_s"] == 12.5
    assert evaluation_row(3000, 1000, returns, train, 0.0)["epoch"] == 3
    empty = evaluation_row(10, 5, [], [], 1.0)
    assert empty["eval_return_mean"] is None and empty["eval_return_std"] is None
    assert empty["train_return"] is None


def test_per_seed_takes_one_per_seed_or_one_for_a_lone_seed() -> None:
    assert per_seed(["a", "b"], 2) == ["a", "b"]
    assert per_seed("ab", 1) == ["ab"]  # a string is one value, not a sequence of seeds
    assert per_seed(print, 1) == [print]
    with pytest.raises(ValueError, match="one per seed"):
        per_seed(["a"], 2)
    with pytest.raises(ValueError, match="one per seed"):
        per_seed(["a", "b", "c"], 2)
    with pytest.raises(ValueError, match="single one"):
        per_seed(print, 2)


# The losses of every training phase (README: critic, actor, temperature, model; and USB-PO's
# phase-2 terms), written out here rather than read from the code's own list.
DIVERGENCE_LOSSES = ["critic_loss", "actor_loss", "alpha", "model_loss_train"]
DIVERGENCE_LOSSES += ["model_shift", "model_bias"]


@pytest.mark.parametrize("column", DIVERGENCE_LOSSES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_loss_is_a_divergence_naming_the_seed(column: str, bad: float) -> None:
    with pytest.raises(TrainingDiverged, match=f"{column} became .* before env step 70") as info:
        check_finite({"env_step": 70, column: bad, "critic_loss_x": 1.0}, 70, seed=2)
    assert info.value.seed == 2


def test_finite_losses_and_absent_values_are_not_a_divergence() -> None:
    row = {column: 1e30 for column in DIVERGENCE_LOSSES}
    check_finite(row, 5)
    check_finite({column: None for column in DIVERGENCE_LOSSES}, 5)
    check_finite({"eval_return_std": float("nan")}, 5)  # not a loss: an unlucky evaluation


# --- an agent over the shared base ------------------------------------------------------


class Constant(BaseAgent):
    """The smallest agent: a fixed action per seed, several seeds at once."""

    vectorises = True

    def act_deterministic_seeds(self, obs: np.ndarray) -> np.ndarray:
        return np.array([[0.3 * (s + 1)] for s in range(self.n_seeds)], dtype=np.float32)

    def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
        return self.act_deterministic_seeds(obs[None])[0]


def agent(seeds: list[int] | int, eval_episodes: int = 1) -> Constant:
    config = AgentConfig(epoch_length=100, eval_episodes=eval_episodes)
    made = Constant(ENV, config, seed=seeds, total_steps=500)
    made.loops = [LoopState(obs=np.zeros(3, np.float32)) for _ in made.seeds]
    return made


class FixedTimer:
    """A phase timer whose phases took the given seconds, so a row's times are known."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        yield

    def pop(self) -> dict[str, float]:
        return dict(self.phases)


def test_a_row_averages_each_loss_over_the_updates_that_reported_it() -> None:
    """Three updates report the critic's loss and one reports the actor's (TD3's delayed
    actor): each seed's row holds each loss's own mean."""
    two = agent([3, 4])
    two.timers = FixedTimer({})
    critic = [torch.tensor([1.0, 10.0]), torch.tensor([2.0, 20.0]), torch.tensor([6.0, 60.0])]
    for step, loss in enumerate(critic):
        update = {"critic_loss": loss}
        if step == 1:
            update["actor_loss"] = torch.tensor([-5.0, 7.0])
        two.add_losses(update)
    rows = two._rows(200, [[], []], 8.0)
    assert rows[0]["critic_loss"] == pytest.approx(3.0)
    assert rows[1]["critic_loss"] == pytest.approx(30.0)
    assert rows[0]["actor_loss"] == pytest.approx(-5.0)
    assert rows[1]["actor_loss"] == pytest.approx(7.0)
    # the next row starts from nothing
    two.add_losses({"critic_loss": torch.tensor([4.0, 8.0])})
    rows = two._rows(300, [[], []], 8.0)
    assert (rows[0]["critic_loss"], rows[1]["critic_loss"]) == (4.0, 8.0)
    assert "actor_loss" not in rows[0]


def test_a_lone_seeds_scalar_losses_average_the_same_way() -> None:
    one = agent(5)
    one.timers = FixedTimer({})
    for value in (2.0, 3.0, 7.0):
        one.add_losses({"alpha": torch.tensor(value)})
    assert one._row(100, [1.0, 2.0], 1.0)["alpha"] == pytest.approx(4.0)


def test_recorded_metrics_are_averaged_summed_or_the_latest() -> None:
    two = agent([0, 1])
    two.timers = FixedTimer({})
    two.record("rollout_length", 4.0)  # one value for every seed
    two.record("rollout_length", [6.0, 10.0])  # one per seed
    two.record("model_steps", [3, 5], total=True)
    two.record("model_steps", torch.tensor([4.0, 1.0]), total=True)
    two.record("holdout", [9.0, 9.0], latest=True)
    two.record("holdout", [0.5, 0.25], latest=True)
    assert two.recorded("rollout_length", 1) == [4.0, 10.0]
    rows = two._rows(100, [[], []], 2.0)
    assert (rows[0]["rollout_length"], rows[1]["rollout_length"]) == (5.0, 7.0)
    assert (rows[0]["model_steps"], rows[1]["model_steps"]) == (7.0, 6.0)
    assert (rows[0]["holdout"], rows[1]["holdout"]) == (0.5, 0.25)
    assert two.recorded("rollout_length") == []  # cleared with the row
    later = two._rows(200, [[], []], 2.0)
    assert "model_steps" not in later[0] and "holdout" not in later[0]


def test_each_seed_reports_its_share_of_the_time_and_its_own_returns() -> None:
    """S seeds trained in one process: each row carries 1/S of the elapsed time and of every
    phase, and its own evaluation and training returns."""
    three = agent([0, 1, 2], eval_episodes=2)
    three.timers = FixedTimer({"model": 6.0, "policy": 3.0})
    rows = three._rows(400, [[1.0], [2.0, 4.0], []], 9.0)
    for s, row in enumerate(rows):
        assert row["wall_time_s"] == pytest.approx(3.0)
        assert row["t_model"] == pytest.approx(2.0) and row["t_policy"] == pytest.approx(1.0)
        assert row["env_step"] == 400 and row["epoch"] == 4
        alone = evaluate_episodes(
            Constant(ENV, AgentConfig(), seed=s, total_steps=1).eval_env,
            lambda obs, s=s: np.array([0.3 * (s + 1)], dtype=np.float32),
            2,
        )
        assert row["eval_return_mean"] == pytest.approx(np.mean(alone))
    assert [row["train_return"] for row in rows] == [1.0, 3.0, None]
    assert len({row["eval_return_mean"] for row in rows}) == 3


class Log:
    """One seed's writer, reporter and checkpointer, all appending to one shared journal."""

    def __init__(self, seed: int, journal: list[tuple]) -> None:
        self.seed, self.journal = seed, journal

    def write(self, row: dict[str, Any]) -> None:
        self.journal.append(("write", self.seed, row["env_step"]))

    def report(self, step: int, phase: str | None, last: float | None) -> None:
        self.journal.append(("report", self.seed, step, last))

    def checkpoint(self, payload: dict, step: int) -> None:
        assert payload["row"]["env_step"] == step
        assert payload["agent"]["loop"]["next_step"] == step  # the loop is past the row
        self.journal.append(("checkpoint", self.seed, step))


def commit(two: Constant, rows: list[dict], journal: list[tuple]) -> None:
    logs = [Log(s, journal) for s in range(two.n_seeds)]
    obs = [np.full(3, s + 1.0, np.float32) for s in range(two.n_seeds)]
    two.commit_rows(rows, obs, logs, [log.report for log in logs], [log.checkpoint for log in logs])


def row_at(step: int, eval_mean: float | None, **losses: float) -> dict[str, Any]:
    return {"env_step": step, "eval_return_mean": eval_mean, "wall_time_s": 1.5, **losses}


def test_a_row_is_checkpointed_before_it_is_written_and_the_loop_moves_past_it() -> None:
    two = agent([0, 1])
    two.loops[0].train_returns = [5.0]
    journal: list[tuple] = []
    commit(two, [row_at(100, 7.0), row_at(100, None)], journal)
    assert journal == [
        ("checkpoint", 0, 100),
        ("write", 0, 100),
        ("report", 0, 100, 7.0),
        ("checkpoint", 1, 100),
        ("write", 1, 100),
        ("report", 1, 100, None),
    ]
    for s, loop in enumerate(two.loops):
        assert (loop.next_step, loop.rows, loop.wall_time_s) == (100, 1, 1.5)
        assert loop.train_returns == [] and loop.obs[0] == s + 1.0
    assert two.loops[0].eval_returns == [7.0] and two.loops[1].eval_returns == []
    commit(two, [row_at(200, 2.0), row_at(200, 3.0)], journal)
    commit(two, [row_at(300, 5.0), row_at(300, 1.0)], journal)
    assert two.loops[0].eval_returns == [7.0, 2.0, 5.0] and two.loops[1].rows == 3
    assert two.seed_results(0) == {"final_return": 5.0, "best_return": 7.0, "rows": 3}
    assert two.seed_results(1) == {"final_return": 1.0, "best_return": 3.0, "rows": 3}


def test_one_seeds_divergence_stops_every_seeds_row() -> None:
    """Seed 1 diverges: no seed's row is checkpointed or written, so the seeds' checkpoints
    stay at one step and roll back together."""
    two = agent([0, 1])
    journal: list[tuple] = []
    with pytest.raises(TrainingDiverged) as info:
        commit(two, [row_at(100, 1.0, critic_loss=0.5), row_at(100, 1.0, alpha=math.nan)], journal)
    assert info.value.seed == 1
    assert journal == [] and all(loop.rows == 0 for loop in two.loops)


def test_a_runs_summary_times_it_from_its_start() -> None:
    one = agent(0)
    one.loop.eval_returns, one.loop.rows = [1.0, 4.0, 2.0], 3
    began = time.perf_counter()
    summary = one.summary(300, began - 5.0)  # a run that began 5 s before this call
    took = time.perf_counter() - began
    assert 5.0 <= summary.wall_time_s <= 5.0 + took
    assert (summary.env_steps, summary.final_return, summary.best_return) == (300, 2.0, 4.0)
    assert summary.rows == 3


def test_a_seed_without_evaluations_has_no_final_or_best_return() -> None:
    results = agent(0).seed_results(0)
    assert math.isnan(results["final_return"]) and math.isnan(results["best_return"])
    assert results["rows"] == 0


def test_one_seed_trained_beside_others_draws_what_it_draws_alone() -> None:
    """A seed's generator and evaluation env are those of a lone run of that seed, and differ
    from every other seed's."""
    together = agent([11, 12])
    alone = agent(12)
    assert torch.equal(
        torch.rand(5, generator=together.generators[1]), torch.rand(5, generator=alone.generator)
    )
    first = [env.reset()[0] for env in together.eval_envs]
    assert np.array_equal(first[1], alone.eval_env.reset()[0])
    assert not np.array_equal(first[0], first[1])


def test_the_evaluation_env_is_not_the_training_envs_seed() -> None:
    """Evaluation episodes start from other states than the training env of the same seed
    (made with the seed itself), so a policy is not scored on the episodes it trained on."""
    evaluated = agent(3).eval_env.reset()[0]
    assert not np.array_equal(evaluated, make_env(ENV, seed=3).reset()[0])


def test_an_agent_that_does_not_say_it_vectorises_refuses_several_seeds() -> None:
    """Training several seeds at once is opt-in (`vectorises`): an agent that does not claim
    it (PPO, ALM) gets one seed per process."""

    class Lone(BaseAgent):
        def act_deterministic(self, obs: np.ndarray) -> np.ndarray:
            return np.zeros(1, np.float32)

    with pytest.raises(ValueError, match="one seed at a time"):
        Lone(ENV, AgentConfig(), seed=[1, 2], total_steps=10)
    with pytest.raises(ValueError, match="one seed at a time"):
        Constant(ENV, AgentConfig(), seed=[], total_steps=10)
    lone = Lone(ENV, AgentConfig(eval_episodes=2), seed=[4], total_steps=10)
    assert lone.seeds == [4]
    # a lone agent evaluates through its one-observation policy
    alone = evaluate_episodes(make_env(ENV, seed=4 + 10_000), lone.act_deterministic, 2)
    assert lone.evaluate() == [alone]


def test_on_a_cpu_a_seeds_networks_start_from_its_one_stream() -> None:
    """On a CPU, initial weights are drawn from the seed's own generator, so everything a lone
    seed draws is one stream from its seed (off the CPU they come from a CPU twin)."""
    two = agent([5, 6])
    assert two.init_generators == two.generators and two.init_generator is two.generator


def test_making_an_agent_keeps_freed_memory_for_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every agent applies util/allocator's malloc settings when it is made (a training step
    frees and reallocates the same blocks); the outcome is recorded once per process."""
    from usbpo_cli.util import allocator

    monkeypatch.setattr(allocator, "_applied", None)
    agent(0)
    assert allocator._applied is not None


def test_a_lone_seeds_row_is_committed_like_one_of_many() -> None:
    one = agent(0)
    journal: list[tuple] = []
    log = Log(0, journal)
    one.commit_row(row_at(100, 4.0), np.ones(3, np.float32), log, log.report, log.checkpoint)
    assert journal == [("checkpoint", 0, 100), ("write", 0, 100), ("report", 0, 100, 4.0)]
    assert one.loop.rows == 1 and one.loop.eval_returns == [4.0]


def test_a_seeds_state_round_trips_its_generator_evaluation_env_and_loop() -> None:
    """Save seed 1 of two, run on, load: its generator draws and evaluation returns repeat,
    its loop position is back, and seed 0 is untouched."""
    two = agent([0, 1], eval_episodes=1)
    two.loops[1].next_step, two.loops[1].eval_returns = 300, [1.0, 2.0]
    two.eval_envs[1].reset()
    two.eval_envs[1].step(np.array([0.5], np.float32))
    saved = two.state_dict(1)
    draws = torch.rand(4, generator=two.generators[1])
    steps = [two.eval_envs[1].step(np.array([0.2], np.float32))[0] for _ in range(3)]
    seed0 = torch.rand(4, generator=two.generators[0])
    two.loops[1] = LoopState(obs=np.ones(3, np.float32), next_step=999)

    two.load_state_dict(saved, seed=1)
    assert torch.equal(torch.rand(4, generator=two.generators[1]), draws)
    again = [two.eval_envs[1].step(np.array([0.2], np.float32))[0] for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(steps, again))
    assert two.loops[1].next_step == 300 and two.loops[1].eval_returns == [1.0, 2.0]
    assert not torch.equal(torch.rand(4, generator=two.generators[0]), seed0)


def test_loading_a_state_drops_the_half_built_row_and_its_times() -> None:
    """What was accumulated before a rollback (losses, metrics, phase times) belongs to
    nothing the resumed run writes."""
    one = agent(0)
    saved = one.state_dict(0)
    one.add_losses({"critic_loss": torch.tensor(100.0)})
    one.record("rollout_length", 9.0)
    with one.timers("model"):
        pass
    one.load_state_dict(saved)
    row = one._row(100, [], 1.0)
    assert "critic_loss" not in row and "rollout_length" not in row
    assert "t_model" not in row and "t_eval" in row


def test_a_reseeded_stream_is_new_per_salt_and_per_seed_and_repeatable() -> None:
    two = agent([0, 1])

    def draws(s: int, salt: int) -> torch.Tensor:
        two.reseed(salt, s)
        return torch.rand(6, generator=two.generators[s])

    original = torch.rand(6, generator=torch.Generator().manual_seed(0))
    first = draws(0, 1)
    assert not torch.equal(first, original)
    assert torch.equal(draws(0, 1), first)
    assert not torch.equal(draws(0, 2), first)
    assert not torch.equal(draws(1, 1), first)


def test_every_agent_refuses_a_negative_evaluation_count_or_an_empty_epoch() -> None:
    from usbpo_cli.errors import UsageError

    AgentConfig(epoch_length=1, eval_episodes=0).validate()  # no evaluation is allowed
    with pytest.raises(UsageError, match="eval_episodes must be >= 0, got -1"):
        AgentConfig(eval_episodes=-1).validate()
    with pytest.raises(UsageError, match="epoch_length must be positive, got 0"):
        AgentConfig(epoch_length=0).validate()
