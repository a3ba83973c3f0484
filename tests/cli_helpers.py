"""Running `usbpo` as a real subprocess from tests, and fingerprinting folders."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200", NO_COLOR="1")
    env.pop("FORCE_COLOR", None)
    return env


def usbpo(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`usbpo ARGS`, as `python -m usbpo_cli.app ARGS` in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "usbpo_cli.app", *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def snapshot(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file and folder under `root`, files with a content hash; names in `exclude` are
    left out."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.name in exclude:
            continue
        key = str(path.relative_to(root))
        state[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return state


def usbpo_inproc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`usbpo ARGS` run in this process through typer's CliRunner (no interpreter start-up, so
    a table of error cases stays fast). An exception that escapes the CLI is appended to stderr
    as a traceback, so a "Traceback" check sees it as it would in a real process."""
    import traceback

    from typer.testing import CliRunner

    from usbpo_cli import app as cli

    # The CLI's consoles are made at import, and take their width from COLUMNS then (pytest-
    # xdist's workers set 80): give them the 200 columns a `usbpo` process started with
    # cli_env() has, so the output wraps as it would there.
    for console in (cli.console, cli.err_console):
        console.width = 200
    app = cli.app
    before = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})
    finally:
        os.chdir(before)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, stderr)


def spawn_usbpo(*args: str, cwd: Path, log: Path) -> subprocess.Popen:
    """`usbpo ARGS` started in the background (for kills); stdout and stderr go to `log`."""
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "usbpo_cli.app", *args],
            cwd=cwd,
            env=cli_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def progress_rows(run: Path) -> list[dict[str, str]]:
    """progress.csv as dicts, one per evaluation row."""
    import csv

    with open(run / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def stable_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Rows without the timing columns (`wall_time_s`, `t_*`), which differ between runs."""
    return [
        {k: v for k, v in row.items() if k != "wall_time_s" and not k.startswith("t_")}
        for row in rows
    ]


def tiny_train_args(algo: str, out: Path) -> list[str]:
    """`usbpo train` arguments of the 300-step tiny InvertedPendulum-v4 run the algorithm
    tests share."""
    return [
        "train",
        "--env",
        "InvertedPendulum-v4",
        "--algo",
        algo,
        "--preset",
        "tiny",
        "--steps",
        "300",
        "--quiet",
        "--out",
        str(out),
    ]


def assert_resume_reproduces(algo: str, finished: Path, tmp_path: Path) -> None:
    """Roll a finished 300-step tiny run back to its step-200 checkpoint (dropping the newest
    checkpoint and the last row), resume it, and demand the same rows as the finished run."""
    assert_rollback_reproduces(finished, tmp_path, lambda run: tiny_train_args(algo, run))


def assert_rollback_reproduces(
    finished: Path,
    tmp_path: Path,
    train_args: Callable[[Path], list[str]],
    last: int = 300,
    resumed_from: int = 200,
) -> subprocess.CompletedProcess:
    """Copy a finished run (its newest checkpoint at step `last`) to `tmp_path/run`, drop that
    checkpoint and the last row, resume it with `train_args(run)` and demand the finished run's
    rows, resumed from step `resumed_from`; the resume's process."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "checkpoints" / f"ckpt-{last:010d}.pt").unlink()
    lines = (run / "progress.csv").read_text().splitlines(keepends=True)
    (run / "progress.csv").write_text("".join(lines[:-1]))
    result = usbpo(*train_args(run), "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed from env step {resumed_from}" in (run / "events.log").read_text()
    rows = progress_rows(run)
    assert stable_rows(rows) == stable_rows(progress_rows(finished))
    # the resumed run's clock continues from the checkpoint's, it does not restart or run back
    assert 0 < float(rows[-2]["wall_time_s"]) <= float(rows[-1]["wall_time_s"])
    return result


def tiny_run(algo: str, root: Path) -> Path:
    """A finished 300-step tiny run of `algo` on InvertedPendulum-v4 in `root/run`."""
    result = usbpo(*tiny_train_args(algo, root / "run"), cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "run"


def assert_validation(config, ok: bool) -> None:  # noqa: ANN001 (any agent config)
    """`config.validate()` passes when `ok`, else refuses with a UsageError."""
    import pytest

    from usbpo_cli.errors import UsageError

    if ok:
        config.validate()
    else:
        with pytest.raises(UsageError):
            config.validate()


def assert_seeds_run_one_per_process(tmp_path, agent_cls, config, algo: str, reason: str) -> None:  # noqa: ANN001
    """A grid of `algo` and SAC, two seeds each on InvertedPendulum-v4: `algo`'s seeds are
    planned one unit each, with `reason` in the grid's note, where SAC's make one unit; the
    agent itself refuses two seeds."""
    import pytest

    from usbpo_cli.experiments.grids import Variant, build_grid, plan_units

    env = "InvertedPendulum-v4"
    runs = build_grid(
        [env], [Variant(algo, algo), Variant("sac", "sac")], 2, 100, tmp_path / "grid"
    )
    units, notes = plan_units(runs, "auto")
    shapes = [[(run.variant.algo, run.seed) for run in unit] for unit in units]
    assert shapes == [[(algo, 0)], [(algo, 1)], [("sac", 0), ("sac", 1)]]
    assert notes == [f"{algo} on {env}: one process per seed ({reason})"]
    with pytest.raises(ValueError, match="one seed at a time"):
        agent_cls(env, config, seed=[0, 1], total_steps=1000)
