"""Where a grid's runs execute (`experiments/executors.py`): the options checked before anything
runs, the workers and threads planned for the cores, and what one worker does with its runs:
continue a folder that holds an unfinished run, keep each run's status file, and turn a run's
refusal or divergence into one line while the grid goes on. The runs themselves are replaced
by recorders here; `test_experiments.py` trains real grids through both executors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from usbpo_cli.agents.base import RunSummary
from usbpo_cli.errors import TrainingDiverged, UsageError
from usbpo_cli.experiments import executors
from usbpo_cli.runs import runner
from usbpo_cli.runs.runner import RunSpec
from usbpo_cli.runs.status import read_status
from usbpo_cli.util import cores


@pytest.mark.parametrize(
    "address",
    ["ray://head:10001", "head:6379", "10.0.0.1:1", "[::1]:65535", "a:6379", "auto", " auto "],
)
def test_cluster_addresses_that_are_accepted(address: str) -> None:
    executors.check_address(address)


@pytest.mark.parametrize(
    "address",
    ["head:0", "head:65536", "ray://head", "http://head:10001", "-head:1", "head-:1", "", "head"],
)
def test_cluster_addresses_that_are_refused(address: str) -> None:
    with pytest.raises(UsageError, match="expected ray://HOST:PORT or HOST:PORT"):
        executors.check_address(address)


def test_every_option_is_checked_when_the_executor_is_made() -> None:
    local = executors.make_executor("local", 3, None, 2, 1.5)
    assert isinstance(local, executors.LocalExecutor)
    assert (local.requested, local.threads, local.slowdown) == (3, 2, 1.5)
    ray = executors.make_executor("ray", 2, "head:6379", 1)
    assert isinstance(ray, executors.RayExecutor)
    assert (ray.requested, ray.address, ray.threads) == (2, "head:6379", 1)
    assert executors.make_executor("ray", 2, None).address is None
    refusals = [
        (("local", 2, "head:6379"), "--address only applies to --executor ray"),
        (("ray", 2, "head"), "--address 'head'"),
        (("slurm", 2, None), "unknown executor 'slurm' \\(choose: local, ray\\)"),
        (("ray", 0, None), "--workers must be >= 1, got 0"),
        (("local", 1, None, -1), "--threads must be >= 0, got -1"),
    ]
    for args, message in refusals:
        with pytest.raises(UsageError, match=message):
            executors.make_executor(*args)


def test_workers_and_threads_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executors, "usable_cores", lambda: 8)
    assert executors.plan_workers(1, 5) == (1, 8)
    assert executors.plan_workers(3, 5) == (3, 2)  # 8 cores // 3 workers
    assert executors.plan_workers(16, 5) == (5, 1)  # no more workers than runs
    assert executors.plan_workers(16, 20) == (8, 1)  # nor than cores
    assert executors.plan_workers(4, 0) == (1, 8)  # nothing pending: still a valid plan
    assert executors.plan_workers(2, 5, threads=3) == (2, 3)  # threads asked for are kept
    assert cores.usable_cores() >= 1


def spec(tmp_path: Path, seed: int = 0) -> RunSpec:
    return RunSpec("InvertedPendulum-v4", "sac", seed, 300, tmp_path / f"seed{seed}")


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_worker_continues_an_unfinished_folder_and_marks_each_run_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads_restored: None
) -> None:
    calls = []

    def fake_training(specs, statuses, resume, restart):
        calls.append((resume, restart, torch.get_num_threads()))
        for one in specs:
            one.out.mkdir(parents=True, exist_ok=True)  # as prepare_run makes it
        for status in statuses:
            status(150, "policy", None)  # a report, as a running agent makes
        return [RunSummary(s.steps, 42.0 + s.seed, 50.0, 1.0, 3) for s in specs]

    monkeypatch.setattr(runner, "run_training", fake_training)
    specs = [spec(tmp_path, 0), spec(tmp_path, 1)]
    torch.set_num_threads(1)
    outcomes = executors.run_one(specs, threads=2)
    assert calls == [(False, False, 2)]  # a fresh folder: a new run, on the threads asked for
    assert [(o.final_return, o.error) for o in outcomes] == [(42.0, None), (43.0, None)]
    for one in specs:
        status = read_status(one.out)
        assert (status["state"], status["env_step"], status["phase"]) == ("done", 300, "done")
    specs[0].out.mkdir(parents=True, exist_ok=True)
    (specs[0].out / "config.json").write_text("{}")  # an unfinished run left in the folder
    executors.run_one(specs, threads=2)
    assert calls[-1][:2] == (True, True)


@pytest.mark.parametrize("error", [UsageError("bad resume"), TrainingDiverged("NaN in critic")])
def test_a_failing_run_is_one_line_and_its_status_says_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads_restored: None, error: Exception
) -> None:
    def fake_training(specs, statuses, resume, restart):
        for one in specs:
            one.out.mkdir(parents=True, exist_ok=True)
        statuses[0](10, "env", None)  # the first seed had started, the second had not
        raise error

    monkeypatch.setattr(runner, "run_training", fake_training)
    specs = [spec(tmp_path, 0), spec(tmp_path, 1)]
    outcomes = executors.run_one(specs, threads=1)
    assert [(o.spec, o.final_return, o.error) for o in outcomes] == [
        (specs[0], None, str(error)),
        (specs[1], None, str(error)),
    ]
    assert read_status(specs[0].out)["state"] == "failed"
    assert read_status(specs[1].out) is None  # never started: no status to correct


def test_one_worker_trains_the_units_in_order_and_reports_each_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--workers 1 runs in this process (no pool): units in order, every outcome reported as it
    comes, with the threads and slowdown the executor was given."""
    handed = []

    def fake_run_one(unit, threads, slowdown):
        handed.append((tuple(s.seed for s in unit), threads, slowdown))
        return [executors.RunOutcome(s, float(s.seed), None) for s in unit]

    monkeypatch.setattr(executors, "run_one", fake_run_one)
    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    units = [[spec(tmp_path, 0), spec(tmp_path, 1)], [spec(tmp_path, 2)]]
    reported = []
    outcomes = executors.LocalExecutor(1, 0, 2.5).run(units, reported.append)
    assert handed == [((0, 1), 2, 2.5), ((2,), 2, 2.5)]
    assert [o.final_return for o in outcomes] == [0.0, 1.0, 2.0]
    assert reported == outcomes
