"""CMLO: the event trigger on synthetic streams, the convex-hull coverage, its config (per-task
alpha, the dotted `--set` alias), and a tiny run that logs its model updates and resumes exactly."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import (  # tests/ is on sys.path
    assert_resume_reproduces,
    progress_rows,
    tiny_run,
)
from scipy.spatial import ConvexHull

from baselines.cmlo import CMLOConfig, EventTrigger, coverage_volume, hull_volume, pca_project
from usbpo_cli.agents.dyna import DynaConfig
from usbpo_cli.errors import UsageError
from usbpo_cli.runs.config import resolve_config
from usbpo_cli.runs.csvlog import PROGRESS_COLUMNS
from usbpo_cli.util.settings import parse_overrides

ENV = "InvertedPendulum-v4"

# ---------------------------------------------------------------------------------------------
# the trigger on synthetic streams


def fire_steps(
    trigger: EventTrigger,
    steps: int,
    error: Callable[[int], float] = lambda step: 0.0,
    volume: Callable[[int], float] = lambda step: 1.0,
) -> list[int]:
    """Drive the trigger as the agent does (error after each env step, then the coverage at an
    interval's end, then the rule); returns the steps at which the model was updated."""
    fired = []
    for step in range(steps):
        if trigger.last_update is not None:
            trigger.observe_error(error(step))
        if trigger.coverage_due(step):
            trigger.observe_coverage(volume(step))
        if trigger.should_update(step):
            fired.append(step)
            trigger.updated(step, volume(step))
    return fired


def error_for(term: float, ratio: float = 1.0) -> float:
    """The constant prediction error that makes each interval add `term`: log(ratio*e+1)."""
    return (math.exp(term) - 1.0) / ratio


def make_trigger(alpha: float = 1.0) -> EventTrigger:
    return EventTrigger(alpha=alpha, compute_interval=50, min_interval=150, max_interval=500)


def test_first_update_is_immediate_then_zero_error_waits_for_the_500_step_bound() -> None:
    # zero error adds log(1) = 0 each interval: the sum never exceeds any alpha >= 0
    assert fire_steps(make_trigger(alpha=0.0), 1600) == [0, 500, 1000, 1500]


def test_a_large_sum_still_waits_for_the_150_step_minimum() -> None:
    # each interval adds 5 > alpha already at step 50, yet nothing fires before 150 steps
    trigger = make_trigger(alpha=1.0)
    assert fire_steps(trigger, 700, error=lambda s: error_for(5.0)) == [0, 150, 300, 450, 600]


def test_fires_at_the_first_interval_end_where_the_sum_exceeds_alpha() -> None:
    # 0.3 per interval: 0.9 at 150 (not yet above 1.0), 1.2 at 200 -> fire; then again +200
    trigger = make_trigger(alpha=1.0)
    assert fire_steps(trigger, 700, error=lambda s: error_for(0.3)) == [0, 200, 400, 600]
    # 0.4 per interval: 1.2 at 150 -> fire exactly at the minimum
    trigger = make_trigger(alpha=1.0)
    assert fire_steps(trigger, 400, error=lambda s: error_for(0.4)) == [0, 150, 300]


def test_sum_equal_to_alpha_does_not_fire() -> None:
    trigger = make_trigger(alpha=1.0)
    trigger.updated(0, 1.0)
    trigger.event_sum = 1.0
    assert not trigger.should_update(150)
    trigger.event_sum = 1.0 + 1e-9
    assert trigger.should_update(150)
    assert not trigger.should_update(149)
    trigger.event_sum = 0.0
    assert not trigger.should_update(499) and trigger.should_update(500)


def test_coverage_ratio_scales_the_term_and_uses_the_volume_at_the_last_update() -> None:
    # the volume doubles right after each update: each interval adds log(2e + 1)
    grown = lambda step: 2.0 if step % 1000 else 1.0  # noqa: E731 - volume 1 at the update
    trigger = EventTrigger(alpha=1.0, compute_interval=50, min_interval=150, max_interval=10_000)
    trigger.updated(0, 1.0)
    fired = fire_steps(trigger, 201, error=lambda s: error_for(0.3, ratio=2.0), volume=grown)
    assert fired == [200]
    trigger = EventTrigger(alpha=1.0, compute_interval=50, min_interval=0, max_interval=10_000)
    trigger.updated(0, 4.0)
    for _ in range(50):
        trigger.observe_error(0.5)
    assert trigger.observe_coverage(8.0) == pytest.approx(math.log(2.0 * 0.5 + 1.0))


def test_bias_is_the_running_mean_since_the_last_update_and_resets() -> None:
    trigger = make_trigger()
    trigger.updated(0, 1.0)
    for error in (1.0, 3.0, 5.0, 7.0):
        trigger.observe_error(error)
    assert trigger.bias == 4.0
    assert trigger.observe_coverage(1.0) == pytest.approx(math.log(5.0))
    assert trigger.event_sum == pytest.approx(math.log(5.0))
    trigger.updated(120, 3.0)
    assert (trigger.bias, trigger.event_sum, trigger.last_update) == (0.0, 0.0, 120)
    assert trigger.volume_then == 3.0
    assert not trigger.coverage_due(120) and not trigger.coverage_due(169)
    assert trigger.coverage_due(170) and trigger.coverage_due(220)


# ---------------------------------------------------------------------------------------------
# coverage: convex hull of a 3-D PCA projection

CUBE = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=float)


def test_hull_of_the_unit_cube_scaled_by_two_has_ratio_eight() -> None:
    assert hull_volume(CUBE) == pytest.approx(1.0)
    assert coverage_volume(CUBE) == pytest.approx(1.0)
    assert coverage_volume(2 * CUBE) == pytest.approx(8.0)
    trigger = make_trigger()
    trigger.updated(0, coverage_volume(CUBE))
    trigger.observe_error(1.0)
    assert trigger.observe_coverage(coverage_volume(2 * CUBE)) == pytest.approx(math.log(9.0))


def test_pca_of_points_in_a_3d_subspace_keeps_the_hull_volume() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 3)) * np.array([3.0, 1.0, 0.2])
    basis, _ = np.linalg.qr(rng.normal(size=(11, 3)))  # orthonormal columns in 11-D
    embedded = points @ basis.T + rng.normal(size=11)  # rotated, shifted, 11-D
    assert pca_project(embedded).shape == (300, 3)
    assert coverage_volume(embedded) == pytest.approx(ConvexHull(points).volume, rel=1e-9)


def test_degenerate_or_low_dimensional_sets_do_not_crash() -> None:
    assert coverage_volume(np.zeros((10, 5))) == 0.0  # all points equal
    assert coverage_volume(CUBE[:3]) == 0.0  # too few points for a 3-D hull
    assert coverage_volume(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.5)
    assert coverage_volume(np.array([[1.0], [4.0], [2.0]])) == pytest.approx(3.0)
    trigger = make_trigger()
    trigger.updated(0, 0.0)  # no volume then: the ratio counts as 1
    trigger.observe_error(1.0)
    assert trigger.observe_coverage(5.0) == pytest.approx(math.log(2.0))


# ---------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize(
    ("family", "alpha", "interval"),
    [  # the CMLO authors' per-task configs; tasks they did not run take alpha 2, interval 50
        ("Hopper", 1.2, 20),
        ("Walker2d", 3.0, 20),
        ("HalfCheetah", 2.0, 50),
        ("Ant", 2.0, 50),
        ("Humanoid", 2.5, 50),
        ("InvertedPendulum", 2.0, 50),
    ],
)
def test_alpha_and_compute_interval_per_task(family: str, alpha: float, interval: int) -> None:
    config, deviations = resolve_config(CMLOConfig, family, "paper", {})
    assert config.cmlo_alpha == alpha and deviations == {}
    assert config.cmlo_compute_interval == interval
    assert (config.cmlo_min_interval, config.cmlo_max_interval) == (150, 500)
    assert config.cmlo_rollout_every_step and config.cmlo_rollout_batch_size == 400


def test_dotted_set_alias_and_deviation() -> None:
    overrides = parse_overrides(["cmlo.alpha=3"], CMLOConfig)
    assert overrides == {"cmlo_alpha": 3.0}
    assert parse_overrides(["cmlo_alpha=3"], CMLOConfig) == overrides
    assert parse_overrides(["model.train.freq=10"], DynaConfig) == {"model_train_freq": 10}
    config, deviations = resolve_config(CMLOConfig, "Hopper", "paper", overrides)
    assert config.cmlo_alpha == 3.0
    assert deviations["cmlo_alpha"] == {"paper": 1.2, "used": 3.0, "by": "--set"}
    with pytest.raises(UsageError, match=r"--set cmlo\.alpah: .*did you mean cmlo_alpha"):
        parse_overrides(["cmlo.alpah=3"], CMLOConfig)
    with pytest.raises(UsageError, match="cmlo.alpha"):
        parse_overrides(["cmlo.alpha=3"], DynaConfig)  # MBPO has no such setting
    with pytest.raises(UsageError, match="cmlo_min_interval"):
        resolve_config(CMLOConfig, "Hopper", "paper", {"cmlo_min_interval": 600})


# ---------------------------------------------------------------------------------------------
# a tiny run: logged model updates, and exact resume


@pytest.fixture(scope="module")
def cmlo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run("cmlo", tmp_path_factory.mktemp("cmlo"))


def test_tiny_run_logs_each_model_update(cmlo_run: Path) -> None:
    rows = progress_rows(cmlo_run)
    assert tuple(rows[0]) == PROGRESS_COLUMNS
    assert [int(r["env_step"]) for r in rows] == [100, 200, 300]
    assert rows[0]["model_update_step"] == rows[0]["event_sum"] == ""  # nothing learned yet
    # the first training comes at the first learning step (env step 101), event sum 0; the
    # next waits at least 150 steps, so the row holds one training where MBPO has two
    first = rows[1]
    assert float(first["model_update_step"]) == 101 and float(first["event_sum"]) == 0.0
    assert float(first["model_trainings"]) == 1.0
    assert first["rollout_length"] != "" and first["model_loss_train"] != ""
    previous = 0
    for row in rows:
        if row["model_trainings"]:
            assert previous < float(row["model_update_step"]) <= int(row["env_step"])
            assert row["event_sum"] != ""
        else:
            assert row["model_update_step"] == row["event_sum"] == ""
        previous = int(row["env_step"])


def test_resume_continues_bit_exactly(cmlo_run: Path, tmp_path: Path) -> None:
    assert_resume_reproduces("cmlo", cmlo_run, tmp_path)
