"""Issue 12, items 5, 7, 8, 9 and 11: what a person sees can be trusted.

One table of refusals (usage errors, --steps, names in --algos/--envs, did-you-mean, spaces,
--address, crafted checkpoints): each exits 2 with one `error:` line on stderr (no traceback, no
box) and leaves every folder as it was. Then the progress a person plans by (cost model, stage
ETA, grid view and status files), the tasks without paper values (borrowed defaults, termination
rules read from the env or learned), `--version`, and the demo's install.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import cli_env, snapshot, usbpo, usbpo_inproc  # tests/ is on sys.path

from usbpo_cli.agents.usbpo import USBPOConfig
from usbpo_cli.envs.tasks import make_env, task_info
from usbpo_cli.envs.termination import LearnedTermination, termination_fn
from usbpo_cli.runs.config import resolve_config
from usbpo_cli.runs.status import (
    LONG_RUN_S,
    StageEta,
    StatusReporter,
    estimate,
    format_duration,
    grid_eta,
    read_status,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = "InvertedPendulum-v4"
TINY = ["--preset", "tiny", "--quiet"]
TRAIN = ["train", "--env", ENV, "--algo", "sac", "--steps", "300", *TINY]
ON_RUN = [*TRAIN, "--out", "{run}", "--resume"]
GRID = ["compare", "--envs", ENV, "--algos", "sac", "--seeds", "1", "--steps", "200"]
GRID += ["--preset", "tiny", "--out", "{grid}"]
BOX = ("╭", "╰", "│", "─")
MARKER = "pwned"  # what a crafted checkpoint's code would create in the case folder

Setup = Callable[[Path], None]


# --- setups (damage done before the "before" snapshot) ------------------------------------------


class _RunsCode:
    """Unpickling this calls os.system: what a hostile file on a shared filesystem would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def crafted_checkpoint(kind: str) -> Setup:
    def setup(tmp: Path) -> None:
        newest = sorted((tmp / "run" / "checkpoints").glob("ckpt-*.pt"))[-1]
        payload = {"format_version": 1, "algo": "sac", "env_id": ENV}
        payload["state"] = _RunsCode(tmp / MARKER)
        if kind == "torch":  # a real torch.save zip whose pickle calls os.system
            torch.save(payload, newest)
        else:  # a bare pickle under a checkpoint's name
            newest.write_bytes(pickle.dumps(payload, protocol=4))
        assert b"system" in newest.read_bytes()

    return setup


def complete_grid(tmp: Path) -> None:
    assert read_status(tmp / "grid" / ENV / "sac" / "seed0")["state"] == "done"


# --- the table -----------------------------------------------------------------------------------


def case(
    name: str,
    args: list[str],
    *needles: str,
    absent: tuple[str, ...] = (),
    setup: Setup | None = None,
    proc: bool = False,
) -> pytest.ParameterSet:
    return pytest.param(args, needles, absent, setup, proc, id=name)


CASES = [
    # item 7: typer's usage errors, one line
    case("unknown-option", [*TRAIN, "--nosuch"], "No such option: --nosuch", "--help"),
    case("unknown-option-proc", [*TRAIN, "--nosuch"], "No such option: --nosuch", proc=True),
    case("bad-type", ["train", "--steps", "abc"], "Invalid value for '--steps'"),
    case("missing-argument", ["train", "--env"], "'--env' requires an argument"),
    case("compare-bad-type", ["compare", "--seeds", "x"], "Invalid value for '--seeds'"),
    case("unknown-command", ["trian"], "No such command 'trian'"),
    # item 7: --steps above 1e9
    case(
        "steps-above-1e9",
        [*TRAIN, "--steps", "1000000001", "--out", "{tmp}/new"],
        "--steps must be at most 1e9",
    ),
    case("compare-steps-above-1e9", [*GRID, "--steps", "5000000000"], "at most 1e9"),
    # item 7: empty or duplicate names
    case("algos-empty-name", [*GRID, "--algos", "sac,,mbpo"], "--algos", "empty name"),
    case("algos-trailing-comma", [*GRID, "--algos", "sac,"], "--algos", "empty name"),
    case("algos-empty", [*GRID, "--algos", ""], "--algos", "empty name"),
    case("algos-twice", [*GRID, "--algos", "sac,mbpo,sac"], "--algos", "sac given more than once"),
    case("envs-twice", [*GRID, "--envs", f"{ENV}, {ENV}"], "--envs", "given more than once"),
    case("envs-empty-name", [*GRID, "--envs", f",{ENV}"], "--envs", "empty name"),
    case(
        "ablate-env-twice",
        ["ablate", "--study", "phase2-lr", "--env", f"{ENV},{ENV}", *TINY[:2]],
        "--env",
        "more than once",
    ),
    # item 7: did-you-mean names supported ids only; spaces read as gymnasium writes them
    case(
        "did-you-mean-supported",
        [*TRAIN, "--env", "Humanoidd-v4", "--out", "{tmp}/new"],
        "did you mean Humanoid-v4",
        absent=("HumanoidStandup",),
    ),
    case(
        "did-you-mean-other-task",
        [*TRAIN, "--env", "Pendulum-v0", "--out", "{tmp}/new"],
        "did you mean Pendulum-v1",
    ),
    case(
        "tuple-space",
        [*TRAIN, "--env", "Blackjack-v1", "--out", "{tmp}/new"],
        "Tuple(Discrete(32), Discrete(11), Discrete(2)) observation space",
        absent=("TupleNone",),
    ),
    # item 7: --address is checked even when the grid has nothing left to run
    case(
        "address-no-port-complete-grid",
        [*GRID, "--executor", "ray", "--address", "ray://head"],
        "--address 'ray://head'",
        "ray://HOST:PORT",
        setup=complete_grid,
    ),
    case(
        "address-url-complete-grid",
        [*GRID, "--executor", "ray", "--address", "http://head:10001"],
        "expected ray://HOST:PORT or HOST:PORT",
        setup=complete_grid,
    ),
    case("address-bad-port", [*GRID, "--executor", "ray", "--address", "head:70000"], "port"),
    # item 9: a checkpoint that would run code is refused, and the code does not run
    case(
        "crafted-torch-checkpoint",
        ON_RUN,
        "ckpt-0000000300.pt is refused",
        "posix.system",
        "could run code",
        setup=crafted_checkpoint("torch"),
    ),
    case(
        "crafted-pickle-checkpoint",
        ON_RUN,
        "ckpt-0000000300.pt is refused",
        setup=crafted_checkpoint("pickle"),
    ),
    case(
        "crafted-checkpoint-proc",
        ON_RUN,
        "is refused",
        setup=crafted_checkpoint("torch"),
        proc=True,
    ),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny sac run (`run`, 300 env steps) and a complete tiny grid (`grid`)."""
    root = tmp_path_factory.mktemp("finished")
    args = [a.replace("{run}", str(root / "run")) for a in [*TRAIN, "--out", "{run}"]]
    result = usbpo_inproc(*args, cwd=root)
    assert result.returncode == 0, result.stderr
    (root / "run.stdout").write_text(result.stdout)
    # The grid's one run trains in this process, where run_one would give it all the cores'
    # threads for the rest of the session: keep the session's (one) thread.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "set_num_threads", lambda threads: None)
        grid = usbpo_inproc(*[a.replace("{grid}", str(root / "grid")) for a in GRID], cwd=root)
    assert grid.returncode == 0, grid.stderr
    (root / "grid.stdout").write_text(grid.stdout)
    return root


@pytest.mark.parametrize(("args", "needles", "absent", "setup", "proc"), CASES)
def test_refusal_is_one_line_and_touches_nothing(
    tmp_path: Path,
    finished: Path,
    args: list[str],
    needles: tuple[str, ...],
    absent: tuple[str, ...],
    setup: Setup | None,
    proc: bool,
) -> None:
    shutil.copytree(finished / "run", tmp_path / "run")
    shutil.copytree(finished / "grid", tmp_path / "grid")
    if setup is not None:
        setup(tmp_path)
    before = snapshot(tmp_path, exclude=(".lock",))
    argv = [
        a.replace("{run}", str(tmp_path / "run"))
        .replace("{grid}", str(tmp_path / "grid"))
        .replace("{tmp}", str(tmp_path))
        for a in args
    ]
    if proc:
        result = usbpo(*argv, cwd=tmp_path, env=cli_env())
    else:
        result = usbpo_inproc(*argv, cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    assert not any(char in output for char in BOX), output
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    for needle in absent:
        assert needle not in lines[0], (needle, lines[0])
    assert not (tmp_path / MARKER).exists(), "the crafted checkpoint ran code"
    assert snapshot(tmp_path, exclude=(".lock",)) == before


def test_version(tmp_path: Path) -> None:
    result = usbpo_inproc("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"usbpo \S+\n", result.stdout), result.stdout
    assert list(tmp_path.iterdir()) == []


def test_bare_usbpo_shows_the_commands_and_offers_no_shell_completion(tmp_path: Path) -> None:
    """`usbpo` alone is a request for help, not an error; the help names every command and
    no shell-completion options (a benchmarking tool installs nothing in a user's shell)."""
    bare = usbpo_inproc(cwd=tmp_path)
    assert "error:" not in bare.stdout + bare.stderr, bare.stdout + bare.stderr
    text = bare.stdout + bare.stderr
    for command in ("train", "compare", "ablate", "plot", "envs", "config", "algos"):
        assert re.search(rf"^\W*{command}\b", text, re.M), (command, text)
    helped = usbpo_inproc("--help", cwd=tmp_path)
    assert helped.returncode == 0 and "completion" not in helped.stdout, helped.stdout
    assert list(tmp_path.iterdir()) == []


INTERNAL_BUG = """
import sys
import usbpo_cli.runs.runner as runner
from usbpo_cli import app

def internal_bug(*args, **kwargs):
    raise RuntimeError("an internal bug")

runner.prepare_run = internal_bug
sys.argv = ["usbpo", "train", "--steps", "10", "--out", "run"]
app.main()
"""


def test_an_internal_bug_is_a_plain_python_traceback(tmp_path: Path) -> None:
    """Not an input error: a traceback a user can paste into a bug report as Python prints
    it (no framed, abbreviated one)."""
    import subprocess
    import sys

    from cli_helpers import cli_env

    result = subprocess.run(
        [sys.executable, "-c", INTERNAL_BUG],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):\n"), result.stderr
    assert result.stderr.rstrip().endswith("RuntimeError: an internal bug"), result.stderr


def test_an_interrupted_run_says_its_rows_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usbpo_cli.runs import runner

    def interrupted(self, report=None):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.PreparedRun, "train", interrupted)
    result = usbpo_inproc(*TRAIN, "--out", "run", cwd=tmp_path)
    assert result.returncode == 130
    assert result.stderr.strip() == "interrupted: rows written so far are kept"


def test_the_progress_bar_ends_on_done_with_the_last_return(tmp_path: Path) -> None:
    args = ["train", "--env", ENV, "--algo", "sac", "--steps", "300", "--preset", "tiny"]
    result = usbpo_inproc(*args, "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    final = result.stdout.split("final eval return ")[1].split(",")[0]
    assert re.fullmatch(rf"done +\S+ 300/300 env steps  eval return {final} \d+:\d\d:\d\d", last), (
        last
    )


def test_train_runs_on_the_threads_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usbpo_cli.runs import runner

    seen = []

    def count_threads(self, report=None):  # noqa: ANN001, ANN202
        seen.append(torch.get_num_threads())
        return _no_training(self, report)

    monkeypatch.setattr(runner.PreparedRun, "train", count_threads)
    before = torch.get_num_threads()
    try:
        result = usbpo_inproc(*TRAIN, "--threads", "3", "--out", "run", cwd=tmp_path)
    finally:
        torch.set_num_threads(before)
    assert result.returncode == 0, result.stderr
    assert seen == [3]


def test_real_checkpoints_load_with_the_allow_list(finished: Path) -> None:
    from usbpo_cli.runs.checkpoint import Checkpointer

    state, warnings = Checkpointer(finished / "run", {"algo": "sac"}).load_latest()
    assert warnings == [] and state["agent"]["loop"]["next_step"] == 300
    assert isinstance(state["agent"]["env"]["mujoco"], np.ndarray)


# --- item 5: progress a person can plan by -------------------------------------------------------


def test_stage_eta_is_priced_on_the_learning_stage() -> None:
    """5000 random steps at 1 ms, then learning at 100 ms a step: once 250 learning steps are
    measured the ETA is their rate times the steps left, not the average since the start."""
    eta = StageEta(total=100_000, initial_steps=5000, learning_step_s=0.08, window=500)
    clock = 0.0
    for step in range(0, 5000, 50):
        eta.update(step, clock)
        clock += 50 * 1e-3
    seconds, basis = eta.seconds_left()
    assert basis == "estimate"
    assert seconds == pytest.approx(50 * 1e-3 + 95_000 * 0.08, rel=0.01)
    for step in range(5000, 5300, 50):
        eta.update(step, clock)
        clock += 50 * 0.1
    seconds, basis = eta.seconds_left()
    assert basis == "measured"
    assert seconds == pytest.approx((100_000 - 5250) * 0.1, rel=1e-6)
    assert eta.text().startswith("eta ") and "estimate" not in eta.text()


def test_grid_eta_schedules_what_is_left_on_the_workers() -> None:
    assert grid_eta([10.0, 20.0], [5.0, 5.0, 5.0], workers=2) == 25.0
    assert grid_eta([], [60.0, 60.0, 60.0], workers=3) == 60.0
    assert grid_eta([], [60.0, 60.0, 60.0], workers=1) == 180.0


def test_cost_model_separates_long_runs_from_short_ones() -> None:
    def seconds(family: str, preset: str, steps: int) -> float:
        config, _ = resolve_config(USBPOConfig, family, preset, {})
        return estimate(dataclasses.asdict(config), steps)["total"]

    assert seconds("Hopper", "paper", 100_000) > LONG_RUN_S  # README: 5-8 h on 2 cores
    assert 3 * 60 < seconds("InvertedPendulum", "paper", 8000) < 10 * 60  # make demo
    assert seconds("InvertedPendulum", "tiny", 300) < 10


def _no_training(self, report=None):  # noqa: ANN001, ANN202 (PreparedRun.train's stand-in)
    """Training replaced: release the run's locks and report nothing trained (a fast test of
    what a command prints before it trains)."""
    from usbpo_cli.agents.base import RunSummary

    for lock in self.locks:
        lock.release()
    return RunSummary(0, 0.0, 0.0, 0.0, 0)


def estimate_line(result) -> str:  # noqa: ANN001 (a CompletedProcess from usbpo_inproc)
    """The one `estimate:` line a long CPU run or grid prints before it starts."""
    [line] = [line for line in result.stderr.splitlines() if line.startswith("estimate:")]
    return line


def hopper_100k_estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slowdown: float) -> str:
    """The estimate line of a 100k-step paper Hopper `train` on one thread, on a CPU timed at
    `slowdown` (training stubbed: this is what is printed before it)."""
    from usbpo_cli.runs import calibration, runner

    monkeypatch.setattr(runner.PreparedRun, "train", _no_training)
    monkeypatch.setattr(calibration, "measure_slowdown", lambda threads, repeats=5: slowdown)
    args = ["--env", "Hopper-v4", "--steps", "100000", "--quiet", "--threads", "1"]
    result = usbpo_inproc("train", *args, "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return estimate_line(result)


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The grid's workers and its cheaper choices see two usable cores, as CI has."""
    from usbpo_cli.experiments import executors
    from usbpo_cli.util import cores

    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    monkeypatch.setattr(cores, "usable_cores", lambda: 2)


def test_long_cpu_run_prints_the_estimate_and_cheaper_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paper Hopper run (hours on a CPU): the estimate and the cheaper choices come first.
    Training itself is replaced by a stub so the test stays fast."""
    from usbpo_cli.runs import runner

    monkeypatch.setattr(runner.PreparedRun, "train", _no_training)
    result = usbpo_inproc("train", "--env", "Hopper-v4", "--quiet", "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = estimate_line(result)
    assert re.search(r"takes about \d+ h \d\d min on this CPU", line), line
    for choice in ("--steps", "--device cuda", "--workers", "--executor ray --address"):
        assert choice in line, (choice, line)
    # The paper runs start learning at 5000 steps, cpu-small at 1000: over a long run the
    # "smaller" preset does more policy updates and costs more, so it is not offered as cheaper.
    assert "cpu-small" not in line, line


def test_estimate_on_a_timed_machine_is_the_reference_estimate_times_its_slowdown() -> None:
    """A machine timed at k reference seconds per second prices every part at k times the
    reference (2-thread) figure; the one-thread factor is not applied again, since the timing
    was taken at the run's own thread count."""
    config, _ = resolve_config(USBPOConfig, "Hopper", "paper", {})
    config = dataclasses.asdict(config)
    reference = estimate(config, 30_000, 0, threads=2)
    for threads in (1, 2):
        timed = estimate(config, 30_000, 0, threads=threads, slowdown=7.5)
        for part in ("random", "learning", "total"):
            assert timed[part] == pytest.approx(7.5 * reference[part], rel=1e-12), part
    # uncalibrated, one thread costs ONE_THREAD_FACTOR (1.5) times two
    one = estimate(config, 30_000, 0, threads=1)["total"]
    assert one == pytest.approx(1.5 * reference["total"], rel=1e-12)


def test_calibration_is_the_median_update_over_the_reference_and_leaves_the_run_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timed updates of 4.3, 21.5 and 8.6 ms (the reference update is 4.3 ms): median 8.6 ms,
    slowdown 2 (their mean would give 2.67). Each update runs at the requested thread count;
    afterwards the caller's threads and global random stream are as before."""
    from usbpo_cli.agents.sac import SAC
    from usbpo_cli.runs import calibration

    durations = iter([4.3e-3, 21.5e-3, 8.6e-3])
    clock = {"now": 100.0, "started": False}

    def fake_clock() -> float:  # start and end of each timed update
        if clock["started"]:
            clock["now"] += next(durations)
        clock["started"] = not clock["started"]
        return clock["now"]

    threads_seen = []
    update = SAC.update

    def spy(self, batch):  # noqa: ANN001, ANN202
        threads_seen.append(torch.get_num_threads())
        return update(self, batch)

    monkeypatch.setattr(calibration.time, "perf_counter", fake_clock)
    monkeypatch.setattr(SAC, "update", spy)
    torch.set_num_threads(2)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    try:
        assert calibration.measure_slowdown(threads=1, repeats=3) == pytest.approx(2.0)
        assert torch.equal(torch.rand(3), expected_draw)  # the global stream was not advanced
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(2)
    assert threads_seen == [1, 1, 1, 1]  # the warm-up and the three timed updates


def test_long_run_estimate_is_scaled_to_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a machine timed 10x slower than the reference, `train` prints ten times the
    reference estimate and says it was timed here; a grid prints its planned seconds the same
    way and hands the factor to its workers (for their ETAs until measured)."""
    from usbpo_cli.experiments import executors
    from usbpo_cli.runs import calibration, runner

    timed_threads = []

    def ten_times_slower(threads: int, repeats: int = 5) -> float:
        timed_threads.append(threads)
        return 10.0

    monkeypatch.setattr(runner.PreparedRun, "train", _no_training)
    monkeypatch.setattr(calibration, "measure_slowdown", ten_times_slower)
    config, _ = resolve_config(USBPOConfig, "Hopper", "paper", {})
    reference = estimate(dataclasses.asdict(config), 100_000, 0, threads=2)["total"]
    args = ["--env", "Hopper-v4", "--steps", "100000", "--quiet", "--threads", "1"]
    result = usbpo_inproc("train", *args, "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = estimate_line(result)
    assert f"takes about {format_duration(10 * reference)} on this CPU" in line, line
    assert "timed on this CPU" in line and timed_threads == [1]

    handed = []
    monkeypatch.setattr(
        executors, "run_one", lambda specs, threads, slowdown: handed.append(slowdown) or []
    )
    grid = ["compare", "--envs", "Hopper-v4", "--algos", "usbpo", "--seeds", "2"]
    grid += ["--steps", "100000", "--workers", "1", "--threads", "1", "--vectorise", "off"]
    result = usbpo_inproc(*grid, "--out", "grid", cwd=tmp_path)
    # (the stubbed workers train nothing, so the summary after them finds no rows to show)
    assert "Traceback" not in result.stderr, result.stderr
    # two seeds on one worker, one after the other
    expected = f"estimate about {format_duration(2 * 10 * reference)} (cost model timed on this"
    assert expected in " ".join(result.stdout.split()), result.stdout  # wrapped at any width
    assert handed == [10.0, 10.0] and timed_threads == [1, 1]


@pytest.mark.parametrize("slowdown", [1.0, 40.0])
def test_the_steps_that_fit_in_two_hours_are_what_the_cost_model_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slowdown: float
) -> None:
    """`--steps N (fits in 2 h)`: the cost model prices N steps at two hours or less and
    N + 1000 + steps/100 (its rounding and the search's tolerance) above; at 10,000 steps and
    more N is a multiple of 1000. One run: seeds side by side on the cores is offered."""
    line = hopper_100k_estimate(tmp_path, monkeypatch, slowdown)
    config = dataclasses.asdict(resolve_config(USBPOConfig, "Hopper", "paper", {})[0])

    def hours(steps: int) -> float:
        return estimate(config, steps, 0, threads=1, slowdown=slowdown)["total"] / 3600

    fits = int(re.search(r"--steps (\d+) \(fits in 2 h\)", line).group(1))
    assert hours(fits) <= 2 < hours(fits + 1000 + 1000), (fits, line)
    assert fits % 1000 == 0 if fits >= 10_000 else fits > 0
    assert "seeds side by side: usbpo compare --workers 2" in line
    assert f"takes about {format_duration(hours(100_000) * 3600)} on this CPU" in line


def test_train_ends_saying_what_it_did_and_where(finished: Path) -> None:
    """The last lines of `train`: the final and best evaluation returns as progress.csv holds
    them, the checkpoint folder with the newest checkpoint's size, and the CSV's path."""
    import csv

    run = finished / "run"
    lines = (finished / "run.stdout").read_text().splitlines()
    with open(run / "progress.csv", newline="") as f:
        returns = [float(row["eval_return_mean"]) for row in csv.DictReader(f)]
    assert re.fullmatch(
        rf"sac on {ENV}, seed 0: 300 env steps in \d+ s; "
        rf"final eval return {returns[-1]:.1f}, best {max(returns):.1f}",
        lines[-3],
    ), lines
    newest = sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1]
    size = f"{newest.stat().st_size / 2**20:.1f}"
    assert re.fullmatch(
        rf"checkpoints: {re.escape(str(run / 'checkpoints'))} "
        rf"\(last {size} MiB, written in \d+\.\d\d s\)",
        lines[-2],
    ), lines
    assert lines[-1] == f"progress: {run / 'progress.csv'}"


def test_a_long_grids_cheaper_preset_is_priced_on_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_cores: None
) -> None:
    """Two 100k-step USB-PO runs on Ant-v4 on two workers: the cost model prices cpu-small a
    little under the paper preset there (it is offered, with "little saved"), and its figure is
    the two runs' estimates shared by the two workers."""
    from usbpo_cli.experiments import executors
    from usbpo_cli.runs import calibration

    monkeypatch.setattr(calibration, "measure_slowdown", lambda threads, repeats=5: 1.0)
    monkeypatch.setattr(executors.LocalExecutor, "run", lambda self, units, on_done: [])
    grid = ["compare", "--envs", "Ant-v4", "--algos", "usbpo", "--seeds", "2", "--steps"]
    grid += ["100000", "--workers", "2", "--threads", "1", "--vectorise", "off", "--out", "G"]
    result = usbpo_inproc(*grid, cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    line = estimate_line(result)
    small = dataclasses.asdict(resolve_config(USBPOConfig, "Ant", "cpu-small", {})[0])
    one_run = estimate(small, 100_000, 0, threads=1, slowdown=1.0)["total"]
    expected = f"--preset cpu-small (about {format_duration(2 * one_run / 2)}; little saved"
    assert expected in line, line
    assert "--workers" not in line  # already as many workers as cores and runs
    grid[grid.index("--workers") + 1] = "1"
    result = usbpo_inproc(*grid[:-1], "G1", cwd=tmp_path)
    line = estimate_line(result)
    assert "; --workers 2 (2 cores here);" in line, line


def test_a_compiled_run_warns_of_its_pause_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--compile: one line says the first update pauses to compile (the compile check is
    stood in for, and the training stubbed: this is what is printed before it)."""
    from usbpo_cli.runs import runner
    from usbpo_cli.util import compiler

    monkeypatch.setattr(compiler, "_checked", {"cpu": None})
    monkeypatch.setattr(runner.PreparedRun, "train", _no_training)
    result = usbpo_inproc(*TRAIN, "--compile", "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("--compile:")]
    assert len(notes) == 1 and "compiled at its first call, after the exploration" in notes[0]
    plain = usbpo_inproc(*TRAIN, "--out", "plain", cwd=tmp_path)
    assert "--compile:" not in plain.stderr


def test_a_run_of_which_nothing_fits_in_two_hours_is_offered_no_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU timed a million times slower than the reference: not even the random phase fits,
    so no `--steps` is offered (never `--steps 0`)."""
    line = hopper_100k_estimate(tmp_path, monkeypatch, 1e6)
    assert "--steps" not in line and "--device cuda" in line, line


@pytest.mark.parametrize(
    ("executor", "workers", "timed"),
    [("local", "on 2 worker(s)", [1]), ("ray", "on 4 worker(s)", [])],
)
def test_a_grids_workers_and_timing_depend_on_where_it_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    two_cores: None,
    executor: str,
    workers: str,
    timed: list,
) -> None:
    """--workers 4 for four runs on a 2-core machine: locally two workers, timed on this CPU;
    on Ray four (a cluster is not capped at this machine's cores), priced by the reference
    figures (the cluster's machines are not this one)."""
    from usbpo_cli.experiments import executors
    from usbpo_cli.runs import calibration

    timed_threads = []

    def timing(threads: int, repeats: int = 5) -> float:
        timed_threads.append(threads)
        return 3.0

    monkeypatch.setattr(calibration, "measure_slowdown", timing)
    for executor_cls in (executors.LocalExecutor, executors.RayExecutor):
        monkeypatch.setattr(executor_cls, "run", lambda self, units, on_done: [])
    grid = ["compare", "--envs", "Hopper-v4", "--algos", "usbpo", "--seeds", "4", "--steps"]
    grid += ["100000", "--workers", "4", "--threads", "1", "--vectorise", "off"]
    result = usbpo_inproc(*grid, "--executor", executor, "--out", "G", cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    printed = " ".join(result.stdout.split())
    assert f"4 runs: 0 already complete, 4 to run {workers}" in printed, printed
    basis = "(cost model timed on this CPU," if timed else "(cost model, README"
    assert basis in printed, printed
    assert timed_threads == timed


def test_short_runs_are_not_timed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run the reference prices under CALIBRATE_ABOVE_S starts without timing anything."""
    from usbpo_cli.runs import calibration

    def never(threads: int, repeats: int = 5) -> float:
        raise AssertionError("timed a short run")

    monkeypatch.setattr(calibration, "measure_slowdown", never)
    result = usbpo_inproc(*TRAIN, "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "estimate:" not in result.stderr  # nor is a short run told of cheaper choices


def test_compare_says_what_it_runs_and_keeps_status(finished: Path) -> None:
    stdout = (finished / "grid.stdout").read_text()
    header = stdout.splitlines()[0]
    for part in (f"grid {finished / 'grid'}", f"envs {ENV}", "algos sac", "seeds 0"):
        assert part in header, (part, header)
    assert "200 env steps per run" in header
    assert re.search(r"1 to run on 1 worker\(s\); estimate about \d+ s", stdout), stdout
    status = read_status(finished / "grid" / ENV / "sac" / "seed0")
    assert (status["state"], status["env_step"], status["steps"]) == ("done", 200, 200)


def test_grid_view_shows_each_running_run_and_a_grid_eta(tmp_path: Path) -> None:
    from rich.console import Console

    from usbpo_cli.experiments.grids import GridRun, Variant
    from usbpo_cli.experiments.gridview import GridView
    from usbpo_cli.runs.runner import RunSpec

    runs = []
    for seed in range(3):
        out = tmp_path / "grid" / ENV / "usbpo" / f"seed{seed}"
        spec = RunSpec(ENV, "usbpo", seed, 8000, out)
        runs.append(GridRun(ENV, Variant("usbpo", "usbpo"), seed, spec))
    view = GridView(runs, slots=2, threads=2, console=Console(file=io.StringIO()))
    planned = view.planned_seconds()
    assert planned > 0
    for seed, (step, eta) in enumerate([(6000, 100.0), (5500, 160.0)]):
        out = runs[seed].spec.out
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        reporter = StatusReporter(out)
        reporter.step, reporter.phase = step, "policy"
        reporter.write("running")
        status = json.loads((out / "status.json").read_text())
        status.update(eta_s=eta, eta_basis="measured")
        (out / "status.json").write_text(json.dumps(status))
    view.poll()
    shown = view_tasks(view)
    assert set(shown) == {"[bold]grid[/]", f"{ENV} usbpo seed0", f"{ENV} usbpo seed1"}
    assert shown[f"{ENV} usbpo seed0"].fields["count"] == "6000/8000 env steps"
    assert shown[f"{ENV} usbpo seed0"].fields["phase"] == "policy"
    # seed2 waits for the first free worker (after 100 s), priced by the cost model scaled by
    # the running runs' measured/estimated ratio
    assert 100.0 < view.seconds_left() < 100.0 + 10 * planned
    assert shown["[bold]grid[/]"].fields["eta"].startswith("grid eta ")
    view.finished(runs[0].spec)
    assert f"{ENV} usbpo seed0" not in set(view_tasks(view))


def usbpo_grid(tmp_path: Path, seeds: int = 3, steps: int = 8000, device: str = "cpu") -> list:
    from usbpo_cli.experiments.grids import GridRun, Variant
    from usbpo_cli.runs.runner import RunSpec

    runs = []
    for seed in range(seeds):
        out = tmp_path / "grid" / ENV / "usbpo" / f"seed{seed}"
        spec = RunSpec(ENV, "usbpo", seed, steps, out, device=device)
        runs.append(GridRun(ENV, Variant("usbpo", "usbpo"), seed, spec))
    return runs


def cost_model_seconds(
    steps: int, start: int, threads: int = 2, slowdown: float | None = None
) -> float:
    """The cost model's seconds for a paper-preset USB-PO run on ENV from `start`, computed here
    from the config the runner resolves (not through the grid view)."""
    from usbpo_cli.envs.termination import env_family
    from usbpo_cli.runs.status import episode_limit

    config, _ = resolve_config(USBPOConfig, env_family(ENV), "paper", {})
    limit = episode_limit(ENV)
    return estimate(dataclasses.asdict(config), steps, start, threads, limit, slowdown)["total"]


def write_running(out: Path, step: int, eta: float | None, basis: str, **fields) -> None:
    out.mkdir(parents=True, exist_ok=True)
    status = {"state": "running", "env_step": step, "updated": time.time(), "phase": "policy"}
    status.update(eta_s=eta, eta_basis=basis, **fields)
    (out / "status.json").write_text(json.dumps(status))


def view_tasks(view) -> dict:
    """The grid view's display lines by their description (the grid's, then one per run)."""
    return {task.description: task for task in view.progress.tasks}


def test_grid_eta_by_hand(tmp_path: Path) -> None:
    """Two workers; seed0 measured 100 s from step 6000, seed1 measured 160 s from 5500, seed2
    pending. The pending run is priced by the cost model times the mean measured/estimated
    ratio of the running runs, and starts when seed0's worker frees, at 100 s."""
    from rich.console import Console

    from usbpo_cli.experiments.gridview import GridView

    runs = usbpo_grid(tmp_path)
    view = GridView(runs, slots=2, threads=2, console=Console(file=io.StringIO()))
    full = cost_model_seconds(8000, 0)
    # nothing ran yet: three runs on two workers, all from step 0
    assert view.planned_seconds() == 2 * full
    grid_field = view_tasks(view)["[bold]grid[/]"].fields
    assert grid_field["count"] == "0/3 runs"
    assert grid_field["eta"] == f"grid eta ~{format_duration(2 * full)}"  # no measurement yet
    write_running(runs[0].spec.out, 6000, 100.0, "measured")
    write_running(runs[1].spec.out, 5500, 160.0, "measured")
    view.poll()
    ratio = (100.0 / cost_model_seconds(8000, 6000) + 160.0 / cost_model_seconds(8000, 5500)) / 2
    expected = max(160.0, 100.0 + full * ratio)
    assert view.seconds_left() == pytest.approx(expected)
    shown = view_tasks(view)
    assert shown["[bold]grid[/]"].fields["eta"] == f"grid eta {format_duration(expected)}"
    assert shown[f"{ENV} usbpo seed0"].fields["eta"] == "eta 2 min"  # 100 s, measured
    assert shown[f"{ENV} usbpo seed0"].completed == 6000
    # seed1's ETA turns out to be a cost-model guess: shown with ~, and no ratio from it
    write_running(runs[1].spec.out, 5500, 160.0, "estimate")
    view.poll()
    shown = view_tasks(view)
    assert shown[f"{ENV} usbpo seed1"].fields["eta"] == "eta ~3 min"
    ratio = 100.0 / cost_model_seconds(8000, 6000)
    assert view.seconds_left() == pytest.approx(max(160.0, 100.0 + full * ratio))
    # seed0 finishes: its worker takes seed2 now, beside seed1's 160 s
    view.finished(runs[0].spec)
    grid_task = view_tasks(view)["[bold]grid[/]"]
    assert (grid_task.completed, grid_task.fields["count"]) == (1, "1/3 runs")
    assert f"{ENV} usbpo seed0" not in set(view_tasks(view))
    assert view.seconds_left() == max(160.0, full * 1.0)  # no measured ETA left: ratio 1
    for run in runs[1:]:
        view.finished(run.spec)
    grid_field = view_tasks(view)["[bold]grid[/]"].fields
    assert (grid_field["count"], grid_field["eta"]) == ("3/3 runs", "")
    assert set(view_tasks(view)) == {"[bold]grid[/]"}


def test_grid_view_ignores_runs_not_running_now(tmp_path: Path) -> None:
    """A status file left by an earlier grid (older than this view), or one that says done or
    failed, is no running run: it gets no line and no share of the ETA."""
    from rich.console import Console

    from usbpo_cli.experiments.gridview import GridView

    runs = usbpo_grid(tmp_path)
    view = GridView(runs, slots=2, threads=2, console=Console(file=io.StringIO()))
    write_running(runs[0].spec.out, 6000, 100.0, "measured", updated=view.began - 1.5)
    write_running(runs[1].spec.out, 6000, 100.0, "measured", state="done")
    write_running(runs[2].spec.out, 6000, None, "measured")  # running, no ETA yet
    view.poll()
    assert set(view_tasks(view)) == {"[bold]grid[/]", f"{ENV} usbpo seed2"}
    seed2 = view_tasks(view)[f"{ENV} usbpo seed2"].fields
    assert seed2["eta"] == "" and seed2["count"] == "6000/8000 env steps"
    # seed2 runs with no ETA yet: the two others are pending, priced by the cost model from
    # where they stood when the view began (step 0), one on each worker
    assert view.seconds_left() == pytest.approx(cost_model_seconds(8000, 0))


def test_grid_eta_by_hand_at_the_edges(tmp_path: Path) -> None:
    """A status without env_step counts from step 0; a measured run one step from its end has
    a cost-model price under a second, and its ratio counts; a measured run the cost model
    cannot price (its config does not resolve) gives no ratio rather than a division by 0."""
    from rich.console import Console

    from usbpo_cli.experiments.gridview import GridView

    runs = usbpo_grid(tmp_path)
    # a machine 10x faster than the reference: the last step's price falls below a second
    console = Console(file=io.StringIO())
    view = GridView(runs, slots=2, threads=2, console=console, slowdown=0.1)
    full = cost_model_seconds(8000, 0, slowdown=0.1)
    write_running(runs[0].spec.out, 0, 50.0, "measured")
    status = json.loads((runs[0].spec.out / "status.json").read_text())
    del status["env_step"]
    (runs[0].spec.out / "status.json").write_text(json.dumps(status))
    view.poll()
    seed0 = view_tasks(view)[f"{ENV} usbpo seed0"].fields
    assert seed0["count"] == "0/8000 env steps"
    ratio = 50.0 / full
    assert view.seconds_left() == grid_eta([50.0], [full * ratio, full * ratio], 2)
    write_running(runs[0].spec.out, 7999, 0.4, "measured")
    view.poll()
    last_step = cost_model_seconds(8000, 7999, slowdown=0.1)
    assert 0 < last_step < 1
    ratio = 0.4 / last_step
    assert view.seconds_left() == grid_eta([0.4], [full * ratio, full * ratio], 2)
    # a run whose config cannot be resolved is priced at 0: no ratio from it
    unknown = dataclasses.replace(
        runs[0], spec=dataclasses.replace(runs[0].spec, overrides=["no_such_setting=1"])
    )
    view = GridView([unknown, runs[1]], slots=2, threads=2, console=console, slowdown=0.1)
    view.poll()
    assert view.seconds_left() == grid_eta([0.4], [full], 2)


def test_a_resumed_grid_is_planned_from_where_its_runs_stand(tmp_path: Path) -> None:
    from rich.console import Console

    from usbpo_cli.experiments.gridview import GridView, planned_seconds

    runs = usbpo_grid(tmp_path, seeds=2)
    write_running(runs[0].spec.out, 4000, None, "estimate")
    (runs[1].spec.out).mkdir(parents=True)
    (runs[1].spec.out / "status.json").write_text('{"env_step": "four"}')  # unreadable: from 0
    view = GridView(runs, slots=1, threads=2, console=Console(file=io.StringIO()))
    expected = cost_model_seconds(8000, 4000) + cost_model_seconds(8000, 0)
    assert view.planned_seconds() == expected  # the same sums: exactly equal
    assert planned_seconds([r.spec for r in runs], 1, 2) == expected
    assert planned_seconds([r.spec for r in runs], 1, 2, slowdown=3.0) > 2.5 * expected


def test_the_live_view_polls_while_open_and_once_more_at_exit(tmp_path: Path) -> None:
    """Opened, the view draws and a watcher polls every second; closed, it polls a last time
    (a status written just before the end still shows), stops the watcher and the display. A
    run whose config cannot be resolved is priced at nothing rather than guessed."""
    from rich.console import Console

    from usbpo_cli.experiments import gridview
    from usbpo_cli.experiments.gridview import GridView

    runs = usbpo_grid(tmp_path, seeds=2)
    view = GridView(runs, slots=1, threads=2, console=Console(file=io.StringIO()))
    with view:
        assert view.progress.live.is_started and view.thread.is_alive()
        write_running(runs[0].spec.out, 1000, None, "estimate")
        deadline = time.time() + 5
        while len(view.progress.tasks) < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert f"{ENV} usbpo seed0" in set(view_tasks(view))
        write_running(runs[1].spec.out, 2000, None, "estimate")
    assert not view.thread.is_alive() and not view.progress.live.is_started
    shown = view_tasks(view)
    assert shown[f"{ENV} usbpo seed1"].completed == 2000
    unknown = dataclasses.replace(runs[0].spec, overrides=["no_such_setting=1"])
    assert gridview.run_estimate(unknown, 0, 2) == 0.0


def test_a_long_grid_on_the_cpu_is_called_long(tmp_path: Path) -> None:
    from rich.console import Console

    from usbpo_cli.experiments.gridview import GridView

    steps = 300_000  # one USB-PO run at the paper preset: days on two cores
    assert cost_model_seconds(steps, 0) > LONG_RUN_S
    console = Console(file=io.StringIO())
    assert GridView(usbpo_grid(tmp_path, 1, steps), 1, 2, console).long_cpu_grid()
    cuda = usbpo_grid(tmp_path, 1, steps, device="cuda")
    assert not GridView(cuda, 1, 2, console).long_cpu_grid()
    assert not GridView(usbpo_grid(tmp_path, 1, 2000), 1, 2, console).long_cpu_grid()


def test_grid_header_names_what_the_grid_is(tmp_path: Path) -> None:
    from usbpo_cli.experiments.grids import Variant
    from usbpo_cli.experiments.gridview import grid_header

    runs = usbpo_grid(tmp_path)
    assert grid_header(runs) == (
        f"grid {tmp_path / 'grid'}: envs {ENV}; algos usbpo; seeds 0-2; 8000 env steps per run; "
        "preset paper; device cpu"
    )
    assert "; seeds 1; " in grid_header(runs[1:2])
    assert "; seeds 0-1; " in grid_header(runs[:2])
    variant = dataclasses.replace(runs[0], variant=Variant("usbpo-lr1e-4", "usbpo"))
    assert "; variants usbpo-lr1e-4, usbpo; " in grid_header([variant, *runs[1:]])


# --- item 8: tasks without paper values ----------------------------------------------------------


def test_pendulum_lists_its_borrowed_defaults_once(tmp_path: Path) -> None:
    args = ["train", "--env", "Pendulum-v1", "--algo", "usbpo", "--steps", "200", *TINY]
    result = usbpo_inproc(*args, "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("has no paper values") == 1, result.stderr
    payload = json.loads((tmp_path / "run" / "config.json").read_text())
    borrowed = payload["no_paper_values"]
    # tiny sets G, epoch length, train frequency and widths; the rest is borrowed
    assert borrowed["rollout_schedule"] == {
        "used": [20, 150, 1, 15],
        "note": "no paper value; borrowed from Hopper (MBPO's per-task table)",
    }
    assert borrowed["target_entropy"]["note"] == (
        "no paper value; borrowed from SAC's default, -action_dim"
    )
    assert all(e["note"].startswith("no paper value; borrowed from ") for e in borrowed.values())
    assert "no terminal condition" in payload["task"]["termination"]


def test_a_grid_lists_borrowed_defaults_once_per_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from usbpo_cli.app import _print_borrowed
    from usbpo_cli.experiments.grids import GridRun, Variant
    from usbpo_cli.runs.runner import RunSpec

    todo = [
        GridRun(env, Variant(algo, algo), seed, RunSpec(env, algo, seed, 100, tmp_path / "x"))
        for env in ("Pendulum-v1", ENV)
        for algo in ("usbpo", "sac")
        for seed in range(3)
    ]
    _print_borrowed(todo)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Pendulum-v1 has no paper values"), lines
    assert "rollout_schedule=(20, 150, 1, 15)" in lines[0]


def test_a_grid_on_a_task_without_paper_values_says_once_what_it_borrows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four Pendulum-v1 runs (two algos, two seeds): one line before they start. (The runs
    themselves are stubbed out: this is what the grid prints first.)"""
    from usbpo_cli.experiments import executors

    monkeypatch.setattr(executors, "run_one", lambda specs, threads, slowdown: [])
    grid = ["compare", "--envs", "Pendulum-v1", "--algos", "usbpo,sac", "--seeds", "2"]
    result = usbpo_inproc(*grid, "--steps", "200", "--preset", "tiny", "--out", "G", cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("Pendulum-v1 has no paper values") == 1, result.stderr


def test_paper_tasks_borrow_nothing(finished: Path) -> None:
    payload = json.loads((finished / "run" / "config.json").read_text())
    assert "no_paper_values" not in payload


def test_mountain_car_rule_is_read_from_the_env_and_matches_it() -> None:
    info = task_info("MountainCarContinuous-v0")
    assert "read from the environment" in info.termination
    assert "never" not in info.termination
    rule, _ = termination_fn("MountainCarContinuous-v0")
    env = make_env("MountainCarContinuous-v0", seed=0)
    rng = np.random.default_rng(0)
    next_obs, terminated = [], []
    for _ in range(300):  # states around the goal, then one real step
        env.reset()
        position, velocity = rng.uniform(0.35, 0.6), rng.uniform(-0.07, 0.07)
        env.unwrapped.state = np.array([position, velocity], dtype=np.float32)
        obs, _, term, _, _ = env.step(rng.uniform(-1, 1, size=1).astype(np.float32))
        next_obs.append(obs)
        terminated.append(term)
    env.close()
    batch = torch.as_tensor(np.array(next_obs))
    assert 50 < sum(terminated) < 250
    assert rule(batch, batch, batch).tolist() == terminated


def test_learned_rule_covers_real_terminal_transitions() -> None:
    """Terminal when x0 > 1 or x1 < -2: the learned clauses find both, call no real
    non-terminal state terminal, and generalise to fresh states."""
    gen = torch.Generator().manual_seed(0)
    states = torch.rand(4000, 3, generator=gen) * torch.tensor([3.0, 6.0, 2.0]) - torch.tensor(
        [1.0, 3.0, 1.0]
    )
    done = ((states[:, 0] > 1.0) | (states[:, 1] < -2.0)).float()
    rule = LearnedTermination()
    empty = torch.zeros(5, 3)
    assert not rule(empty, empty, empty).any()  # unbound: nothing seen, nothing terminates
    rule.fit(states, done)
    assert {(d, upper) for d, upper, _ in rule.clauses} == {(0, True), (1, False)}
    assert rule.uncovered == 0
    predicted = rule(states, states, states)
    assert predicted.tolist() == (done > 0.5).tolist()
    fresh = torch.tensor([[0.9, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, -1.9, 0.0], [0.0, -2.1, 0.0]])
    assert rule(fresh, fresh, fresh).tolist() == [False, True, False, True]
    rule.fit(states, torch.zeros(4000))  # no terminal transition: never terminates
    assert rule.clauses == [] and rule.uncovered == 0


def test_unknown_task_learns_from_its_own_real_buffer(tmp_path: Path) -> None:
    from usbpo_cli.runs.runner import RunSpec, prepare_run

    env_id = "InvertedDoublePendulum-v5"
    spec = RunSpec(env_id, "mbpo", 0, 200, tmp_path / "run", preset="tiny")
    run = prepare_run(spec)
    try:
        assert isinstance(run.agent.termination, LearnedTermination)
        assert run.agent.termination.buffer is run.agent.real_buffer
    finally:
        run.locks[0].release()
    payload = json.loads((tmp_path / "run" / "config.json").read_text())
    assert payload["task"]["termination"].startswith("learned from the run's real terminal")


def test_envs_says_which_rule_each_task_has(tmp_path: Path) -> None:
    result = usbpo_inproc("envs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows: dict[str, str] = {}  # task -> its rule column, wrapped lines joined
    task = ""
    for line in result.stdout.splitlines():
        if line.count("│") >= 5:
            cells = line.split("│")
            task = cells[1].strip() or task
            rows[task] = f"{rows.get(task, '')} {cells[4].strip()}".strip()
    assert "no terminal condition" in rows["Pendulum-v1"]
    assert "read from the environment" in rows["MountainCarContinuous-v0"]
    words = " ".join(result.stdout.split())  # the note may wrap at any console width
    assert "learned from the run's real terminal transitions" in words


# --- items 7 and 11: packaging ----------------------------------------------------------------


def test_ray_extra_carries_the_client() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("ray[client]") for dep in project["optional-dependencies"]["ray"])


def test_make_demo_installs_without_ray() -> None:
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo:\s*(.*)$", makefile, re.M).group(1).split()
    assert "install" not in demo, "make demo must not install the ray/dev extras"
    for target in demo:
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
        assert "ray" not in recipe and "$(TORCH_PIN)" in recipe, recipe
        assert re.search(r"pip install -q -e \.(\s|$)", recipe), recipe


def test_grid_runs_seed_by_seed_with_the_threads_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grid stopped part-way must hold the same seeds of every algo (seed-major order), and
    `--threads` must reach the runs (to leave cores free), not the cores // workers default."""
    from usbpo_cli.experiments import executors

    started: list[tuple[str, int, int]] = []

    def record(self, units, on_done):  # stands in for training: what would run, in what order
        _, threads = executors.plan_workers(self.requested, len(units), self.threads)
        started.extend((spec.algo, spec.seed, threads) for unit in units for spec in unit)
        return []

    monkeypatch.setattr(executors.LocalExecutor, "run", record)
    args = ["compare", "--envs", ENV, "--algos", "mbpo,sac", "--seeds", "2", "--steps", "100"]
    args += ["--preset", "tiny", "--threads", "1", "--vectorise", "off"]
    result = usbpo_inproc(*args, cwd=tmp_path)
    assert started == [("mbpo", 0, 1), ("sac", 0, 1), ("mbpo", 1, 1), ("sac", 1, 1)], (
        result.stdout + result.stderr
    )
    # neither option given: one worker, with the cores' threads (two here)
    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    started.clear()
    args = ["compare", "--envs", ENV, "--algos", "sac", "--seeds", "2", "--steps", "100"]
    result = usbpo_inproc(
        *args, "--preset", "tiny", "--vectorise", "off", "--out", "D", cwd=tmp_path
    )
    assert started == [("sac", 0, 2), ("sac", 1, 2)], result.stdout + result.stderr
    assert "to run on 1 worker(s)" in " ".join(result.stdout.split())


def test_vectorised_grid_trains_each_algos_seeds_as_one_unit_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--vectorise auto: the seeds of an algo that trains seeds together form one unit (one
    process), the others stay one per seed, and the output says which and why."""
    from usbpo_cli.experiments import executors

    units_seen: list[list[tuple[str, int]]] = []

    def record(self, units, on_done):
        units_seen.extend([(spec.algo, spec.seed) for spec in unit] for unit in units)
        return []

    monkeypatch.setattr(executors.LocalExecutor, "run", record)
    args = ["compare", "--envs", ENV, "--algos", "ppo,sac", "--seeds", "3", "--steps", "100"]
    result = usbpo_inproc(*args, "--preset", "tiny", cwd=tmp_path)
    assert units_seen == [
        [("ppo", 0)],
        [("sac", 0), ("sac", 1), ("sac", 2)],
        [("ppo", 1)],
        [("ppo", 2)],
    ]
    assert "sac on " + ENV + ": seeds 0, 1, 2 train as one agent" in result.stdout
    assert "ppo on " + ENV + ": one process per seed (it is on-policy" in result.stdout
    refused = usbpo_inproc(*args, "--vectorise", "maybe", "--out", "other", cwd=tmp_path)
    assert refused.returncode == 2 and "--vectorise 'maybe'" in refused.stderr
    assert not (tmp_path / "other").exists()


def test_mountain_car_goal_is_reached_at_exactly_its_thresholds() -> None:
    """gymnasium's rule is `position >= goal_position and velocity >= goal_velocity`: a state
    exactly at both thresholds ends the episode, one a step below either does not."""
    rule, _ = termination_fn("MountainCarContinuous-v0")
    env = make_env("MountainCarContinuous-v0", seed=0)
    goal_position = env.unwrapped.goal_position
    goal_velocity = env.unwrapped.goal_velocity
    env.close()
    below_position = np.nextafter(np.float32(goal_position), np.float32(-1))
    below_velocity = np.nextafter(np.float32(goal_velocity), np.float32(-1))
    states = torch.tensor(
        [
            [goal_position, goal_velocity],
            [below_position, goal_velocity],
            [goal_position, below_velocity],
            [goal_position + 0.01, goal_velocity + 0.01],
        ],
        dtype=torch.float32,
    )
    assert rule(states, states, states).tolist() == [True, False, False, True]


def test_mountain_car_rule_leaves_no_env_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thresholds are read from a throwaway env, which must be closed again."""
    import gymnasium as gym

    made, closed = [], []
    real_make = gym.make

    def make(*args, **kwargs):  # noqa: ANN202 (wraps gymnasium's make)
        env = real_make(*args, **kwargs)
        made.append(env)
        real_close = env.close
        env.close = lambda: (closed.append(env), real_close())
        return env

    monkeypatch.setattr(gym, "make", make)
    termination_fn("MountainCarContinuous-v0")
    assert made and len(closed) == len(made)


def test_learned_rule_thresholds_by_hand() -> None:
    """Non-terminal next states span x0 in [0, 0.8] and x1 in [-1, 0]; terminal ones lie at
    x0 = 1.2 and x1 = -3. Each threshold is halfway between the range and the nearest terminal
    state beyond it: x1 < (-1 - 3) / 2 = -2 (the first of two equally good clauses) and
    x0 > (0.8 + 1.2) / 2 = 1, both strict. A terminal state inside the range, or exactly on
    its edge, is beyond no non-terminal state: no clause, counted as not covered."""
    f64 = torch.float64
    rest = torch.tensor([[0.0, 0.0], [0.8, -1.0], [0.4, -0.5]], dtype=f64)
    ends = torch.tensor([[1.2, 0.0], [0.4, -3.0]], dtype=f64)
    rule = LearnedTermination()
    assert rule.clauses == [] and rule.uncovered == 0
    rule.fit(torch.cat([rest, ends]), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))
    assert rule.clauses == [(1, False, -2.0), (0, True, 1.0)]
    assert rule.uncovered == 0
    at = torch.tensor([[1.0, 0.0], [0.0, -2.0], [1.0 + 1e-9, 0.0], [0.0, -2.0 - 1e-9]], dtype=f64)
    assert rule(at, at, at).tolist() == [False, False, True, True]
    for inside in ([0.5, -0.5], [0.8, -0.5], [0.4, -1.0]):  # inside, on the x0 and x1 edges
        rows = torch.cat([rest, ends, torch.tensor([inside], dtype=f64)])
        rule.fit(rows, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
        assert rule.clauses == [(1, False, -2.0), (0, True, 1.0)], inside
        assert rule.uncovered == 1, inside
    rule.fit(rest, torch.zeros(3))  # no terminal transition: the count resets too
    assert rule.clauses == [] and rule.uncovered == 0


def test_learned_rule_with_one_or_no_non_terminal_state() -> None:
    """Every real transition terminal (an episode that ended at once): there is no range to
    stand beyond, so no clause, and all five are uncovered. One non-terminal state is a range
    of one point: a terminal state beyond it gets its clause."""
    rule = LearnedTermination()
    rule.fit(torch.arange(10.0).reshape(5, 2), torch.ones(5))
    assert rule.clauses == [] and rule.uncovered == 5
    rule.fit(torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64), torch.tensor([0.0, 1.0]))
    assert rule.clauses == [(0, True, 1.0)] and rule.uncovered == 0


def test_learned_rule_refits_as_its_real_buffer_fills() -> None:
    """Bound to a replay buffer, the rule follows what the buffer holds: nothing terminates
    until a real terminal transition arrives, then states beyond it do; a later terminal
    transition on another dimension adds its clause at the next call; bound to another buffer,
    it fits that one."""
    from usbpo_cli.agents.buffers import ReplayBuffer

    buffer = ReplayBuffer(64, 2, 1, "cpu")
    rule = LearnedTermination()
    rule.bind(buffer)
    act = torch.zeros(1)
    for x in (0.0, 0.2, 0.4):
        buffer.add(torch.zeros(2), act, 0.0, torch.tensor([x, -x]), 0.0)
    probe = torch.tensor([[5.0, 0.0], [0.0, -5.0], [0.1, -0.1]])
    assert rule(probe, probe, probe).tolist() == [False, False, False]
    buffer.add(torch.zeros(2), act, 0.0, torch.tensor([1.0, 0.0]), 1.0)
    assert rule(probe, probe, probe).tolist() == [True, False, False]  # x0 > 0.7
    buffer.add(torch.zeros(2), act, 0.0, torch.tensor([0.0, -2.0]), 1.0)
    assert rule(probe, probe, probe).tolist() == [True, True, False]  # and x1 < -1.2
    # Both clauses cover one state; the first found (x1's) comes first. (float32 rows: approx.)
    assert [(d, upper) for d, upper, _ in rule.clauses] == [(1, False), (0, True)]
    assert [t for _, _, t in rule.clauses] == pytest.approx([-1.2, 0.7])
    # Bound to another buffer (one non-terminal row), it forgets the old clauses at once.
    other = ReplayBuffer(64, 2, 1, "cpu")
    other.add(torch.zeros(2), act, 0.0, torch.tensor([0.1, -0.1]), 0.0)
    rule.bind(other)
    assert rule(probe, probe, probe).tolist() == [False, False, False]
