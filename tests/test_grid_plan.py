"""What a grid plans (experiments/grids.py) on folders built here: which runs count as done,
which seeds train together, and that every ablation variant's label names the value it runs
with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from usbpo_cli.errors import UsageError
from usbpo_cli.experiments.grids import (
    STUDIES,
    GridRun,
    Variant,
    build_grid,
    check_grid_folder,
    grid_manifest,
    plan_units,
    record_grid,
    run_status,
)
from usbpo_cli.runs.runner import RunSpec, resolve_run

ENV = "InvertedPendulum-v4"
HEADER = "env_step,epoch,eval_return_mean,eval_return_std,train_return,wall_time_s\n"


def spec(tmp_path: Path, seed: int = 0) -> RunSpec:
    return RunSpec(ENV, "sac", seed, 300, tmp_path / f"seed{seed}", preset="tiny")


def written(run: RunSpec, *steps: int) -> RunSpec:
    """A run folder whose progress.csv ends at the last of `steps`."""
    run.out.mkdir(parents=True)
    (run.out / "config.json").write_text(json.dumps(resolve_run(run)[1], default=str))
    rows = "".join(f"{s},{s // 100},1.0,0.0,1.0,0.5\n" for s in steps)
    (run.out / "progress.csv").write_text(HEADER + rows)
    return run


def test_a_run_is_complete_only_once_its_last_row_reaches_its_steps(tmp_path: Path) -> None:
    assert run_status(spec(tmp_path / "a"), resolve_run(spec(tmp_path / "a"))[1]) == "new"
    for folder, steps, status in (("b", (100, 200), "partial"), ("c", (100, 200, 300), "complete")):
        run = written(spec(tmp_path / folder), *steps)
        assert run_status(run, resolve_run(run)[1]) == status


def test_seeds_train_together_only_from_the_same_point(tmp_path: Path) -> None:
    variant = Variant("sac", "sac")
    new = [GridRun(ENV, variant, s, spec(tmp_path, s), "new") for s in (0, 1)]
    at_200 = written(spec(tmp_path, 2), 100, 200)
    at_100 = written(spec(tmp_path, 3), 100)
    for run in (at_200, at_100):  # a checkpoint named by the step it was taken at
        (run.out / "checkpoints").mkdir()
        step = 200 if run is at_200 else 100
        (run.out / "checkpoints" / f"ckpt-{step:010d}.pt").write_bytes(b"")
    resumed = [
        GridRun(ENV, variant, 2, at_200, "partial"),
        GridRun(ENV, variant, 3, at_100, "partial"),
    ]
    units, notes = plan_units([*new, *resumed], "auto")
    assert [[run.seed for run in unit] for unit in units] == [[0, 1], [2], [3]]
    assert notes == []
    assert [[run.seed for run in unit] for unit in plan_units(new, "off")[0]] == [[0], [1]]


def test_a_note_says_once_why_seeds_of_an_algo_run_one_process_each(tmp_path: Path) -> None:
    cmlo = Variant("cmlo", "cmlo")
    runs = [GridRun(ENV, cmlo, s, spec(tmp_path, s), "new") for s in (0, 1)]
    units, notes = plan_units(runs, "auto")
    assert [[run.seed for run in unit] for unit in units] == [[0], [1]]
    assert len(notes) == 1 and notes[0].startswith("cmlo on InvertedPendulum-v4: one process")
    assert plan_units(runs[:1], "auto")[1] == []  # one seed: nothing to say


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_variant_label_names_the_value_it_runs_with(name: str) -> None:
    expected = {
        # the USB-PO paper's question 4 and Fig. 1, and the limit-update comparison
        "phase2-lr": {"usbpo-lr1e-5": "1e-5", "usbpo-lr1e-4": "1e-4", "usbpo-lr1e-3": "1e-3"},
        "cmlo-threshold": {"cmlo-alpha1": "1", "cmlo-alpha3": "3", "cmlo-alpha5": "5"},
        "limit-update": {"mbpo-lr3e-4": "3e-4", "mbpo-lr1e-4": "1e-4"},
        "phase2-terms": {"phase2-shift": "shift", "phase2-bias": "bias", "phase2-both": "both"},
    }[name]
    for variant in STUDIES[name].variants:
        values = [pair.split("=", 1)[1] for pair in variant.overrides]
        assert values == ([expected[variant.label]] if variant.label in expected else [])
    assert {v.label for v in STUDIES[name].variants} >= set(expected)


def manifest() -> dict:
    return grid_manifest("compare", [ENV], [Variant("sac", "sac")], 1, 300, preset="tiny")


def test_a_new_grid_starts_in_an_empty_folder_and_notes_another_version(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    out.mkdir()  # made by the user beforehand, empty
    assert record_grid(out, manifest()) is None
    assert json.loads((out / "grid.json").read_text())["kind"] == "compare"
    assert record_grid(out, manifest()) is None  # the same usbpo: nothing to say
    older = {**manifest(), "usbpo_version": "0.0.1"}
    (out / "grid.json").write_text(json.dumps(older))
    note = record_grid(out, manifest())
    assert note is not None and "started with usbpo 0.0.1" in note


def test_an_empty_grid_or_one_under_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="the grid is empty"):
        build_grid([], [Variant("sac", "sac")], 1, 300, tmp_path / "g", preset="tiny")
    with pytest.raises(UsageError, match="the grid is empty"):
        build_grid([ENV], [], 1, 300, tmp_path / "g", preset="tiny")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        build_grid([ENV], [Variant("sac", "sac")], 1, 300, tmp_path / "file" / "g", preset="tiny")


def test_a_grid_inside_a_run_in_its_first_epoch_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"  # config.json and a first checkpoint, no progress row yet
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="lies inside the run folder"):
        check_grid_folder(run / "grid", manifest(), set())
    lone = tmp_path / "csv-only"  # a progress.csv with no config.json is nobody's run
    lone.mkdir()
    (lone / "progress.csv").write_text(HEADER)
    check_grid_folder(lone / "grid", manifest(), set())
