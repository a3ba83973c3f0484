"""Hostile input to `train` (and `--resume`), `compare`, `ablate` and `plot`, as one table: every
case must exit with code 2 and one `error:` line on stderr, never a traceback, and must leave a
finished run folder next to it (and everything else in its folder) exactly as it was."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cli_helpers import cli_env, snapshot, usbpo, usbpo_inproc  # tests/ is on sys.path

ENV = "InvertedPendulum-v4"
TRAIN = [
    *("train", "--env", ENV, "--algo", "usbpo", "--seed", "0"),
    *("--steps", "300", "--preset", "tiny", "--quiet"),
]
ON_RUN = [*TRAIN, "--out", "{run}", "--resume"]  # aimed at the finished run itself
GRID = ["compare", "--envs", ENV, "--seeds", "1", "--steps", "100", "--preset", "tiny"]
PLOT = ["plot", "--figure", "learning-curves", "--runs", "{tmp}/grid", "--out", "{tmp}/fig.png"]

Setup = Callable[[Path, Path], None]  # (case folder, run folder inside it)


# --- setups: damage made before the "before" snapshot -------------------------------------------


def edit_checkpoint(**changes: object) -> Setup:
    def setup(tmp: Path, run: Path) -> None:
        path = sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1]
        payload = torch.load(path, map_location="cpu", weights_only=False)
        payload.update(changes)
        torch.save(payload, path)

    return setup


def drop_csv_rows(n: int) -> Setup:
    def setup(tmp: Path, run: Path) -> None:
        lines = (run / "progress.csv").read_text().splitlines(keepends=True)
        (run / "progress.csv").write_text("".join(lines[:-n]))

    return setup


def garble_config(tmp: Path, run: Path) -> None:
    (run / "config.json").write_text('{"algo": "usbpo", ')


def grid_csv(transform: Callable[[str], str]) -> Setup:
    """A grid holding one run whose progress.csv is `transform(the finished run's CSV)`."""

    def setup(tmp: Path, run: Path) -> None:
        folder = tmp / "grid" / ENV / "usbpo" / "seed0"
        folder.mkdir(parents=True)
        (folder / "progress.csv").write_text(transform((run / "progress.csv").read_text()))

    return setup


def without_column(name: str) -> Callable[[str], str]:
    def transform(text: str) -> str:
        rows = [line.split(",") for line in text.splitlines()]
        index = rows[0].index(name)
        return "".join(",".join(r[:index] + r[index + 1 :]) + "\n" for r in rows)

    return transform


def nan_return(text: str) -> str:
    lines = text.splitlines()
    cells = lines[2].split(",")
    cells[2] = "nan"  # eval_return_mean
    lines[2] = ",".join(cells)
    return "\n".join(lines) + "\n"


def grid_holding_run(tmp: Path, run: Path) -> None:
    shutil.copytree(run, tmp / "grid" / ENV / "usbpo" / "seed0")


# --- the table --------------------------------------------------------------------------------

BUGS: dict[str, str] = {}  # case name -> why it is expected to fail (none today)


def case(
    name: str,
    args: list[str],
    *needles: str,
    setup: Setup | None = None,
    proc: bool = False,
    usage: bool = False,
    env: dict[str, str] | None = None,
) -> pytest.ParameterSet:
    """`proc`: run as a real subprocess (with `env` added), else in-process; `usage`: typer's own
    usage error (a boxed message, not one line), checked loosely."""
    marks = [pytest.mark.xfail(strict=True, reason=BUGS[name])] if name in BUGS else []
    return pytest.param(args, needles, setup, proc, usage, env, id=name, marks=marks)


CASES = [
    # train: malformed --set values, aimed at the finished run with --resume
    case("set-int-abc", [*ON_RUN, "--set", "updates_per_step=abc"], "updates_per_step", "'abc'"),
    case("set-int-1.5", [*ON_RUN, "--set", "updates_per_step=1.5"], "updates_per_step", "int"),
    case(
        "set-tuple-3",
        [*ON_RUN, "--set", "rollout_schedule=(1,2,3)"],
        "rollout_schedule",
        "expected 4 numbers, got 3",
    ),
    case("set-gamma-2", [*ON_RUN, "--set", "gamma=2"], "gamma", "(0, 1]"),
    case("set-real-ratio", [*ON_RUN, "--set", "real_ratio=-0.1"], "real_ratio", "-0.1"),
    case("set-terms", [*ON_RUN, "--set", "phase2_terms=neither"], "phase2_terms", "'neither'"),
    case("set-nan", [*ON_RUN, "--set", "target_entropy=nan"], "target_entropy", "'nan'"),
    case("set-no-equals", [*ON_RUN, "--set", "gamma"], "'gamma'", "key=value"),
    case("set-typo", [*ON_RUN, "--set", "gama=0.9"], "gama", "did you mean gamma"),
    # train: wrong types and values of options
    case(
        "steps-abc", [*TRAIN, "--steps", "abc", "--out", "{run}"], "--steps", usage=True, proc=True
    ),
    case("keep-abc", [*ON_RUN, "--keep-checkpoints", "x"], "--keep-checkpoints", usage=True),
    case("seed-negative", [*TRAIN, "--seed", "-1", "--out", "{tmp}/new"], "--seed", "-1"),
    case("threads-negative", [*ON_RUN, "--threads", "-1"], "--threads must be >= 0"),
    case("keep-0", [*ON_RUN, "--keep-checkpoints", "0"], "--keep-checkpoints must be >= 1"),
    case("keep-0-new-out", [*TRAIN, "--keep-checkpoints", "0", "--out", "{tmp}/new"], "keep"),
    case("device-tpu", [*ON_RUN, "--device", "tpu"], "--device 'tpu'"),
    case(
        "cuda-hidden",
        [*ON_RUN, "--device", "cuda"],
        "--device cuda",
        "CUDA",
        proc=True,
        env={"CUDA_VISIBLE_DEVICES": ""},
    ),
    # train: where --out points
    case("out-is-file", [*TRAIN, "--out", "{tmp}/afile"], "afile", "is a file"),
    case("out-under-file", [*TRAIN, "--out", "{tmp}/afile/sub"], "cannot write", "afile/sub"),
    case("out-in-proc", [*TRAIN, "--out", "/proc/usbpo-x"], "cannot write", "/proc/usbpo-x"),
    case("out-other-run", [*TRAIN, "--seed", "1", "--out", "{run}"], "different run"),
    case("resume-other-steps", [*ON_RUN, "--steps", "600"], "different run"),
    case("resume-missing", [*TRAIN, "--out", "{tmp}/nope", "--resume"], "no run to resume"),
    case("resume-garbled-config", ON_RUN, "config.json is unreadable", setup=garble_config),
    # --resume against damaged or foreign state
    case(
        "ckpt-other-algo",
        ON_RUN,
        "ckpt-0000000300.pt",
        "belongs to algo 'mbpo', not 'usbpo'",
        setup=edit_checkpoint(algo="mbpo"),
        proc=True,
    ),
    case(
        "ckpt-other-env",
        ON_RUN,
        "belongs to env_id 'Hopper-v4'",
        setup=edit_checkpoint(env_id="Hopper-v4"),
    ),
    case(
        "ckpt-newer-format",
        ON_RUN,
        "checkpoint format 3",
        "upgrade usbpo",
        setup=edit_checkpoint(format_version=3),
    ),
    case(
        "ckpt-older-format",
        ON_RUN,
        "checkpoint format 1",
        "--restart",
        setup=edit_checkpoint(format_version=1),
    ),
    case(
        "csv-lost-two-rows",
        ON_RUN,
        "has 1 rows but the checkpoint has 3",
        setup=drop_csv_rows(2),
    ),
    # compare
    case("compare-unknown-algo", [*GRID, "--algos", "usbpo,nosuch"], "unknown algo 'nosuch'"),
    case("compare-unknown-env", [*GRID, "--algos", "sac", "--envs", "Hoper-v4"], "Hopper-v4"),
    case("compare-workers-0", [*GRID, "--algos", "sac", "--workers", "0"], "--workers"),
    case("compare-threads-negative", [*GRID, "--algos", "sac", "--threads", "-2"], "--threads"),
    case("compare-slurm", [*GRID, "--algos", "sac", "--executor", "slurm"], "unknown executor"),
    case(
        "compare-address-local",
        [*GRID, "--algos", "sac", "--address", "ray://10.0.0.1:10001"],
        "--address only applies to --executor ray",
    ),
    case("compare-bad-set", [*GRID, "--algos", "sac", "--set", "real_ratio=2"], "real_ratio"),
    case("compare-seeds-abc", [*GRID, "--algos", "sac", "--seeds", "abc"], "--seeds", usage=True),
    case(
        "compare-grid-holds-other-run",
        [*GRID, "--algos", "usbpo", "--out", "{tmp}/grid"],
        "different settings",
        setup=grid_holding_run,
    ),
    case("compare-out-is-file", [*GRID, "--algos", "sac", "--out", "{tmp}/afile"], "afile"),
    # ablate
    case("ablate-unknown-study", ["ablate", "--study", "nosuch"], "unknown study 'nosuch'"),
    case("ablate-no-study", ["ablate", "--env", ENV], "unknown study None"),
    case(
        "ablate-seeds-0",
        ["ablate", "--study", "phase2-terms", "--env", ENV, "--seeds", "0"],
        "--seeds must be >= 1",
    ),
    case(
        "ablate-bad-set",
        ["ablate", "--study", "phase2-lr", "--env", ENV, "--set", "gamma=2"],
        "gamma",
    ),
    case(
        "ablate-slurm",
        ["ablate", "--study", "phase2-lr", "--env", ENV, "--preset", "tiny", "--steps", "100"]
        + ["--executor", "slurm", "--out", "{tmp}/abl"],
        "unknown executor 'slurm'",
    ),
    # plot
    case(
        "plot-missing-column",
        PLOT,
        "missing required column(s) eval_return_mean",
        setup=grid_csv(without_column("eval_return_mean")),
    ),
    case(
        "plot-garbage-row",
        PLOT,
        "malformed row at line 5",
        setup=grid_csv(lambda text: text + "garbage,row\n"),
    ),
    case("plot-empty-csv", PLOT, "is empty", setup=grid_csv(lambda text: "")),
    case(
        "plot-header-only",
        PLOT,
        "no evaluation rows",
        setup=grid_csv(lambda text: text.splitlines(keepends=True)[0]),
    ),
    case(
        "plot-nan-return",
        PLOT,
        "eval_return_mean must be a finite number",
        setup=grid_csv(nan_return),
    ),
    case(
        "plot-unknown-figure",
        ["plot", "--figure", "nope", "--runs", "{tmp}"],
        "unknown figure 'nope'",
    ),
    case("plot-no-figure", ["plot", "--runs", "{tmp}"], "unknown figure None"),
    case("plot-runs-missing", [*PLOT[:3], "--runs", "{tmp}/nope"], "does not exist"),
    case("plot-runs-is-file", [*PLOT[:3], "--runs", "{tmp}/afile"], "is a file"),
    case(
        "plot-reference-not-folder",
        [*PLOT[:3], "--runs", "{run}", "--reference", "{tmp}/afile"],
        "--reference",
    ),
    case(
        "plot-out-jpg",
        [*PLOT[:3], "--runs", "{run}", "--out", "{tmp}/fig.jpg"],
        "unsupported figure format '.jpg'",
    ),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny usbpo run (300 env steps, 3 rows), copied into every case's folder."""
    root = tmp_path_factory.mktemp("finished")
    args = [arg.replace("{run}", str(root / "run")) for arg in [*TRAIN, "--out", "{run}"]]
    result = usbpo_inproc(*args, cwd=root)
    assert result.returncode == 0, result.stderr
    assert len((root / "run" / "progress.csv").read_text().splitlines()) == 4
    return root / "run"


@pytest.mark.parametrize(("args", "needles", "setup", "proc", "usage", "env"), CASES)
def test_hostile_input_is_one_line_and_touches_nothing(
    tmp_path: Path,
    finished_run: Path,
    args: list[str],
    needles: tuple[str, ...],
    setup: Setup | None,
    proc: bool,
    usage: bool,
    env: dict[str, str] | None,
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (tmp_path / "afile").write_text("precious\n")
    if setup is not None:
        setup(tmp_path, run)
    # The lock file names its last holder; it is no result (see test_resume for its rewrite).
    before = snapshot(tmp_path, exclude=(".lock",))
    argv = [arg.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for arg in args]
    if proc:
        result = usbpo(*argv, cwd=tmp_path, env={**cli_env(), **(env or {})})
    else:
        result = usbpo_inproc(*argv, cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    if usage:  # typer's boxed usage error: not ours to format, but no traceback and exit 2
        assert "Invalid value" in result.stderr and needles[0] in result.stderr, result.stderr
    else:
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error:"), lines[0]
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])
    assert snapshot(tmp_path, exclude=(".lock",)) == before


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 25
    commands = {params.values[0][0] for params in CASES}
    assert commands == {"train", "compare", "ablate", "plot"}
    assert any("--resume" in params.values[0] for params in CASES)


def test_real_process_error_has_no_traceback(tmp_path: Path) -> None:
    # one end-to-end check that the in-process runner above sees what a real process prints
    result = usbpo(*TRAIN, "--set", "gamma=2", "--out", str(tmp_path / "x"), cwd=tmp_path)
    inproc = usbpo_inproc(*TRAIN, "--set", "gamma=2", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (inproc.returncode, inproc.stderr)
    assert list(tmp_path.iterdir()) == []
