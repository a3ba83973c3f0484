"""`compare`, `ablate` and `plot` end to end: tiny grids through both executors, resuming an
interrupted grid without repeating finished runs, and one-line errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from cli_helpers import snapshot, usbpo  # tests/ is on sys.path

ENV = "InvertedPendulum-v4"
GRID = [
    "compare",
    "--envs",
    ENV,
    "--algos",
    "mbpo,sac",
    "--seeds",
    "2",
    "--steps",
    "200",
    "--preset",
    "tiny",
]


def results(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_complete_grid(out: Path) -> None:
    rows = results(out)
    assert {(r["algo"], r["seed"]) for r in rows} == {
        ("mbpo", "0"),
        ("mbpo", "1"),
        ("sac", "0"),
        ("sac", "1"),
    }
    assert {r["env"] for r in rows} == {ENV}
    assert sorted({int(r["env_step"]) for r in rows}) == [100, 200]  # tiny: 100-step epochs
    for algo in ("mbpo", "sac"):
        for seed in (0, 1):
            assert (out / ENV / algo / f"seed{seed}" / "progress.csv").exists()


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_compare_runs_a_tiny_grid(tmp_path: Path, executor: str) -> None:
    out = tmp_path / "grid"
    result = usbpo(*GRID, "--out", str(out), "--workers", "2", "--executor", executor, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_complete_grid(out)
    assert "4 to run" in result.stdout
    assert "IQM" in result.stdout and "P(usbpo > algo)" in result.stdout
    assert "mbpo" in result.stdout and "sac" in result.stdout


def test_interrupted_grid_is_finished_without_repeating_runs(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    assert usbpo(*GRID, "--out", str(out), cwd=tmp_path).returncode == 0
    done = out / ENV / "mbpo" / "seed0"
    torn = out / ENV / "sac" / "seed1"
    missing = out / ENV / "mbpo" / "seed1"
    before = snapshot(done)
    complete_rows = (torn / "progress.csv").read_text()
    # An interruption: one run killed after its last checkpoint but before its last CSV row,
    # another never started.
    lines = complete_rows.splitlines()
    (torn / "progress.csv").write_text("\n".join(lines[:2]) + "\n")
    for path in sorted(missing.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    missing.rmdir()

    result = usbpo(*GRID, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 already complete, 2 to run" in result.stdout
    assert snapshot(done) == before  # the finished run was not repeated
    assert_complete_grid(out)
    # The lost row came back from the checkpoint, byte for byte.
    assert (torn / "progress.csv").read_text() == complete_rows

    again = usbpo(*GRID, "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0 and "4 already complete, 0 to run" in again.stdout


def test_plot_draws_from_a_grid_and_rejects_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    assert usbpo(*GRID, "--out", str(out), cwd=tmp_path).returncode == 0
    figure = tmp_path / "curves.png"
    result = usbpo(
        "plot",
        "--figure",
        "learning-curves",
        "--runs",
        str(out),
        "--out",
        str(figure),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 5000

    listing = usbpo("plot", "--list", cwd=tmp_path)
    assert listing.returncode == 0 and "delta-magnitude" in listing.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, needle in (
        (["--figure", "no-such-figure", "--runs", str(out)], "unknown figure"),
        (["--figure", "learning-curves", "--runs", str(empty)], "progress.csv"),
        (["--figure", "learning-curves", "--runs", str(tmp_path / "nope")], "nope"),
    ):
        bad = usbpo("plot", *args, cwd=tmp_path)
        assert bad.returncode == 2, args
        assert needle in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["compare", "--algos", "usbpo,nosuch"], "unknown algo"),
        (["compare", "--envs", "Hoper-v4"], "Hopper-v4"),
        (["compare", "--seeds", "0"], "--seeds"),
        (["compare", "--steps", "-1"], "--steps"),
        (["compare", "--workers", "0", "--steps", "100"], "--workers"),
        (["compare", "--executor", "slurm"], "unknown executor"),
        (["ablate", "--study", "nosuch"], "unknown study"),
    ],
)
def test_bad_grid_input_is_one_line_and_creates_nothing(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = usbpo(*args, "--out", str(tmp_path / "grid"), cwd=tmp_path)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "grid").exists() and not (tmp_path / "runs").exists()


def test_ablate_list_describes_every_study(tmp_path: Path) -> None:
    result = usbpo("ablate", "--list", cwd=tmp_path)
    assert result.returncode == 0
    for study in ("phase2-lr", "phase2-terms", "limit-update", "cmlo-threshold"):
        assert study in result.stdout


def run_tiny_study(study: str, out: Path, cwd: Path):
    """One seed of every variant of `study`, 200 tiny env steps each, two at a time."""
    return usbpo(
        "ablate",
        "--study",
        study,
        "--env",
        ENV,
        "--seeds",
        "1",
        "--steps",
        "200",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--workers",
        "2",
        cwd=cwd,
    )


def test_ablate_runs_the_phase2_terms_study(tmp_path: Path) -> None:
    out = tmp_path / "terms"
    result = run_tiny_study("phase2-terms", out, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    labels = {r["algo"] for r in results(out)}
    assert labels == {"mbpo", "phase2-shift", "phase2-bias", "phase2-both"}
    import json

    config = json.loads((out / ENV / "phase2-shift" / "seed0" / "config.json").read_text())
    assert config["algo"] == "usbpo" and config["config"]["phase2_terms"] == "shift"


def test_ablate_runs_the_cmlo_threshold_study(tmp_path: Path) -> None:
    out = tmp_path / "cmlo"
    result = run_tiny_study("cmlo-threshold", out, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = results(out)
    assert {r["algo"] for r in rows} == {"cmlo-alpha1", "cmlo-alpha3", "cmlo-alpha5"}
    assert all(r["model_update_step"] == "101" for r in rows if r["env_step"] == "200")
    import json

    for alpha in (1, 3, 5):
        run = out / ENV / f"cmlo-alpha{alpha}" / "seed0"
        config = json.loads((run / "config.json").read_text())
        assert config["algo"] == "cmlo" and config["config"]["cmlo_alpha"] == alpha


def test_workers_and_threads_are_sized_for_the_cores_the_process_may_use(monkeypatch) -> None:
    """A process pinned to some cores (`taskset`, a cpuset) sizes its workers and threads for
    those cores, not for the whole machine that `os.cpu_count()` counts."""
    from usbpo_cli.experiments.executors import plan_workers
    from usbpo_cli.util import cores

    monkeypatch.setattr(cores.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert plan_workers(4, 10) == (1, 1)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1, 2, 5}, raising=False)
    assert plan_workers(2, 10) == (2, 2)  # four usable cores shared by two workers
    assert plan_workers(8, 3) == (3, 1)  # no more workers than runs
