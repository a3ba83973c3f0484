"""Checkpoints and `--resume`: SIGKILLs at random moments continue bit-exactly, torn checkpoints
and torn or lost CSV rows are repaired, the run lock, refusals of foreign checkpoints, and the
divergence guard's rollbacks."""

from __future__ import annotations

import dataclasses
import math
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from cli_helpers import (  # tests/ is on sys.path
    progress_rows,
    snapshot,
    spawn_usbpo,
    stable_rows,
    usbpo,
    usbpo_inproc,
)

from usbpo_cli.errors import TrainingDiverged, UsageError
from usbpo_cli.runs.csvlog import PROGRESS_COLUMNS
from usbpo_cli.runs.runner import MAX_ROLLBACKS, RunSpec, prepare_run

ENV = "InvertedPendulum-v4"
STEPS = 1500  # tiny: one row per 100 env steps, so 15 rows; a few seconds of training
ALL_STEPS = list(range(100, STEPS + 1, 100))


def train_args(out: Path, steps: int = STEPS) -> list[str]:
    return [
        "train",
        "--env",
        ENV,
        "--algo",
        "usbpo",
        "--seed",
        "0",
        "--steps",
        str(steps),
        "--preset",
        "tiny",
        "--quiet",
        "--out",
        str(out),
    ]


def count_rows(run: Path) -> int:
    """Complete (newline-terminated) evaluation rows in progress.csv right now."""
    try:
        data = (run / "progress.csv").read_bytes()
    except FileNotFoundError:
        return 0
    return max(0, data.count(b"\n") - 1)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"usbpo exited ({proc.returncode}) too early:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("usbpo made no progress in 120 s")
        time.sleep(0.002)


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def one_error_line(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


def assert_same_as_baseline(run: Path, baseline: Path) -> None:
    rows = progress_rows(run)
    assert [int(r["env_step"]) for r in rows] == ALL_STEPS  # every evaluation exactly once
    assert stable_rows(rows) == stable_rows(progress_rows(baseline))
    # the comparison covers real numbers (losses, model metrics), not just empty cells
    assert sum(v != "" for r in stable_rows(rows) for v in r.values()) > 250


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: what every interrupted and resumed one must reproduce."""
    root = tmp_path_factory.mktemp("baseline")
    result = usbpo(*train_args(root / "run"), cwd=root)
    assert result.returncode == 0, result.stderr
    rows = progress_rows(root / "run")
    assert [int(r["env_step"]) for r in rows] == ALL_STEPS
    return root / "run"


def copy_of(baseline: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(baseline, run)
    return run


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """spawn_usbpo, with every process still running at teardown (a failed test) killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str, cwd: Path, log: Path) -> subprocess.Popen:
        started.append(spawn_usbpo(*args, cwd=cwd, log=log))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def checkpoints(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("ckpt-*.pt"))


# ---------------------------------------------------------------------------------------------
# kills


def test_sigkill_at_random_moments_resumes_bit_exactly(
    tmp_path: Path, baseline: Path, spawn: Callable[..., subprocess.Popen]
) -> None:
    out, log = tmp_path / "run", tmp_path / "usbpo.log"
    rng = random.Random(20240607)
    proc = spawn(*train_args(out), cwd=tmp_path, log=log)
    killed_at = []
    for _ in range(3):
        # at least one row trained by this process (a resume may first restore a lost row)
        target = count_rows(out) + rng.randint(2, 3)
        wait_until(lambda target=target: count_rows(out) >= target, proc, log)
        time.sleep(rng.uniform(0.0, 0.25))  # a random moment: env, model, policy, eval, save
        assert proc.poll() is None, "the run finished before it could be killed"
        sigkill(proc)
        killed_at.append(count_rows(out))
        proc = spawn(*train_args(out), "--resume", cwd=tmp_path, log=log)
    assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    assert len(killed_at) == 3 and killed_at[-1] < len(ALL_STEPS), killed_at
    assert_same_as_baseline(out, baseline)
    events = (out / "events.log").read_text()
    assert events.count("resumed from env step") == 3, events
    assert "finished at env step 1500" in events
    assert "Traceback" not in log.read_text()


def test_kill_before_the_first_row_then_resume(
    tmp_path: Path, baseline: Path, spawn: Callable[..., subprocess.Popen]
) -> None:
    out, log = tmp_path / "run", tmp_path / "usbpo.log"
    proc = spawn(*train_args(out), cwd=tmp_path, log=log)
    # config.json comes just before the step-0 checkpoint and the first row
    wait_until(lambda: (out / "config.json").exists(), proc, log)
    sigkill(proc)
    assert count_rows(out) <= 1, "the kill came too late to test a kill before the first row"
    # --restart: the kill may have come before the step-0 checkpoint was complete
    result = usbpo(*train_args(out), "--resume", "--restart", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_same_as_baseline(out, baseline)


def test_resume_from_a_folder_with_config_but_no_checkpoint(tmp_path: Path, baseline: Path) -> None:
    # A kill after config.json but before the step-0 checkpoint was complete (its .tmp torn).
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(baseline / "config.json", out / "config.json")
    (out / "checkpoints" / "ckpt-0000000000.pt.tmp").write_bytes(b"PK\x03")
    before = snapshot(tmp_path, exclude=(".lock",))
    refused = usbpo_inproc(*train_args(out), "--resume", cwd=tmp_path)
    assert "no readable checkpoint" in one_error_line(refused) and "--restart" in refused.stderr
    assert snapshot(tmp_path, exclude=(".lock",)) == before
    result = usbpo(*train_args(out), "--resume", "--restart", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_same_as_baseline(out, baseline)


# ---------------------------------------------------------------------------------------------
# torn files


def test_torn_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path, baseline: Path) -> None:
    run = copy_of(baseline, tmp_path)
    newest, previous = checkpoints(run)[-1], checkpoints(run)[-2]
    assert (newest.name, previous.name) == ("ckpt-0000001500.pt", "ckpt-0000001400.pt")
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])

    result = usbpo(*train_args(run), "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for text in (result.stderr, (run / "events.log").read_text()):
        assert "ckpt-0000001500.pt is unreadable" in text, text
        assert "falling back" in text, text
        assert "resumed from env step 1400" in text, text
    assert "dropped 1 progress row(s)" in (run / "events.log").read_text()
    assert_same_as_baseline(run, baseline)
    # the rerun wrote a whole checkpoint for step 1500 again
    assert torch.load(newest, weights_only=False)["state"]["agent"]["loop"]["next_step"] == 1500


@pytest.mark.parametrize("damage", ["lost-last-row", "torn-last-line"])
def test_lost_or_torn_last_csv_row_is_restored_from_the_checkpoint(
    tmp_path: Path, baseline: Path, damage: str
) -> None:
    # Killed after the final checkpoint but before (or while) its row reached the CSV.
    run = copy_of(baseline, tmp_path)
    progress = run / "progress.csv"
    complete = progress.read_bytes()
    lines = complete.splitlines(keepends=True)
    kept = b"".join(lines[:-1])
    if damage == "torn-last-line":
        kept += lines[-1][: len(lines[-1]) // 2]
    progress.write_bytes(kept)

    result = usbpo(*train_args(run), "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert progress.read_bytes() == complete  # byte for byte, wall_time_s included
    events = (run / "events.log").read_text()
    assert "resumed from env step 1500" in events
    assert ("removed a torn last line" in events) == (damage == "torn-last-line"), events


# ---------------------------------------------------------------------------------------------
# the run lock


def test_second_process_is_locked_out_until_the_holder_dies(
    tmp_path: Path, baseline: Path, spawn: Callable[..., subprocess.Popen]
) -> None:
    out, log = tmp_path / "run", tmp_path / "usbpo.log"
    holder = spawn(*train_args(out), cwd=tmp_path, log=log)
    try:
        wait_until(lambda: count_rows(out) >= 1, holder, log)
        contender = usbpo_inproc(*train_args(out), "--resume", cwd=tmp_path)
        assert holder.poll() is None, "the holder finished before the contender ran"
        line = one_error_line(contender)
        assert f"pid {holder.pid} " in line and "in use" in line, line
    finally:
        sigkill(holder)
    # the OS dropped the lock with its holder: resuming now works and finishes the run
    result = usbpo(*train_args(out), "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_same_as_baseline(out, baseline)


# ---------------------------------------------------------------------------------------------
# small in-process runs: checkpoint retention, nothing to resume, foreign checkpoints


def spec(out: Path, steps: int, algo: str = "usbpo") -> RunSpec:
    return RunSpec(ENV, algo, 0, steps, out, preset="tiny")


def test_keep_checkpoints_1_keeps_one_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepared = prepare_run(spec(run, 300), keep_checkpoints=1)
    assert [p.name for p in checkpoints(run)] == ["ckpt-0000000000.pt"]
    prepared.train()
    assert [p.name for p in checkpoints(run)] == ["ckpt-0000000300.pt"]
    assert [int(r["env_step"]) for r in progress_rows(run)] == [100, 200, 300]


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_resume_with_no_run_there(tmp_path: Path, folder: str) -> None:
    out = tmp_path / "run"
    if folder == "empty":
        out.mkdir()
    result = usbpo_inproc(*train_args(out, 300), "--resume", cwd=tmp_path)
    assert "no run to resume" in one_error_line(result)
    assert list(tmp_path.iterdir()) == ([out] if folder == "empty" else [])
    assert not out.exists() or list(out.iterdir()) == []


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 300-step run whose checkpoints the tests below tamper with."""
    run = tmp_path_factory.mktemp("short") / "run"
    prepare_run(spec(run, 300)).train()
    return run


def edit_newest_checkpoint(run: Path, **changes: object) -> None:
    path = checkpoints(run)[-1]
    payload = torch.load(path, map_location="cpu", weights_only=False)
    payload.update(changes)
    torch.save(payload, path)


FOREIGN = [
    pytest.param({"algo": "mbpo"}, "belongs to algo 'mbpo', not 'usbpo'", id="algo"),
    pytest.param({"env_id": "Hopper-v4"}, "belongs to env_id 'Hopper-v4'", id="env"),
    pytest.param({"format_version": 3}, "checkpoint format 3", id="newer-format"),
    pytest.param({"format_version": 1}, "checkpoint format 1", id="older-format"),
    pytest.param({"format_version": None}, "checkpoint format None", id="no-format"),
]


@pytest.mark.parametrize(("changes", "needle"), FOREIGN)
def test_foreign_checkpoint_is_refused_untouched(
    tmp_path: Path, short_run: Path, changes: dict, needle: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    edit_newest_checkpoint(run, **changes)
    before = snapshot(tmp_path, exclude=(".lock",))
    result = usbpo_inproc(*train_args(run, 300), "--resume", cwd=tmp_path)
    line = one_error_line(result)
    assert needle in line and "ckpt-0000000300.pt" in line, line
    # refused outright: no fallback to the older (valid) checkpoint, nothing written
    assert snapshot(tmp_path, exclude=(".lock",)) == before
    with pytest.raises(UsageError, match=re.escape(needle)):
        prepare_run(spec(run, 300), resume=True)
    assert snapshot(tmp_path, exclude=(".lock",)) == before


def test_refused_resume_leaves_the_lock_file_as_it_was(tmp_path: Path, short_run: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    edit_newest_checkpoint(run, algo="mbpo")
    before = snapshot(tmp_path)
    result = usbpo_inproc(*train_args(run, 300), "--resume", cwd=tmp_path)
    assert result.returncode == 2
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# divergence guard: rollback to the last checkpoint with a fresh random stream


def nan_after(
    original: Callable, bad_calls: Callable[[int], bool], key: str, seed: int | None = None
) -> Callable:
    """Wrap `original` so that calls whose (1-based) number satisfies `bad_calls` report NaN
    for `key` (for one seed's entry only, when `seed` is given), the rest pass through
    unchanged."""
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        result = original(*args, **kwargs)
        if bad_calls(calls):
            if dataclasses.is_dataclass(result):  # per seed when the result has seeds
                value = getattr(result, key)
                bad = [math.nan] * len(value) if isinstance(value, list) else math.nan
                return dataclasses.replace(result, **{key: bad})
            value = result[key]
            if seed is None:
                return {**result, key: torch.full_like(value, math.nan)}
            bad = value.clone()
            bad[seed] = math.nan
            return {**result, key: bad}
        return result

    return wrapper


def assert_clean_rows(run: Path, steps: list[int]) -> None:
    text = (run / "progress.csv").read_text()
    assert text.endswith("\n")
    rows = progress_rows(run)
    assert [int(r["env_step"]) for r in rows] == steps  # every row once, none dropped
    for i, row in enumerate(rows):
        assert tuple(row) == PROGRESS_COLUMNS
        assert row["eval_return_mean"] != "" and row["train_return"] != ""
        assert (row["critic_loss"] != "") == (i > 0)  # learning starts after row 1 (tiny)
        for column, value in row.items():
            assert value.lower() not in ("nan", "inf", "-inf"), (row["env_step"], column)


def test_nan_critic_loss_once_rolls_back_and_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usbpo_cli.agents import sac

    # tiny: learning starts at env step 100 with one update per step; call 150 is in row 300
    patched = nan_after(sac.SAC.update, lambda n: n == 150, "critic_loss")
    monkeypatch.setattr(sac.SAC, "update", patched)
    run = tmp_path / "run"
    summary = prepare_run(spec(run, 500)).train()
    assert summary.env_steps == 500 and summary.rows == 5
    events = (run / "events.log").read_text()
    assert "critic_loss became nan" in events, events
    assert "rolled back to env step 200 (1/3)" in events, events
    assert "finished at env step 500" in events
    assert_clean_rows(run, [100, 200, 300, 400, 500])


def test_nan_forever_stops_after_max_rollbacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usbpo_cli.agents import sac

    patched = nan_after(sac.SAC.update, lambda n: n >= 150, "critic_loss")
    monkeypatch.setattr(sac.SAC, "update", patched)
    run = tmp_path / "run"
    prepared = prepare_run(spec(run, 500))
    with pytest.raises(TrainingDiverged, match=f"stopped after {MAX_ROLLBACKS} rollback"):
        prepared.train()
    events = (run / "events.log").read_text()
    assert events.count("rolled back to env step 200") == MAX_ROLLBACKS, events
    assert "stopped: critic_loss became nan" in events
    assert_clean_rows(run, [100, 200])  # rows before the divergence are intact, no NaN row
    # the lock was released: the folder can be resumed (and diverges again, as patched)
    with pytest.raises(TrainingDiverged):
        prepare_run(spec(run, 500), resume=True).train()


def test_nan_model_loss_once_triggers_the_model_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usbpo_cli.agents import dyna

    # tiny: the model trains at env steps 100, 150, 200, ...; the third training diverges
    patched = nan_after(dyna.fit_ensemble, lambda n: n == 3, "train_loss")
    monkeypatch.setattr(dyna, "fit_ensemble", patched)
    run = tmp_path / "run"
    summary = prepare_run(spec(run, 400)).train()
    assert summary.rows == 4
    events = (run / "events.log").read_text()
    assert "model loss became non-finite at env step 200" in events, events
    assert "rolled back to env step 200 (1/3)" in events, events
    assert_clean_rows(run, [100, 200, 300, 400])


def test_one_seeds_divergence_gives_it_a_fresh_stream_and_replays_the_others_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two SAC seeds trained as one agent; seed 1's critic loss turns NaN once. Both roll back
    to their last checkpoint: seed 0 replays its rows exactly (those of the same pair never
    diverging), seed 1 goes on with a fresh random stream (its rows before the divergence
    equal, after it not), and only seed 1's events.log tells of it."""
    from usbpo_cli.agents import sac

    def pair(root: Path) -> list[RunSpec]:
        return [RunSpec(ENV, "sac", s, 500, root / f"seed{s}", preset="tiny") for s in (0, 1)]

    prepare_run(pair(tmp_path / "clean")).train()
    # tiny: one update per step from step 100, so call 150 is in the row of step 300
    patched = nan_after(sac.SAC.update, lambda n: n == 150, "critic_loss", seed=1)
    monkeypatch.setattr(sac.SAC, "update", patched)
    prepare_run(pair(tmp_path / "diverged")).train()
    clean = [stable_rows(progress_rows(tmp_path / "clean" / f"seed{s}")) for s in (0, 1)]
    rows = [stable_rows(progress_rows(tmp_path / "diverged" / f"seed{s}")) for s in (0, 1)]
    assert rows[0] == clean[0]
    assert rows[1][:2] == clean[1][:2]
    assert [row["env_step"] for row in rows[1]] == ["100", "200", "300", "400", "500"]
    assert all(a != b for a, b in zip(rows[1][2:], clean[1][2:]))
    events = [(tmp_path / "diverged" / f"seed{s}" / "events.log").read_text() for s in (0, 1)]
    assert "critic_loss became nan" in events[1]
    assert "rolled back to env step 200 (1/3)" in events[1]
    assert "rolled back" not in events[0] and "nan" not in events[0]


def test_a_rollback_tells_of_the_checkpoint_it_had_to_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A divergence rolls back to the newest readable checkpoint; what the checkpoint reader
    warned about on the way (a torn newer one) goes to events.log before the rollback."""
    from usbpo_cli.agents import sac
    from usbpo_cli.runs.checkpoint import Checkpointer

    original_load = Checkpointer.load_latest

    def with_a_warning(self):  # noqa: ANN001, ANN202
        state, warnings = original_load(self)
        return state, [*warnings, "skipped a torn ckpt-0000000300.pt (test)"]

    patched = nan_after(sac.SAC.update, lambda n: n == 150, "critic_loss")
    monkeypatch.setattr(sac.SAC, "update", patched)
    monkeypatch.setattr(Checkpointer, "load_latest", with_a_warning)
    prepare_run(spec(tmp_path / "run", 300, algo="sac")).train()
    events = (tmp_path / "run" / "events.log").read_text()
    assert "skipped a torn ckpt-0000000300.pt (test)" in events
    assert events.index("skipped a torn") < events.index("rolled back to env step 200")
