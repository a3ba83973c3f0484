"""The time a person plans by (`runs/status.py`): the cost model, the ETA of a running run, its
status file and a grid's ETA.

The cost model's numbers here are worked by hand from README's table ("Time estimates and
progress"): 0.5 ms a real env step, 5.0 ms a policy update scaled by (width/256)^2 x batch/256,
42 us a phase-1 epoch per real transition scaled by (width/200)^2, 55 ms a phase-2 step on 1024
pairs, 2.8 us a rollout state step, 0.3 ms an evaluation step, 1.5 ms a PPO env step, x2 for
ALM's update and x1.5 for one thread. Each sum is written out term by term in its comment, so a
wrong constant, schedule or count in the code shows as a different total."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from usbpo_cli.runs import status as status_module
from usbpo_cli.runs.status import (
    StageEta,
    StatusReporter,
    episode_limit,
    estimate,
    eta_window,
    format_duration,
    grid_eta,
    read_status,
    stage_eta,
    write_status,
)

# A SAC config small enough to price by hand: 100 random steps, then 2 updates per step of
# 128-wide networks on batches of 512 (scale (128/256)^2 x 512/256 = 0.5: 2.5 ms an update).
SAC = {
    "initial_steps": 100,
    "epoch_length": 100,
    "eval_episodes": 2,
    "updates_per_step": 2,
    "hidden_size": 128,
    "batch_size": 512,
}

# An MBPO config: 200 random steps, a model training every 100 steps on at most 250 rows, 5
# epochs of a 100-wide ensemble ((100/200)^2 = 0.25), rollouts of 1000 states, length 1 up to
# epoch 1 then rising to 4 by epoch 3. One 5 ms update (256 wide, batch 256) per step.
MBPO = {
    "initial_steps": 200,
    "epoch_length": 100,
    "eval_episodes": 1,
    "updates_per_step": 1,
    "model_train_freq": 100,
    "rollout_schedule": [1, 3, 1, 4],
    "rollout_batch_size": 1000,
    "model_hidden_size": 100,
    "model_max_epochs": 5,
    "replay_size": 250,
}


def parts(config: dict, steps: int, **kwargs) -> tuple[float, float, float]:
    priced = estimate(config, steps, **kwargs)
    assert priced["total"] == pytest.approx(priced["random"] + priced["learning"], rel=1e-12)
    return priced["random"], priced["learning"], priced["total"]


def test_a_model_free_run_priced_by_hand() -> None:
    # random: 100 steps x 0.5 ms = 0.05 s
    # learning: 200 steps x (0.5 ms + 2 x 2.5 ms) = 1.1 s, plus evaluations: rows at 0, 100,
    # 200, 300 = 4 rows x 2 episodes x 50 steps x 0.3 ms = 0.12 s
    assert parts(SAC, 300, episode_steps=50) == pytest.approx((0.05, 1.22, 1.27), rel=1e-12)
    # one thread: 1.5x every part; a machine timed at 3x the reference: 3x, whatever threads
    assert parts(SAC, 300, threads=1, episode_steps=50) == pytest.approx(
        (0.075, 1.83, 1.905), rel=1e-12
    )
    assert parts(SAC, 300, threads=1, episode_steps=50, slowdown=3.0) == pytest.approx(
        (0.15, 3.66, 3.81), rel=1e-12
    )
    # resumed at 150: no random steps left; 150 learning steps x 5.5 ms = 0.825 s; rows at
    # 200 and 300 and the one written on resuming: 3 x 2 x 50 x 0.3 ms = 0.09 s
    assert parts(SAC, 300, start=150, episode_steps=50) == pytest.approx(
        (0.0, 0.915, 0.915), rel=1e-12
    )
    # resumed inside the random phase, at 40: 60 random steps = 0.03 s; the learning part is
    # the fresh run's (4 rows: 300 // 100 - 40 // 100 + 1)
    assert parts(SAC, 300, start=40, episode_steps=50) == pytest.approx(
        (0.03, 1.22, 1.25), rel=1e-12
    )
    # fewer steps than the random phase: all random, 80 x 0.5 ms; one row of evaluations
    assert parts(SAC, 80, episode_steps=50) == pytest.approx((0.04, 0.03, 0.07), rel=1e-12)


def test_the_policy_update_price_scales_with_width_and_batch_and_doubles_for_alm() -> None:
    # ALM: 2 x 2.5 ms an update: 200 x (0.5 ms + 2 x 5 ms) = 2.1 s, plus 0.12 s of evaluations
    alm = SAC | {"alm_latent_dim": 50}
    assert parts(alm, 300, episode_steps=50)[1] == pytest.approx(2.22, rel=1e-12)
    # 32 wide on batches of 32: scale 1/64 x 1/8 is below the 0.05 floor (per-op overhead
    # does not shrink with the shapes): 0.25 ms an update: 200 x (0.5 + 0.5) ms = 0.2 s
    tiny = SAC | {"hidden_size": 32, "batch_size": 32}
    assert parts(tiny, 300, episode_steps=50)[1] == pytest.approx(0.32, rel=1e-12)
    # the defaults: 256 wide, batch 256, 1 update a step, 5 evaluation episodes, 1000-step
    # epochs, no random phase: 2000 x 5.5 ms = 11 s; rows at 0, 1000, 2000: 3 x 5 x 1000 x
    # 0.3 ms = 4.5 s
    assert parts({}, 2000) == pytest.approx((0.0, 15.5, 15.5), rel=1e-12)


def test_a_model_based_run_priced_by_hand() -> None:
    # random: 200 x 0.5 ms = 0.1 s; learning: 300 x 5.5 ms = 1.65 s; evaluations: 6 rows x 1
    # episode x 10 steps x 0.3 ms = 0.018 s. Trainings at 200, 300 and 400:
    #   phase 1, 5 epochs x rows x 42 us x 0.25: rows 200 -> 0.0105 s, then 250 (the replay
    #   size) -> 0.013125 s twice
    #   rollouts, 1000 states x length x 2.8 us: epochs 0 and 1 at length 1 (0.0028 s each),
    #   epoch 2 at int(1 + (2 - 1) / (3 - 1) x 3) = 2 (0.0056 s)
    model = 0.0105 + 2 * 0.013125 + 2 * 0.0028 + 0.0056
    learning = 1.65 + model + 0.018
    assert parts(MBPO, 500, episode_steps=10) == pytest.approx(
        (0.1, learning, 0.1 + learning), rel=1e-12
    )
    # resumed at 250: the next training is at 300 (the one at 200 is done), so trainings at
    # 300 and 400; learning 250 x 5.5 ms; rows at 300, 400, 500 and on resuming: 4 x 3 ms
    model = 2 * 0.013125 + 0.0028 + 0.0056
    assert parts(MBPO, 500, start=250, episode_steps=10)[1] == pytest.approx(
        1.375 + model + 0.012, rel=1e-12
    )
    # resumed exactly at a training step (300): that training is still to do
    assert parts(MBPO, 500, start=300, episode_steps=10)[1] == pytest.approx(
        200 * 5.5e-3 + model + 3 * 10 * 0.3e-3, rel=1e-12
    )


def test_model_epochs_are_the_typical_17_at_most_the_configured_limit() -> None:
    def model_part(config: dict) -> float:
        no_model = {k: v for k, v in config.items() if k != "model_train_freq"}
        return parts(config, 500, episode_steps=10)[1] - parts(no_model, 500, episode_steps=10)[1]

    rollouts = 2 * 0.0028 + 0.0056
    rows = (200 + 250 + 250) * 42e-6 * 0.25  # one epoch over the rows of the three trainings
    assert model_part(MBPO) == pytest.approx(5 * rows + rollouts, rel=1e-9)
    assert model_part(MBPO | {"model_max_epochs": 40}) == pytest.approx(
        17 * rows + rollouts, rel=1e-9
    )
    # no width named: the default 200, priced as the reference ensemble (x1, not x0.25)
    default_width = {k: v for k, v in MBPO.items() if k != "model_hidden_size"}
    assert model_part(default_width) == pytest.approx(4 * 5 * rows + rollouts, rel=1e-9)
    # no limit (None, as config.json holds it) and no replay cap: 17 epochs over all the rows
    free = MBPO | {"model_max_epochs": None}
    del free["replay_size"]
    assert model_part(free) == pytest.approx(17 * (200 + 300 + 400) * 42e-6 * 0.25 + rollouts)


def test_the_rollout_length_follows_mbpos_schedule() -> None:
    def rollout_part(schedule: list[int]) -> float:
        config = MBPO | {"rollout_schedule": schedule, "model_max_epochs": 1, "replay_size": 1}
        phase1 = 3 * 1 * 42e-6 * 0.25  # one epoch on one row at each of the three trainings
        learning = parts(config, 500, episode_steps=10)[1]
        return (learning - 1.65 - 0.018 - phase1) / (1000 * 2.8e-6)  # in states per row

    # lengths at epochs 0, 1, 2 (trainings at 200, 300, 400), in rollouts of 1000 states
    assert rollout_part([1, 3, 1, 4]) == pytest.approx(1 + 1 + 2)
    assert rollout_part([0, 1, 1, 5]) == pytest.approx(1 + 5 + 5)  # capped at its max length
    assert rollout_part([0, 4, 2, 6]) == pytest.approx(2 + 3 + 4)  # 2 + e/4 x 4
    # min = max epoch: no ramp, the min length throughout (as dyna's schedule)
    assert rollout_part([1, 1, 3, 9]) == pytest.approx(3 + 3 + 3)


def test_usbpo_phase2_is_priced_from_the_second_training_on() -> None:
    # 50 steps x 55 ms x 512 / 1024 pairs x 0.25 (the model's width) = 0.34375 s, at the
    # trainings at 300 and 400 (phase 2 is skipped on the first, at 200)
    base = parts(MBPO, 500, episode_steps=10)[1]
    usbpo = MBPO | {"phase2_max_steps": 50, "phase2_batch_size": 512}
    assert parts(usbpo, 500, episode_steps=10)[1] == pytest.approx(base + 2 * 0.34375)
    # at most 75 (the typical stopping point) of phase2_max_steps = 200
    usbpo["phase2_max_steps"] = 200
    assert parts(usbpo, 500, episode_steps=10)[1] == pytest.approx(base + 2 * 75 * 0.055 * 0.125)


def test_cmlo_is_priced_on_its_mean_interval_and_its_every_step_rollouts() -> None:
    cmlo = MBPO | {
        "cmlo_alpha": 0.5,
        "cmlo_min_interval": 100,
        "cmlo_max_interval": 300,
        "cmlo_rollout_every_step": True,
        "cmlo_rollout_batch_size": 10,
    }
    # trainings every (100 + 300) // 2 = 200 steps: at 200 (200 rows) and 400 (250 rows),
    # 5 epochs each, with no rollout of their own: 0.0105 + 0.013125 s. Rollouts of 10 states
    # every step, priced an epoch (100 steps) at a time: lengths 1, 1, 2 at 200, 300, 400:
    # 10 x (1 + 1 + 2) x 100 states x 2.8 us = 0.0112 s
    expected = 1.65 + 0.018 + 0.0105 + 0.013125 + 0.0112
    assert parts(cmlo, 500, episode_steps=10)[1] == pytest.approx(expected, rel=1e-12)
    # a run ending mid-epoch at 450: the last stretch is 50 steps (10 x 2 x 50 states)
    expected = 250 * 5.5e-3 + 5 * 10 * 0.3e-3 + 0.0105 + 0.013125 + 10 * (100 + 100 + 100) * 2.8e-6
    assert parts(cmlo, 450, episode_steps=10)[1] == pytest.approx(expected, rel=1e-12)
    # resumed at 300: rollouts from 300 on (lengths 1 and 2), the training at 400 only
    expected = 200 * 5.5e-3 + 3 * 10 * 0.3e-3 + 0.013125 + 10 * (100 + 200) * 2.8e-6
    assert parts(cmlo, 500, start=300, episode_steps=10)[1] == pytest.approx(expected, rel=1e-12)
    # CMLO's rollouts at each training instead (the switch off): 1000 states x length 1 and 2
    cmlo["cmlo_rollout_every_step"] = False
    expected = 1.65 + 0.018 + 0.0105 + 0.013125 + 1000 * (1 + 2) * 2.8e-6
    assert parts(cmlo, 500, episode_steps=10)[1] == pytest.approx(expected, rel=1e-12)


def test_ppo_is_priced_per_env_step_with_no_random_phase() -> None:
    ppo = {"ppo_num_steps": 2048, "epoch_length": 100, "eval_episodes": 2, "initial_steps": 50}
    # from 100 to 300: 200 x 1.5 ms = 0.3 s; rows at 200, 300 and on resuming: 3 x 2 x 50 x
    # 0.3 ms = 0.09 s; one thread: x1.5
    assert parts(ppo, 300, start=100, episode_steps=50) == pytest.approx((0.0, 0.39, 0.39))
    assert parts(ppo, 300, start=100, threads=1, episode_steps=50) == pytest.approx(
        (0.0, 0.585, 0.585)
    )


def test_the_time_limit_comes_from_the_task() -> None:
    assert episode_limit("Pendulum-v1") == 200
    assert episode_limit("MountainCarContinuous-v0") == 999
    assert episode_limit("Hopper-v4") == 1000
    assert episode_limit("NoSuchTask-v9") == 1000  # unknown: priced as the usual 1000


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "?"),
        (float("inf"), "?"),
        (float("nan"), "?"),
        (-3.0, "0 s"),
        (40.4, "40 s"),
        (89.4, "89 s"),
        (90.0, "2 min"),
        (12 * 60 + 20, "12 min"),
        (89 * 60 + 29, "89 min"),
        (89 * 60 + 31, "1 h 30 min"),
        (3600 + 5 * 60, "65 min"),
        (2 * 3600 + 5 * 60, "2 h 05 min"),
        (26 * 3600 + 59 * 60 + 50, "27 h 00 min"),
    ],
)
def test_durations_read_as_a_person_says_them(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_the_eta_window_spans_two_model_trainings() -> None:
    assert eta_window({}) == 500
    assert eta_window({"model_train_freq": 250}) == 500
    assert eta_window({"model_train_freq": 1000}) == 2000
    assert eta_window({"model_train_freq": 250, "cmlo_max_interval": 1500}) == 3000


def test_a_runs_stage_eta_prices_its_learning_steps_from_the_cost_model() -> None:
    """MBPO on Pendulum-v1 (200-step episodes): a learning step costs the cost model's
    learning part over the learning steps, and the window is two trainings."""
    eta = stage_eta(MBPO, 500, 0, 2, "Pendulum-v1")
    learning = 1.65 + 0.0105 + 2 * 0.013125 + 2 * 0.0028 + 0.0056 + 6 * 200 * 0.3e-3
    assert (eta.total, eta.initial, eta.window) == (500, 200, 200)
    assert eta.learning_step_s == pytest.approx(learning / 300, rel=1e-12)
    slow = stage_eta(MBPO, 500, 0, 2, "Pendulum-v1", slowdown=4.0)
    assert slow.learning_step_s == pytest.approx(4 * learning / 300, rel=1e-12)
    # resumed at 450: 50 learning steps left
    late = stage_eta(MBPO, 500, 450, 2, "Pendulum-v1")
    assert late.learning_step_s == pytest.approx((50 * 5.5e-3 + 2 * 200 * 0.3e-3) / 50)
    # PPO has no random stage, whatever initial_steps a config names
    ppo = stage_eta({"ppo_num_steps": 2048, "initial_steps": 77}, 1000, 0, 2, "Pendulum-v1")
    assert (ppo.initial, ppo.window) == (0, 500)
    # no random phase named: 1000 learning steps of 5.5 ms, rows at 0 and 1000 of 5 episodes
    # x 200 steps x 0.3 ms
    default = stage_eta({}, 1000, 0, 2, "Pendulum-v1")
    assert default.initial == 0
    assert default.learning_step_s == pytest.approx((5.5 + 2 * 5 * 200 * 0.3e-3) / 1000)
    # a finished run: one step priced, never a division by zero
    assert stage_eta(SAC, 300, 300, 2, "Pendulum-v1").learning_step_s == pytest.approx(
        1 * 2 * 200 * 0.3e-3
    )


def test_the_random_stage_is_priced_by_its_own_rate_and_the_model_for_what_follows() -> None:
    eta = StageEta(total=3000, initial_steps=1000, learning_step_s=0.01, window=500)
    assert eta.seconds_left() == (None, "estimate") and eta.text() == "eta ?"
    for step in range(0, 50, 10):  # 40 steps measured: fewer than the 50 a rate needs
        eta.update(step, step * 0.002)
    assert eta.rate() is None
    assert eta.seconds_left() == pytest.approx((2000 * 0.01, "estimate"))
    eta.update(50, 50 * 0.002)  # 50 steps: enough
    assert eta.rate() == pytest.approx(0.002)
    for step in range(60, 110, 10):  # 100 steps at 2 ms
        eta.update(step, step * 0.002)
    assert eta.rate() == pytest.approx(0.002)
    # 900 random steps at 2 ms, then 2000 learning steps at 10 ms
    seconds, basis = eta.seconds_left()
    assert (seconds, basis) == (pytest.approx(900 * 0.002 + 20.0), "estimate")
    assert eta.text() == "eta ~22 s (estimate)"
    # a short window asks for fewer steps: min(50, window // 2)
    short = StageEta(total=3000, initial_steps=1000, learning_step_s=0.01, window=60)
    for step in (0, 29):
        short.update(step, step * 0.002)
    assert short.rate() is None
    short.update(30, 0.06)
    assert short.rate() == pytest.approx(0.002)
    # a run shorter than its random phase has no learning steps left to price
    tiny = StageEta(total=500, initial_steps=1000, learning_step_s=0.01, window=500)
    for step in range(0, 110, 10):
        tiny.update(step, step * 0.002)
    assert tiny.seconds_left() == pytest.approx((400 * 0.002, "estimate"))
    tiny.update(500, 1.0)  # finished inside its random phase: nothing left
    assert tiny.seconds_left() == (0.0, "estimate")


def test_the_learning_stage_is_measured_over_its_window_only() -> None:
    """Time t = step^2 / 1000 (each step dearer than the last): the measured rate is that of
    the samples within the last `window` steps, from the newest one at or before the window's
    start to now."""
    eta = StageEta(total=1000, initial_steps=0, learning_step_s=9.9, window=100)
    for step in range(0, 310, 10):
        eta.update(step, step * step / 1000)
    # window start 300 - 100 = 200: the rate from step 200 (t 40) to 300 (t 90)
    assert eta.rate() == pytest.approx(50 / 100)
    assert eta.seconds_left() == (pytest.approx(700 * 0.5), "measured")
    assert eta.text() == "eta 6 min"  # 350 s
    # a rollback (resumed from an earlier checkpoint) starts measuring again
    eta.update(250, 100.0)
    assert eta.rate() is None
    assert eta.seconds_left() == (pytest.approx(750 * 9.9), "estimate")
    for step in (260, 300):
        eta.update(step, 100.0 + (step - 250) * 0.2)
    assert eta.rate() == pytest.approx(0.2)
    # learning needs window // 2 = 50 steps measured: 40 is not enough
    fresh = StageEta(total=1000, initial_steps=0, learning_step_s=1.0, window=100)
    fresh.update(0, 0.0)
    fresh.update(40, 4.0)
    assert fresh.rate() is None and fresh.seconds_left() == (960.0, "estimate")
    fresh.update(50, 5.0)
    assert fresh.seconds_left() == (pytest.approx(95.0), "measured")
    # a window below 2 is 2 (a rate needs two samples)
    assert StageEta(total=10, initial_steps=0, learning_step_s=1.0, window=1).window == 2


def test_the_rate_is_measured_again_when_learning_begins() -> None:
    eta = StageEta(total=2000, initial_steps=1000, learning_step_s=0.5, window=200)
    for step in range(0, 1000, 100):  # random stage: 1 ms a step
        eta.update(step, step * 0.001)
    assert eta.rate() == pytest.approx(0.001)
    eta.update(1000, 1.0)  # learning begins: the random stage's samples are dropped
    assert list(eta.samples) == [(1000, 1.0)]
    eta.update(1100, 11.0)  # 100 s per 100 steps
    assert eta.seconds_left() == (pytest.approx(900 * 0.1), "measured")


def clocked(monkeypatch: pytest.MonkeyPatch, now: list[float]) -> None:
    """The reporter's clock reads `now[0]` (its module's time only; the wall clock stays)."""
    clock = SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    monkeypatch.setattr(status_module, "time", clock)


def run_folder(tmp_path: Path, config: dict, steps: int, env_id: str = "Pendulum-v1") -> Path:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(
        json.dumps({"steps": steps, "config": config, "env_id": env_id})
    )
    return out


def test_a_runs_status_file_says_where_it_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SAC on Pendulum-v1: 300 steps, 200 of them learning at 0.5 + 2 x 2.5 ms, plus 4 rows x
    2 episodes x 200 steps x 0.3 ms of evaluation: 1.58 s, 7.9 ms a learning step."""
    now = [100.0]
    clocked(monkeypatch, now)
    out = run_folder(tmp_path, SAC, 300)
    report = StatusReporter(out, threads=2, every=2.0)
    assert not report.started and read_status(out) is None
    before = time.time()
    report(0, "env", None)
    status = read_status(out)
    assert status == {
        "state": "running",
        "env_step": 0,
        "steps": 300,
        "phase": "env",
        "eta_s": pytest.approx(200 * 0.0079),
        "eta_basis": "estimate",
        "pid": os.getpid(),
        "updated": status["updated"],
    }
    assert before <= status["updated"] <= time.time()
    now[0] = 101.9  # within `every` of the last write: nothing written
    report(60, None, None)
    assert read_status(out)["env_step"] == 0
    now[0] = 102.0
    report(80, None, None)  # a report without a phase keeps the last one
    assert (read_status(out)["env_step"], read_status(out)["phase"]) == (80, "env")
    report.write("failed")
    assert (read_status(out)["state"], read_status(out)["eta_basis"]) == ("failed", "estimate")
    report.finish(300)
    status = read_status(out)
    assert (status["state"], status["env_step"], status["phase"]) == ("done", 300, "done")
    assert (status["eta_s"], status["eta_basis"]) == (0.0, "measured")


def test_a_resumed_or_slower_run_is_priced_from_where_it_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clocked(monkeypatch, [0.0])
    out = run_folder(tmp_path, SAC, 300)
    # resumed at 150, one thread, on a machine timed at 2x: 150 learning steps, rows at 200,
    # 300 and on resuming: (150 x 5.5 ms + 3 x 2 x 200 x 0.3 ms) x 2 = 2.37 s
    StatusReporter(out, threads=1, slowdown=2.0)(150, "policy", None)
    assert read_status(out)["eta_s"] == pytest.approx(2.37)
    # uncalibrated, one thread: x1.5
    StatusReporter(out, threads=1)(150, "policy", None)
    assert read_status(out)["eta_s"] == pytest.approx(1.185 * 1.5)


@pytest.mark.parametrize(
    ("config_json", "steps"),
    [(None, 0), ("{not json", 0), ('{"steps": 300}', 300), ('{"steps": "x"}', 0)],
)
def test_a_run_without_a_readable_config_reports_no_eta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config_json: str | None, steps: int
) -> None:
    clocked(monkeypatch, [0.0])
    if config_json is not None:
        (tmp_path / "config.json").write_text(config_json)
    report = StatusReporter(tmp_path)
    report(10, "env", None)
    status = read_status(tmp_path)
    assert (status["state"], status["env_step"], status["steps"]) == ("running", 10, steps)
    assert (status["eta_s"], status["eta_basis"]) == (None, "estimate")


def test_the_status_file_is_replaced_whole_or_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_status(tmp_path, {"state": "running", "env_step": 5})
    assert read_status(tmp_path) == {"state": "running", "env_step": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(status_module.os, "replace", refuse)
    write_status(tmp_path, {"state": "done"})  # no exception: progress display only
    assert read_status(tmp_path) == {"state": "running", "env_step": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]  # no temporary left
    write_status(tmp_path / "gone", {"state": "done"})  # a folder removed under the run
    for text in ("{half", "[1, 2]", '"running"'):
        (tmp_path / "status.json").write_text(text)
        assert read_status(tmp_path) is None
    assert read_status(tmp_path / "gone") is None


def test_a_grids_eta_fills_the_slot_that_frees_first() -> None:
    # two slots: 0 and 0; 10 -> (0, 10); 1 -> (1, 10); 1 -> (2, 10): done at 10
    assert grid_eta([], [10.0, 1.0, 1.0], workers=2) == 10.0
    # one running for 3 s: 4 goes to the free slot (4), 2 to the one free at 3 (5): 5
    assert grid_eta([3.0], [4.0, 2.0], workers=2) == 5.0
    # more running than workers (Ray's choice): each running keeps its own slot
    assert grid_eta([10.0, 20.0, 30.0], [5.0], workers=2) == 30.0
    assert grid_eta([], [5.0, 5.0], workers=0) == 10.0  # at least one worker
    assert grid_eta([], [], workers=3) == 0.0


def test_calibration_times_the_reference_update_on_hoppers_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The timed update is the reference figure's: one seed of SAC on Hopper's shapes (11
    observations, 3 actions in [-1, 1]), 256 wide, batch 256, no terminal transitions; at
    least one thread and one timed update whatever is asked (after the warm-up)."""
    import torch

    from usbpo_cli.agents.sac import SAC
    from usbpo_cli.runs import calibration

    seen = []
    update = SAC.update

    def spy(self, batch):  # noqa: ANN001, ANN202
        seen.append(
            {
                "threads": torch.get_num_threads(),
                "seeds": self.seeds,
                "target_entropy": self.target_entropy,
                "critic_layer": tuple(next(self.critic.parameters()).shape),
                "act_scale": self.actor.act_scale.tolist(),
                "act_bias": self.actor.act_bias.tolist(),
                "shapes": [tuple(t.shape) for t in batch],
                "actions_in_bounds": bool((batch.act.abs() <= 1).all()),
                "actions_spread": float(batch.act.min()) < -0.9 < 0.9 < float(batch.act.max()),
                "terminal": float(batch.done.sum()),
            }
        )
        return update(self, batch)

    ticks = iter([0.0, 8.6e-3])
    monkeypatch.setattr(calibration.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(SAC, "update", spy)
    before = torch.get_num_threads()
    assert calibration.measure_slowdown(threads=0, repeats=0) == pytest.approx(8.6 / 4.3)
    assert torch.get_num_threads() == before
    assert len(seen) == 2  # the warm-up and one timed update
    for one in seen:
        assert one == {
            "threads": 1,
            "seeds": 1,
            "target_entropy": -3.0,
            "critic_layer": (2, 11 + 3, 256),  # twin critics on (obs, action), 256 wide
            "act_scale": [1.0, 1.0, 1.0],
            "act_bias": [0.0, 0.0, 0.0],
            "shapes": [(256, 11), (256, 3), (256,), (256, 11), (256,)],
            "actions_in_bounds": True,
            "actions_spread": True,
            "terminal": 0.0,
        }


def test_the_thresholds_are_the_ones_readme_states() -> None:
    """README: the cheaper choices are printed "Before a CPU run the cost model puts above two
    hours", and the CPU is timed "when the reference figures price a CPU run or a local grid
    above 10 minutes"."""
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "Before a CPU run the cost model puts above two hours" in readme
    assert "price a CPU run or a local grid above 10 minutes" in readme
    assert status_module.LONG_RUN_S == 2 * 60 * 60
    assert status_module.CALIBRATE_ABOVE_S == 10 * 60


def test_an_evaluation_every_step_is_priced_every_step() -> None:
    # epoch_length 1: a row after every env step and one on starting: 11 rows for 10 steps
    config = {"epoch_length": 1, "eval_episodes": 1, "ppo_num_steps": 64}
    assert parts(config, 10, episode_steps=10)[1] == pytest.approx(10 * 1.5e-3 + 11 * 3e-3)
    # a config saying 0 (never valid for a run) is priced as 1, not a division by zero
    config["epoch_length"] = 0
    assert parts(config, 10, episode_steps=10)[1] == pytest.approx(10 * 1.5e-3 + 11 * 3e-3)


def test_a_repeated_step_keeps_the_measurement_and_two_samples_always_stay() -> None:
    eta = StageEta(total=1000, initial_steps=0, learning_step_s=9.9, window=100)
    eta.update(0, 0.0)
    eta.update(60, 6.0)
    eta.update(60, 6.0)  # the same step reported again (a phase change): not a rollback
    assert eta.rate() == pytest.approx(0.1)
    # the first and the newest sample are kept however far apart (the window drops only
    # samples that a newer one, still at or before its start, replaces)
    sparse = StageEta(total=5000, initial_steps=0, learning_step_s=9.9, window=100)
    sparse.update(0, 0.0)
    sparse.update(1000, 50.0)
    assert sparse.rate() == pytest.approx(0.05)
    sparse.update(2000, 150.0)  # 1000 is now the newest sample at or before 1900: 0 goes
    assert list(sparse.samples) == [(1000, 50.0), (2000, 150.0)]
    assert sparse.rate() == pytest.approx(0.1)


def test_a_status_before_the_first_report_says_step_zero(tmp_path: Path) -> None:
    """A run refused before its first step (its worker writes `failed`)."""
    StatusReporter(tmp_path).write("failed")
    status = read_status(tmp_path)
    assert (status["state"], status["env_step"], status["steps"]) == ("failed", 0, 0)
    assert (status["phase"], status["eta_s"]) == ("starting", None)


def test_the_config_is_read_once_and_the_eta_measured_across_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SAC, 1000 steps, learning from 100 (window 500: 250 learning steps measured): the
    reporter keeps one StageEta, so after 300 learning steps its ETA is measured."""
    clocked(monkeypatch, [0.0])
    out = run_folder(tmp_path, SAC, 1000)
    report = StatusReporter(out, every=0.0)
    report(0, "env", None)
    assert report.started
    (out / "config.json").unlink()  # read on the first report only
    for step in range(100, 410, 10):
        report(step, "policy", None)
    assert read_status(out)["eta_basis"] == "measured"


def test_a_task_registered_without_a_time_limit_is_priced_at_1000_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gymnasium

    monkeypatch.setattr(gymnasium, "spec", lambda env_id: SimpleNamespace(max_episode_steps=None))
    assert episode_limit("Unlimited-v0") == 1000
