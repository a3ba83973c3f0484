"""A grid folder knows what it is, and a run folder what it holds (issue 12, items 1, 2, 4, 6).

`compare` and `ablate` write `grid.json` on first use and refuse, before writing anything, a
folder that holds something else: a single run, another grid or study, the same grid made with
other settings, a run the grid would not own, the current folder. `ablate --set` may not touch
the key its study varies. Grids save `summary.csv` next to `results.csv`, integers as integers.
`train --resume` with no readable checkpoint refuses unless `--restart`, and a mismatch names
the setting. Every refusal is one `error:` line, exit 2, and leaves every folder as it was.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import snapshot, usbpo_inproc  # tests/ is on sys.path

from usbpo_cli.experiments.grids import STUDIES, grid_manifest

ENV = "InvertedPendulum-v4"
TINY = ["--preset", "tiny", "--steps", "100"]  # tiny: 100 random steps, one evaluation row
COMPARE = ["compare", "--envs", ENV, "--algos", "usbpo,sac", "--seeds", "2", *TINY]
ABLATE = ["ablate", "--study", "phase2-lr", "--env", ENV, "--seeds", "1", *TINY]
TRAIN = ["train", "--env", ENV, "--algo", "sac", "--seed", "0", *TINY, "--quiet"]

Setup = Callable[[Path], None]  # the case folder, holding copies of grid G and run R


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ok(*args: str, cwd: Path):
    result = usbpo_inproc(*args, cwd=cwd)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def one_error_line(result) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """G: a finished compare grid (usbpo and sac, 2 seeds, 100 env steps); R: a finished
    100-step sac train run."""
    root = tmp_path_factory.mktemp("made")
    printed = ok(*COMPARE, "--out", str(root / "G"), cwd=root).stdout
    (root / "compare-stdout.txt").write_text(printed)  # beside G: the copies of G leave it
    ok(*TRAIN, "--out", str(root / "R"), cwd=root)
    return root


# --- setups: what the case folder holds besides G and R ------------------------------------------


def strip_run_to_config(tmp: Path) -> None:
    """R as a run still being started: config.json and nothing readable to resume from."""
    for name in ("progress.csv", "events.log"):
        (tmp / "R" / name).unlink()
    shutil.rmtree(tmp / "R" / "checkpoints")


def drop_checkpoints(tmp: Path) -> None:
    shutil.rmtree(tmp / "R" / "checkpoints")


def tear_checkpoints(tmp: Path) -> None:
    for path in (tmp / "R" / "checkpoints").glob("ckpt-*.pt"):
        path.write_bytes(path.read_bytes()[:100])


def foreign_file_and_no_checkpoints(tmp: Path) -> None:
    drop_checkpoints(tmp)
    (tmp / "R" / "notes.txt").write_text("mine\n")


def run_inside_folder(tmp: Path) -> None:
    shutil.copytree(tmp / "R", tmp / "H" / "mine")


def ablate_grid(study: str) -> Setup:
    """A (hand-made) ablate grid of `study` in A: its manifest and one run folder."""

    def setup(tmp: Path) -> None:
        chosen = STUDIES[study]
        manifest = grid_manifest(
            "ablate", [ENV], list(chosen.variants), 1, 100, preset="tiny", study=study
        )
        (tmp / "A").mkdir()
        (tmp / "A" / "grid.json").write_text(json.dumps(manifest))
        shutil.copytree(tmp / "R", tmp / "A" / ENV / chosen.variants[0].label / "seed0")

    return setup


def garble_manifest(tmp: Path) -> None:
    (tmp / "G" / "grid.json").write_text('{"kind": "comp')


def results_without_manifest(tmp: Path) -> None:
    (tmp / "P").mkdir()
    (tmp / "P" / "results.csv").write_text("my,own,table\n1,2,3\n")


def folder_of_ones_own(tmp: Path) -> None:
    """A user's folder with a file in it: no run or grid may be written among it."""
    (tmp / "N").mkdir()
    (tmp / "N" / "notes.txt").write_text("my notes\n")


def legacy_grid(tmp: Path) -> None:
    """A grid made before manifests: its run (100 steps), no grid.json."""
    shutil.copytree(tmp / "G" / ENV / "sac" / "seed0", tmp / "L" / ENV / "sac" / "seed0")


# --- the table ----------------------------------------------------------------------------------


def case(name: str, args: list[str], *needles: str, setup: Setup | None = None):
    return pytest.param(args, needles, setup, id=name)


SAC_GRID = ["compare", "--envs", ENV, "--algos", "sac", "--seeds", "1", *TINY]

CASES = [
    # item 2: ablate --set may not touch the key its study varies (the exact command)
    case(
        "ablate-set-phase2-lr",
        [*ABLATE, "--set", "phase2_lr=1e-2", "--out", "{tmp}/new"],
        "--set phase2_lr=1e-2",
        "varies phase2_lr",
    ),
    case(
        "ablate-set-dotted-alias",
        [*ABLATE, "--set", "phase2.lr=1e-2", "--out", "{tmp}/new"],
        "varies phase2_lr",
    ),
    case(
        "ablate-set-cmlo-alpha",
        ["ablate", "--study", "cmlo-threshold", "--env", ENV, *TINY, "--set", "cmlo_alpha=2"],
        "varies cmlo_alpha",
    ),
    case(
        "ablate-set-model-lr",
        ["ablate", "--study", "limit-update", "--env", ENV, *TINY, "--set", "model_lr=1e-2"],
        "varies model_lr",
    ),
    # item 1: a folder holding something else is refused before anything is written
    case(
        "ablate-into-compare-grid",
        [*ABLATE, "--out", "{tmp}/G"],
        "holds a compare grid",
        "not the ablate study phase2-lr",
    ),
    case("compare-into-train-run", [*SAC_GRID, "--out", "{tmp}/R"], "holds a single run"),
    case(
        "compare-into-starting-run",
        [*SAC_GRID, "--out", "{tmp}/R"],
        "holds a single run (config.json",
        setup=strip_run_to_config,
    ),
    case(
        "compare-folder-holds-foreign-run",
        [*SAC_GRID, "--out", "{tmp}/H"],
        "holds the run folder",
        "H/mine",
        "would not own",
        setup=run_inside_folder,
    ),
    case(
        "ablate-into-other-study",
        [*ABLATE, "--out", "{tmp}/A"],
        "holds the ablate study phase2-terms, not the ablate study phase2-lr",
        setup=ablate_grid("phase2-terms"),
    ),
    case(
        "compare-into-ablate-grid",
        [*SAC_GRID, "--out", "{tmp}/A"],
        "holds the ablate study phase2-lr, not a compare grid",
        setup=ablate_grid("phase2-lr"),
    ),
    case(
        "compare-rerun-other-seeds",
        [*COMPARE, "--seeds", "3", "--out", "{tmp}/G"],
        "made with seeds 2, not 3",
    ),
    case(
        "compare-rerun-other-steps",
        [*COMPARE, "--steps", "200", "--out", "{tmp}/G"],
        "made with steps 100, not 200",
    ),
    case(
        "compare-rerun-other-algos",
        [*COMPARE, "--algos", "sac", "--out", "{tmp}/G"],
        "made with algos ['sac', 'usbpo'], not ['sac']",
    ),
    case(
        "compare-rerun-with-set",
        [*COMPARE, "--set", "gamma=0.9", "--out", "{tmp}/G"],
        "made with set [], not ['gamma=0.9']",
    ),
    case(
        "compare-rerun-other-preset",
        [*COMPARE, "--preset", "demo", "--out", "{tmp}/G"],
        "made with preset 'tiny', not 'demo'",
    ),
    case(
        "compare-garbled-manifest",
        [*COMPARE, "--out", "{tmp}/G"],
        "grid.json is unreadable",
        setup=garble_manifest,
    ),
    case(
        "compare-foreign-results",
        [*SAC_GRID, "--out", "{tmp}/P"],
        "holds results.csv but no grid.json",
        setup=results_without_manifest,
    ),
    case(
        "compare-into-a-folder-of-ones-own",
        [*SAC_GRID, "--out", "{tmp}/N"],
        "holds notes.txt but no grid.json",
        setup=folder_of_ones_own,
    ),
    case(
        "train-into-a-folder-of-ones-own",
        [*TRAIN, "--out", "{tmp}/N"],
        "holds notes.txt, which is not a run's",
        setup=folder_of_ones_own,
    ),
    case(
        "compare-legacy-grid-other-settings",
        [*SAC_GRID, "--steps", "200", "--out", "{tmp}/L"],
        "different settings (steps is 100 there, 200 now)",
        setup=legacy_grid,
    ),
    case("compare-out-inside-grid", [*SAC_GRID, "--out", "{tmp}/G/sub"], "lies inside a compare"),
    case("compare-out-inside-run", [*SAC_GRID, "--out", "{tmp}/R/sub"], "inside the run folder"),
    # item 1: --out "" and the current folder, for train, compare and ablate
    case("train-out-empty", [*TRAIN, "--out", ""], "is the current folder"),
    case("compare-out-empty", [*SAC_GRID, "--out", ""], "is the current folder"),
    case("ablate-out-empty", [*ABLATE, "--out", ""], "is the current folder"),
    case("compare-out-cwd", [*SAC_GRID, "--out", "{tmp}"], "is the current folder"),
    case("train-out-dot", [*TRAIN, "--out", "."], "is the current folder"),
    # item 6: --resume with nothing readable, --restart, and named mismatches
    case(
        "resume-without-checkpoints",
        [*TRAIN, "--out", "{tmp}/R", "--resume"],
        "no readable checkpoint",
        "(none there)",
        "add --restart",
        setup=drop_checkpoints,
    ),
    case(
        "resume-with-torn-checkpoints",
        [*TRAIN, "--out", "{tmp}/R", "--resume"],
        "no readable checkpoint",
        "(2 unreadable)",
        setup=tear_checkpoints,
    ),
    case(
        "restart-with-foreign-file",
        [*TRAIN, "--out", "{tmp}/R", "--resume", "--restart"],
        "R also holds notes.txt",
        setup=foreign_file_and_no_checkpoints,
    ),
    case("restart-without-resume", [*TRAIN, "--out", "{tmp}/R", "--restart"], "goes with --resume"),
    case(
        "resume-other-steps",
        [*TRAIN, "--out", "{tmp}/R", "--resume", "--steps", "200"],
        "different run (steps is 100 there, 200 now)",
    ),
    case(
        "resume-other-set",
        [*TRAIN, "--out", "{tmp}/R", "--resume", "--set", "gamma=0.9"],
        "different run (gamma is 0.99 there, 0.9 now)",
    ),
    case(
        "resume-other-seed",
        [*TRAIN, "--out", "{tmp}/R", "--resume", "--seed", "1"],
        "different run (seed is 0 there, 1 now)",
    ),
]


@pytest.mark.parametrize(("args", "needles", "setup"), CASES)
def test_refusals_are_one_line_and_touch_nothing(
    tmp_path: Path, made: Path, args: list[str], needles: tuple[str, ...], setup: Setup | None
) -> None:
    shutil.copytree(made / "G", tmp_path / "G")
    shutil.copytree(made / "R", tmp_path / "R")
    if setup is not None:
        setup(tmp_path)
    before = snapshot(tmp_path, exclude=(".lock",))
    results = (tmp_path / "G" / "results.csv").read_bytes()
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    line = one_error_line(usbpo_inproc(*argv, cwd=tmp_path))
    for needle in needles:
        assert needle in line, (needle, line)
    assert snapshot(tmp_path, exclude=(".lock",)) == before
    assert (tmp_path / "G" / "results.csv").read_bytes() == results


# --- what grids write -------------------------------------------------------------------------

SUMMARY_COLUMNS = [
    "env",
    "algo",
    "n_seeds",
    "final_mean",
    "final_std",
    "final_iqm",
    "final_iqm_ci_low",
    "final_iqm_ci_high",
    "auc_mean",
    "auc_std",
    "p_usbpo_better",
]


def test_compare_writes_its_manifest_summary_and_integer_columns(made: Path) -> None:
    grid = made / "G"
    manifest = json.loads((grid / "grid.json").read_text())
    assert {k: manifest[k] for k in ("kind", "envs", "algos", "seeds", "steps", "preset")} == {
        "kind": "compare",
        "envs": [ENV],
        "algos": ["usbpo", "sac"],
        "seeds": 2,
        "steps": 100,
        "preset": "tiny",
    }
    assert manifest["set"] == [] and manifest["truncate_obs"] is False
    assert manifest["usbpo_version"]

    with open(grid / "summary.csv", newline="") as f:
        assert next(csv.reader(f)) == SUMMARY_COLUMNS
    summary = {row["algo"]: row for row in rows(grid / "summary.csv")}
    assert set(summary) == {"usbpo", "sac"}
    assert all(row["env"] == ENV and row["n_seeds"] == "2" for row in summary.values())
    assert summary["usbpo"]["p_usbpo_better"] == ""  # not applicable to itself
    assert 0.0 <= float(summary["sac"]["p_usbpo_better"]) <= 1.0
    for row in summary.values():
        for column in SUMMARY_COLUMNS[3:10]:  # two seeds: every statistic is a number
            float(row[column])

    results = rows(grid / "results.csv")
    assert len(results) == 4  # 2 algos x 2 seeds x 1 evaluation
    assert {(r["env_step"], r["epoch"]) for r in results} == {("100", "1")}
    assert sorted(r["seed"] for r in results) == ["0", "0", "1", "1"]


def test_counting_columns_are_written_as_integers() -> None:
    import numpy as np
    import pandas as pd

    from usbpo_cli.experiments import aggregate

    frame = pd.DataFrame(
        {
            "env_step": [100.0, 200.0],
            "model_epochs": [3.0, np.nan],  # whole numbers and an empty cell
            "model_trainings": [1.0, 2.0],
            "phase2_steps": [0.0, 5.0],
            "rollout_length": [12.5, 1.0],  # a mean over two trainings stays a float
            "eval_return_mean": [1000.0, 7.0],  # not a count: stays a float
        }
    )
    text = aggregate.csv_text(frame)
    assert text.splitlines()[1:] == ["100,3,1,0,12.5,1000.0", "200,,2,5,1.0,7.0"]


def test_ablate_records_every_set_and_one_seed_reads_n_1(tmp_path: Path) -> None:
    out = tmp_path / "A"
    result = ok(*ABLATE, "--set", "updates_per_step=2", "--out", str(out), cwd=tmp_path)
    assert "usbpo-lr1e-5: usbpo with phase2_lr=1e-5, updates_per_step=2" in result.stdout
    assert "n=1" in result.stdout and "nan" not in result.stdout
    # the study's figure, drawn from this grid: its command, on the last line
    last = " ".join(result.stdout.split("\n")[-2:]).split("figure: ")[-1]
    assert " ".join(last.split()) == f"usbpo plot --figure phase2-lr --runs {out}"
    manifest = json.loads((out / "grid.json").read_text())
    assert manifest["kind"] == "ablate" and manifest["study"] == "phase2-lr"
    assert manifest["set"] == ["updates_per_step=2"]
    assert manifest["variants"] == [
        {
            "label": f"usbpo-lr{lr}",
            "algo": "usbpo",
            "set": [f"phase2_lr={lr}", "updates_per_step=2"],
        }
        for lr in ("1e-5", "1e-4", "1e-3")
    ]
    config = json.loads((out / ENV / "usbpo-lr1e-5" / "seed0" / "config.json").read_text())
    assert config["config"]["phase2_lr"] == 1e-5 and config["config"]["updates_per_step"] == 2

    summary = {row["algo"]: row for row in rows(out / "summary.csv")}
    assert set(summary) == {"usbpo-lr1e-5", "usbpo-lr1e-4", "usbpo-lr1e-3"}
    for label, row in summary.items():
        assert row["n_seeds"] == "1"
        assert row["final_std"] == row["final_iqm_ci_low"] == row["final_iqm_ci_high"] == ""
        assert row["auc_std"] == ""
        # P(reference > variant): the reference is the study's default, lr 1e-4
        assert (row["p_usbpo_better"] == "") == (label == "usbpo-lr1e-4")

    # the identical command again: nothing to run, the manifest as it was
    before = (out / "grid.json").read_bytes()
    again = ok(*ABLATE, "--set", "updates_per_step=2", "--out", str(out), cwd=tmp_path)
    assert "3 already complete, 0 to run" in again.stdout
    assert (out / "grid.json").read_bytes() == before
    # ... and with another --set, or without it, a refusal naming the difference
    line = one_error_line(usbpo_inproc(*ABLATE, "--out", str(out), cwd=tmp_path))
    assert "made with set ['updates_per_step=2'], not []" in line


def test_identical_rerun_finishes_an_interrupted_grid(tmp_path: Path, made: Path) -> None:
    grid = tmp_path / "G"
    shutil.copytree(made / "G", grid)
    manifest = (grid / "grid.json").read_bytes()
    shutil.rmtree(grid / ENV / "sac" / "seed1")  # never started
    started = grid / ENV / "sac" / "seed0"  # killed before its first checkpoint
    shutil.rmtree(started / "checkpoints")
    (started / "progress.csv").unlink()
    result = ok(*COMPARE, "--out", str(grid), cwd=tmp_path)
    assert "2 already complete, 2 to run" in result.stdout
    assert (grid / "grid.json").read_bytes() == manifest
    assert {(r["algo"], r["seed"]) for r in rows(grid / "results.csv")} == {
        ("usbpo", "0"),
        ("usbpo", "1"),
        ("sac", "0"),
        ("sac", "1"),
    }
    assert [r["env_step"] for r in rows(started / "progress.csv")] == ["100"]


@pytest.mark.parametrize("damage", [drop_checkpoints, tear_checkpoints], ids=["none", "torn"])
def test_restart_starts_over_and_keeps_what_was_there(
    tmp_path: Path, made: Path, damage: Setup
) -> None:
    run = tmp_path / "R"
    shutil.copytree(made / "R", run)
    damage(tmp_path)
    old_rows = (run / "progress.csv").read_text()
    result = ok(*TRAIN, "--out", str(run), "--resume", "--restart", cwd=tmp_path)
    assert "starting this run over" in result.stderr
    assert [r["env_step"] for r in rows(run / "progress.csv")] == ["100"]
    kept = list(run.glob("progress.unresumable-*.csv"))
    assert len(kept) == 1 and kept[0].read_text() == old_rows
    aside = sorted(p.name for p in (run / "checkpoints").glob("unreadable-*/ckpt-*.pt"))
    torn = damage is tear_checkpoints
    assert aside == (["ckpt-0000000000.pt", "ckpt-0000000100.pt"] if torn else [])
    events = (run / "events.log").read_text()
    assert "--restart: no readable checkpoint; starting this run over" in events
    assert f"earlier rows kept in {kept[0].name}" in events
    assert ("2 unreadable checkpoint file(s) kept in checkpoints/unreadable-" in events) == torn
    # and from now on it resumes from its own new checkpoints
    ok(*TRAIN, "--out", str(run), "--resume", cwd=tmp_path)
    assert "resumed from env step 100" in (run / "events.log").read_text()


def test_compare_prints_the_table_it_wrote_and_where(made: Path) -> None:
    """The printed table agrees with summary.csv (mean +- std to one decimal, the seeds, P(usbpo
    > algo) to two, `-` for usbpo itself), and the last lines name the two files."""
    printed = (made / "compare-stdout.txt").read_text().splitlines()
    assert printed[-2:] == [
        f"results: {made / 'G' / 'results.csv'}",
        f"summary: {made / 'G' / 'summary.csv'}",
    ]
    table = {}
    for line in printed:
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 7 and cells[0] in ("usbpo", "sac"):
            table[cells[0]] = cells
    assert set(table) == {"usbpo", "sac"}
    for row in rows(made / "G" / "summary.csv"):
        cells = table[row["algo"]]
        mean, std = float(row["final_mean"]), float(row["final_std"])
        auc_mean, auc_std = float(row["auc_mean"]), float(row["auc_std"])
        assert cells[1:3] == [row["n_seeds"], f"{mean:.1f} ± {std:.1f}"]
        low, high = float(row["final_iqm_ci_low"]), float(row["final_iqm_ci_high"])
        assert cells[3] == f"{float(row['final_iqm']):.1f} [{low:.1f}, {high:.1f}]"
        assert cells[4] == f"{auc_mean:.1f} ± {auc_std:.1f}"
        better = row["p_usbpo_better"]
        assert cells[6] == (f"{float(better):.2f}" if better else "-")


def test_plot_names_its_figures_and_says_where_it_drew(tmp_path: Path, made: Path) -> None:
    from usbpo_cli.experiments.plots import FIGURES

    listed = ok("plot", "--list", cwd=tmp_path).stdout.splitlines()
    assert [line.split()[0] for line in listed] == list(FIGURES)
    for line, description in zip(listed, FIGURES.values()):
        assert " ".join(line.split()[1:]) == " ".join(description.split())
    shutil.copytree(made / "G", tmp_path / "G")
    result = ok("plot", "--figure", "learning-curves", "--runs", str(tmp_path / "G"), cwd=tmp_path)
    written = tmp_path / "G" / "learning-curves.png"
    assert result.stdout.strip() == f"figure: {written}"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_grid_started_by_another_usbpo_says_so_and_keeps_its_manifest(
    tmp_path: Path, made: Path
) -> None:
    shutil.copytree(made / "G", tmp_path / "G")
    manifest = json.loads((tmp_path / "G" / "grid.json").read_text())
    current = manifest["usbpo_version"]
    manifest["usbpo_version"] = "0.0.1"
    (tmp_path / "G" / "grid.json").write_text(json.dumps(manifest))
    before = (tmp_path / "G" / "grid.json").read_bytes()
    result = ok(*COMPARE, "--out", str(tmp_path / "G"), cwd=tmp_path)  # complete: nothing runs
    note = "note: this grid was started with usbpo 0.0.1; runs from now on use " + current
    assert note in " ".join(result.stderr.split()), result.stderr
    assert (tmp_path / "G" / "grid.json").read_bytes() == before
