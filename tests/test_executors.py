"""Where a grid's runs execute (`experiments/executors.py`): the options checked before anything
runs, the workers and threads planned for the cores, and what one worker does with its runs:
continue a folder that holds an unfinished run, keep each run's status file, and turn a run's
refusal or divergence into one line while the grid goes on. The runs themselves are replaced
by recorders here; `test_experiments.py` trains real grids through both executors."""

from __future__ import annotations

import concurrent.futures
import sys
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


class InProcessPool:
    """Stands in for ProcessPoolExecutor: runs each submitted unit at once in this process (a
    spawned worker cannot see a monkeypatched run_one) and records how the pool was made."""

    made: list[tuple[int, str]] = []

    def __init__(self, workers: int, mp_context) -> None:
        InProcessPool.made.append((workers, mp_context.get_start_method()))

    def __enter__(self) -> InProcessPool:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args):
        future = concurrent.futures.Future()
        future.set_result(fn(*args))
        return future


def test_a_pool_of_spawned_workers_reports_every_outcome_of_every_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--workers 2 on two cores: a pool of two spawned processes (fork would copy torch's
    threads), one thread each; every run of every unit is returned and reported once."""
    handed = []

    def fake_run_one(unit, threads, slowdown):
        handed.append((tuple(s.seed for s in unit), threads, slowdown))
        return [executors.RunOutcome(s, 10.0 * s.seed, None) for s in unit]

    InProcessPool.made.clear()
    monkeypatch.setattr(executors, "run_one", fake_run_one)
    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    monkeypatch.setattr(executors, "ProcessPoolExecutor", InProcessPool)
    units = [[spec(tmp_path, 0), spec(tmp_path, 1)], [spec(tmp_path, 2)], [spec(tmp_path, 3)]]
    reported = []
    outcomes = executors.LocalExecutor(2, 0, None).run(units, reported.append)
    assert InProcessPool.made == [(2, "spawn")]
    assert sorted(handed) == [((0, 1), 1, None), ((2,), 1, None), ((3,), 1, None)]
    assert sorted(o.final_return for o in outcomes) == [0.0, 10.0, 20.0, 30.0]
    assert reported == outcomes


class FakeRay:
    """The part of Ray's API the executor uses, recording each call. `wait` refuses more
    returns than objects, as Ray does; `get` raises for the units named in `dies`."""

    def __init__(self, initialized: bool = False, init_error: Exception | None = None) -> None:
        self.initialized, self.init_error = initialized, init_error
        self.calls: list[tuple] = []
        self.dies: set[int] = set()

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        self.calls.append(("init", kwargs))
        if self.init_error is not None:
            raise self.init_error
        self.initialized = True

    def shutdown(self) -> None:
        self.calls.append(("shutdown",))
        self.initialized = False

    def remote(self, num_cpus: int):
        self.calls.append(("remote", num_cpus))

        def wrap(fn):
            ray = self

            class Remote:
                @staticmethod
                def remote(unit, threads):
                    ray.calls.append(("task", tuple(s.seed for s in unit), threads))
                    return ("ref", unit[0].seed, lambda: fn(unit, threads))

            return Remote

        return wrap

    def wait(self, refs: list, num_returns: int):
        if num_returns > len(refs):
            raise ValueError("num_returns cannot be greater than the number of objects")
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref[1] in self.dies:
            raise RuntimeError(f"worker for seed {ref[1]} died")
        return ref[2]()


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch):
    def install(ray: FakeRay) -> FakeRay:
        monkeypatch.setitem(sys.modules, "ray", ray)
        return ray

    def fake_run_one(unit, threads):
        return [executors.RunOutcome(s, float(s.seed), None) for s in unit]

    monkeypatch.setattr(executors, "run_one", fake_run_one)
    monkeypatch.setattr(executors, "usable_cores", lambda: 4)
    return install


def test_ray_starts_a_local_instance_sized_for_the_grid_and_stops_it(
    tmp_path: Path, fake_ray
) -> None:
    """No address: a local instance with workers x threads CPUs and no dashboard, each unit one
    task with `threads` CPUs, every outcome reported, a dead worker reported as one line while
    the others go on, and the instance shut down after."""
    ray = fake_ray(FakeRay())
    ray.dies = {2}
    units = [[spec(tmp_path, 0), spec(tmp_path, 1)], [spec(tmp_path, 2)]]
    reported = []
    outcomes = executors.RayExecutor(2, None).run(units, reported.append)
    assert ray.calls[0] == (
        "init",
        {"num_cpus": 4, "include_dashboard": False, "log_to_driver": False},
    )  # 2 workers x (4 cores // 2) threads
    assert ray.calls[1] == ("remote", 2)
    assert ray.calls[2:4] == [("task", (0, 1), 2), ("task", (2,), 2)]
    assert ray.calls[-1] == ("shutdown",) and not ray.initialized
    assert [(o.spec.seed, o.final_return, o.error) for o in outcomes] == [
        (0, 0.0, None),
        (1, 1.0, None),
        (2, None, "ray worker failed: worker for seed 2 died"),
    ]
    assert reported == outcomes


def test_ray_joins_a_cluster_at_its_address_and_leaves_a_running_one_alone(
    tmp_path: Path, fake_ray
) -> None:
    ray = fake_ray(FakeRay())
    executors.RayExecutor(1, "head:6379", threads=3).run([[spec(tmp_path)]], lambda o: None)
    assert ray.calls[0] == ("init", {"address": "head:6379", "log_to_driver": False})
    assert ray.calls[1] == ("remote", 3)
    assert ray.calls[-1] == ("shutdown",)
    ray = fake_ray(FakeRay(initialized=True))  # the caller's own Ray: not ours to start or stop
    outcomes = executors.RayExecutor(1, None).run([[spec(tmp_path)]], lambda o: None)
    assert [c[0] for c in ray.calls] == ["remote", "task"]
    assert ray.initialized and outcomes[0].final_return == 0.0


@pytest.mark.parametrize(
    ("address", "error", "message"),
    [
        (None, ConnectionError("no raylet"), "cannot start Ray at a local instance: no raylet"),
        ("head:6379", RuntimeError("timed out"), "cannot start Ray at head:6379: timed out"),
        ("ray://head:10001", ImportError("grpc"), "cannot reach Ray at ray://head:10001: grpc"),
    ],
)
def test_ray_that_cannot_start_is_one_line(
    tmp_path: Path, fake_ray, address: str | None, error: Exception, message: str
) -> None:
    fake_ray(FakeRay(init_error=error))
    with pytest.raises(UsageError) as refused:
        executors.RayExecutor(1, address).run([[spec(tmp_path)]], lambda o: None)
    assert str(refused.value).startswith(message)
