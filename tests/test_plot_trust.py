"""Figures are exactly what they say they are (issue 12, items 3 and 10).

Each figure draws only runs of one grid that has what it needs (columns, algos, study), and
otherwise refuses in one line with exit 2, touching nothing; with several grids it draws the
most recent that qualifies and says which. The figures are read back from the matplotlib
objects: panels, lines per panel, legends, delta on its own axis, the exploration span, error
bars over seeds, and the lines `--reference` prints. Runs are hand-made folders (config.json +
progress.csv), except one test that runs the user's own three commands.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import PIL.Image
import pytest
from cli_helpers import snapshot, usbpo, usbpo_inproc
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from usbpo_cli.errors import UsageError
from usbpo_cli.experiments import aggregate, plots
from usbpo_cli.runs.csvlog import PROGRESS_COLUMNS

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
STEPS = (1000, 2000, 3000, 4000)
MODEL_FREE = ("sac", "td3", "ppo")


def write_grid(
    grid: Path,
    variants: tuple[tuple[str, str], ...],
    envs: tuple[str, ...] = ("Hopper-v4",),
    seeds: int = 3,
    steps: tuple[int, ...] = STEPS,
    initial_steps: int | None = 1000,
    manifest: dict | None = None,
    same_returns: bool = False,
    timing: bool = True,
) -> Path:
    """`grid/<env>/<label>/seed<k>` runs of (label, algo) variants, as `compare`/`ablate` lay
    them out. Returns rise with the variant's rank (all equal with `same_returns`); model-based
    algos log shift and bias (before and after phase 2) and a delta about 100x smaller; wall
    times grow with the seed, so error bars over seeds are not zero."""
    for env in envs:
        for rank, (label, algo) in enumerate(variants):
            for seed in range(seeds):
                folder = grid / env / label / f"seed{seed}"
                folder.mkdir(parents=True)
                config: dict = {"algo": algo, "env_id": env, "seed": seed, "steps": steps[-1]}
                if initial_steps is not None:
                    config["config"] = {"initial_steps": initial_steps}
                (folder / "config.json").write_text(json.dumps(config))
                rows = []
                for i, step in enumerate(steps, start=1):
                    row: dict = dict.fromkeys(PROGRESS_COLUMNS)
                    factor = 1 if same_returns else 1 + rank
                    row.update(env_step=step, epoch=i, eval_return_mean=10.0 * i * factor + seed)
                    if timing:
                        row.update(t_env=0.5, t_policy=3.0 + 0.5 * seed, t_eval=0.2)
                    if algo not in MODEL_FREE:
                        row.update(
                            model_shift=1.0 / i,
                            model_bias=0.5 / i,
                            model_shift_before=1.5 / i,
                            model_bias_before=0.8 / i,
                            delta=0.01 / i + 0.001 * seed if i > 1 else None,
                        )
                        if timing:
                            row.update(t_model_phase1=2.0, t_rollout=0.3)
                            if algo == "usbpo":
                                row.update(t_model_phase2=1.0 + 0.1 * seed)
                    rows.append(row)
                pd.DataFrame(rows, columns=PROGRESS_COLUMNS).to_csv(
                    folder / "progress.csv", index=False
                )
    if manifest is not None:
        (grid / "grid.json").write_text(json.dumps(manifest))
    return grid


def age(folder: Path, seconds_ago: float) -> None:
    """Make every progress.csv under `folder` look last written `seconds_ago`."""
    when = os.path.getmtime(folder) - seconds_ago
    for path in folder.rglob("progress.csv"):
        os.utime(path, (when, when))


def lines_of(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def visible_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def legend_texts(fig: Figure) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


COMPARE = (("usbpo", "usbpo"), ("mbpo", "mbpo"), ("cmlo", "cmlo"))
LR_STUDY = plots.STUDY_VARIANTS["phase2-lr"]
CMLO_STUDY = plots.STUDY_VARIANTS["cmlo-threshold"]


# ----------------------------------------------------------------------------- declarations


def test_study_labels_are_the_ablate_labels() -> None:
    """plots keeps a torch-free copy of the studies' (label, algo) pairs: it must match."""
    from usbpo_cli.experiments.grids import STUDIES

    for study, variants in plots.STUDY_VARIANTS.items():
        assert STUDIES[study].figure == study
        assert tuple((v.label, v.algo) for v in STUDIES[study].variants) == variants
    assert set(plots.NEEDS) == set(plots.FIGURES)
    for name, needs in plots.NEEDS.items():
        assert set(needs.columns) <= set(PROGRESS_COLUMNS), name


def test_functions_return_figures_and_files(tmp_path: Path) -> None:
    runs = aggregate.load_runs(write_grid(tmp_path / "g", COMPARE))
    assert isinstance(plots.make_figure("learning-curves", runs), Figure)
    out = plots.plot_figure("compute-cost", runs, tmp_path / "c.svg")
    assert out.read_text().startswith("<?xml")


# ----------------------------------------------------------------------------- item 3: refusals

REFUSALS = [
    # (figure, what is on disk, needles in the one line)
    ("cmlo-threshold", "train+compare", ("cmlo-threshold study", "cmlo-alpha1", "runs/compare")),
    ("phase2-lr", "train+compare", ("phase2-lr study", "usbpo-lr1e-5", "runs/train")),
    ("phase2-terms", "compare-manifest", ("phase2-terms study", "it is a compare grid")),
    ("cmlo-threshold", "lr-manifest", ("of study phase2-lr",)),
    ("delta-magnitude", "sac", ("needs column(s) delta, model_shift, model_bias", "labels sac")),
    ("compute-cost", "no-timing", ("needs the timing columns",)),
]


def lay_out(tmp: Path, what: str) -> None:
    runs = tmp / "runs"
    if what == "train+compare":
        write_grid(runs / "train", (("usbpo", "usbpo"),), seeds=1)
        write_grid(runs / "compare", COMPARE, seeds=1)
    elif what == "compare-manifest":
        manifest = {"kind": "compare", "envs": ["Hopper-v4"], "algos": ["mbpo", "usbpo"]}
        write_grid(runs / "g", (("mbpo", "mbpo"), ("usbpo", "usbpo")), manifest=manifest)
    elif what == "lr-manifest":
        manifest = {"kind": "ablate", "study": "phase2-lr", "variants": []}
        # labels that look like the cmlo study, but the manifest says what the grid is
        write_grid(runs / "g", CMLO_STUDY, manifest=manifest)
    elif what == "sac":
        write_grid(runs / "g", (("sac", "sac"),))
    elif what == "no-timing":
        write_grid(runs / "g", (("sac", "sac"),), timing=False)


@pytest.mark.parametrize(("figure", "what", "needles"), REFUSALS)
def test_a_figure_without_its_runs_refuses_in_one_line(
    tmp_path: Path, figure: str, what: str, needles: tuple[str, ...]
) -> None:
    lay_out(tmp_path, what)
    before = snapshot(tmp_path)
    result = usbpo_inproc("plot", "--figure", figure, cwd=tmp_path)  # default --runs runs
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert snapshot(tmp_path) == before


def test_cmlo_threshold_never_draws_usbpo_under_a_cmlo_title(tmp_path: Path) -> None:
    runs = aggregate.load_runs(write_grid(tmp_path / "g", (("usbpo", "usbpo"),)))
    with pytest.raises(UsageError, match="figure cmlo-threshold needs the runs of the cmlo"):
        plots.make_figure("cmlo-threshold", runs)
    # a compare grid with a cmlo run at one alpha is no threshold study either
    compare = aggregate.load_runs(write_grid(tmp_path / "c", COMPARE))
    with pytest.raises(UsageError, match="labels usbpo, cmlo, mbpo"):
        plots.make_figure("cmlo-threshold", compare)


def test_cmlo_threshold_draws_the_alpha_variants(tmp_path: Path) -> None:
    study = write_grid(tmp_path / "runs" / "ablate" / "cmlo-threshold", CMLO_STUDY)
    chosen = plots.select_runs("cmlo-threshold", tmp_path / "runs")
    assert chosen.grid.folder == study
    # one grid qualifies: named, with nothing about others
    assert chosen.notes == [
        f"plot: cmlo-threshold from {study} (9 runs, labels cmlo-alpha1, cmlo-alpha3, cmlo-alpha5)"
    ]
    fig = plots.make_figure("cmlo-threshold", chosen.runs)
    (ax,) = visible_axes(fig)
    assert ax.get_title() == "Hopper-v4: CMLO threshold"
    assert lines_of(ax) == [f"cmlo-alpha{a} (n=3 seeds)" for a in (1, 3, 5)]


def test_phase2_lr_reads_only_the_study_grid(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    study = write_grid(root / "ablate" / "phase2-lr", LR_STUDY)
    write_grid(study, (("usbpo", "usbpo"),), seeds=1)  # a stray run inside the study folder
    write_grid(root / "train", (("usbpo", "usbpo"),), seeds=1)  # unrelated, and newer
    age(study, 3600)
    chosen = plots.select_runs("phase2-lr", root)
    assert chosen.grid.folder == study
    assert chosen.notes[0].startswith(f"plot: phase2-lr from {study} (9 runs")
    assert any(
        "left out label(s) usbpo: not variants of the phase2-lr study" in n for n in chosen.notes
    )
    assert sorted(pd.unique(chosen.runs["label"])) == sorted(label for label, _ in LR_STUDY)
    fig = plots.make_figure("phase2-lr", chosen.runs)
    (ax,) = visible_axes(fig)
    assert lines_of(ax) == [f"usbpo-lr{lr} (n=3 seeds)" for lr in ("1e-3", "1e-4", "1e-5")]
    # the train grid alone is no study: refused, naming it
    with pytest.raises(UsageError, match=r"phase2-lr study.*train does not \(.*labels usbpo"):
        plots.select_runs("phase2-lr", root / "train")


def test_a_manifest_says_which_study_a_grid_is(tmp_path: Path) -> None:
    manifest = {
        "kind": "ablate",
        "study": "phase2-lr",
        "variants": [{"label": label, "algo": algo} for label, algo in LR_STUDY[:2]],
    }
    grid = write_grid(tmp_path / "my-lr-grid", LR_STUDY, manifest=manifest)
    chosen = plots.select_runs("phase2-lr", grid)
    assert sorted(pd.unique(chosen.runs["label"])) == ["usbpo-lr1e-4", "usbpo-lr1e-5"]
    assert chosen.grid.manifest["study"] == "phase2-lr"


def test_the_most_recent_grid_that_qualifies_is_drawn_and_named(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    train = write_grid(root / "train", (("usbpo", "usbpo"),), seeds=1)
    compare = write_grid(root / "compare", COMPARE, seeds=1)
    write_grid(root / "sac-only", (("sac", "sac"),), seeds=1)  # no delta: never a candidate
    age(train, 600)
    chosen = plots.select_runs("delta-magnitude", root)
    assert chosen.grid.folder == compare
    assert chosen.default_out_folder == compare
    first = chosen.notes[0]
    assert f"from {compare}" in first and f"also {train}" in first and "sac-only" not in first
    assert "--runs" in first
    assert set(chosen.runs["label"]) == {"usbpo"}  # usbpo preferred over mbpo
    age(compare, 1200)
    assert plots.select_runs("delta-magnitude", root).grid.folder == train


def test_plot_cli_says_which_grid_and_writes_there(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    train = write_grid(runs / "train", (("usbpo", "usbpo"),), seeds=1)
    write_grid(runs / "compare", COMPARE, seeds=1)
    age(train, 600)
    before = snapshot(tmp_path)
    result = usbpo_inproc("plot", "--figure", "delta-magnitude", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "two runs claim" not in result.stderr
    assert "plot: delta-magnitude from runs/compare" in result.stderr
    assert "also runs/train" in result.stderr
    assert "figure: runs/compare/delta-magnitude.png" in result.stdout
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != "runs/compare/delta-magnitude.png"} == before


def test_an_unreadable_grid_does_not_block_another(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_grid(root / "compare", COMPARE, seeds=1)
    broken = root / "train" / "Hopper-v4" / "usbpo" / "seed0"
    broken.mkdir(parents=True)
    (broken / "progress.csv").write_text("env_step,eval_return_mean\n")  # still starting
    chosen = plots.select_runs("learning-curves", root)
    assert chosen.grid.folder == root / "compare"
    assert any(
        "skipped unreadable grid" in note and "no evaluation rows" in note for note in chosen.notes
    )
    with pytest.raises(UsageError, match="no evaluation rows"):
        plots.select_runs("learning-curves", root / "train")


# ----------------------------------------------------------------------------- item 10: content


def test_delta_has_its_own_axis_and_says_algo_seeds_and_phase(tmp_path: Path) -> None:
    runs = aggregate.load_runs(
        write_grid(tmp_path / "g", COMPARE, envs=("Hopper-v4", "Walker2d-v4"))
    )
    fig = plots.make_figure("delta-magnitude", runs)
    axes = visible_axes(fig)
    assert len(axes) == 4  # per env: shift and bias, then delta
    delta_axes = [ax for ax in axes if "delta" in lines_of(ax)]
    model_axes = [ax for ax in axes if ax not in delta_axes]
    assert len(delta_axes) == 2 and len(model_axes) == 2
    for ax in delta_axes:
        assert lines_of(ax) == ["delta"]  # alone: nothing 100x larger on its axis
        assert ax.get_ylabel() == "delta (W2 estimate)"
        assert ax.get_title() == "delta (model after phase 2)"
        assert max(abs(v) for v in ax.get_ylim()) < 0.1
    for ax, env in zip(model_axes, ("Hopper-v4", "Walker2d-v4")):
        assert ax.get_title() == f"{env}: usbpo, n=3 seeds"
        assert lines_of(ax) == [
            "model shift, after phase 2",
            "model shift, before phase 2",
            "model bias, after phase 2",
            "model bias, before phase 2",
        ]
        styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
        assert styles["model shift, before phase 2"] == "--"
        assert styles["model shift, after phase 2"] == "-"
    assert "mean ± std over seeds" in fig.get_suptitle()
    assert "before" in fig.get_suptitle()


def test_delta_of_a_run_without_phase2_names_its_algo(tmp_path: Path) -> None:
    runs = aggregate.load_runs(write_grid(tmp_path / "g", (("mbpo-lr1e-4", "mbpo"),), seeds=1))
    fig = plots.make_figure("delta-magnitude", runs)
    left, right = visible_axes(fig)
    assert left.get_title() == "Hopper-v4: mbpo-lr1e-4 (mbpo), n=1 seed"
    assert lines_of(left) == ["model shift", "model bias"]
    assert right.get_title() == "delta"
    assert "phase 2" not in fig.get_suptitle()


def bars_by_label(ax) -> dict[str, object]:
    return {c.get_label(): c for c in ax.containers if hasattr(c, "patches")}


def test_compute_cost_shows_phases_that_cost_and_error_bars(tmp_path: Path) -> None:
    sac = aggregate.load_runs(write_grid(tmp_path / "sac", (("sac", "sac"),)))
    (ax,) = visible_axes(plots.make_figure("compute-cost", sac))
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["env steps", "policy updates", "evaluation", "total"]  # no model phases
    mixed = aggregate.load_runs(
        write_grid(tmp_path / "mixed", (("usbpo", "usbpo"), ("sac", "sac")))
    )
    fig = plots.make_figure("compute-cost", mixed)
    (ax,) = visible_axes(fig)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [
        "env steps",
        "model phase 1",
        "model phase 2",
        "rollouts",
        "policy updates",
        "evaluation",
        "total",
    ]
    bars = bars_by_label(ax)
    assert set(bars) == {"usbpo (n=3 seeds)", "sac (n=3 seeds)"}
    assert len(bars["usbpo (n=3 seeds)"].patches) == 7
    assert len(bars["sac (n=3 seeds)"].patches) == 4  # no bars for phases SAC skips
    errorbar = bars["usbpo (n=3 seeds)"].errorbar
    assert errorbar is not None
    (segments,) = errorbar.lines[2]
    heights = [abs(seg[1][1] - seg[0][1]) for seg in segments.get_segments()]
    # policy: 3.0 + 0.5 * seed per 1000-step row: std over seeds 0.5 s/1000 steps, bar ± 1 std
    assert heights[4] == pytest.approx(2 * 0.5)
    assert fig.legends[0].get_title().get_text() == (
        "bars: mean over seeds; error bars: ± 1 std over seeds"
    )


def test_learning_curves_shade_exploration_keep_twins_visible_and_state_seeds(
    tmp_path: Path,
) -> None:
    grid = write_grid(
        tmp_path / "g",
        (("usbpo", "usbpo"), ("mbpo", "mbpo")),
        steps=tuple(range(500, 8001, 500)),
        initial_steps=2500,
        same_returns=True,  # USB-PO and MBPO identical, as before the first phase 2
    )
    fig = plots.make_figure("learning-curves", aggregate.load_runs(grid))
    (ax,) = visible_axes(fig)
    spans = [p for p in ax.patches if p.get_label().startswith("random exploration")]
    assert len(spans) == 1
    assert spans[0].get_label() == "random exploration (first 2.5k steps)"
    assert spans[0].get_x() == 0.0 and spans[0].get_width() == pytest.approx(2500.0)
    lines = {line.get_label(): line for line in ax.get_lines()}
    usbpo, mbpo = lines["usbpo (n=3 seeds)"], lines["mbpo (n=3 seeds)"]
    assert list(usbpo.get_ydata()) == list(mbpo.get_ydata())  # the twins coincide...
    assert usbpo.get_marker() != mbpo.get_marker()  # ...and both stay visible
    assert usbpo.get_markevery() != mbpo.get_markevery()
    assert usbpo.get_linestyle() != mbpo.get_linestyle()
    assert usbpo.get_linewidth() > mbpo.get_linewidth()  # drawn first, shows around the twin
    assert usbpo.get_markersize() > mbpo.get_markersize()  # each marker inside the one before
    assert [t.get_text() for t in ax.texts] == ["identical curves: mbpo = usbpo"]
    assert fig.legends[0].get_title().get_text() == plots.BAND_NOTE
    assert "mean over seeds" in plots.BAND_NOTE and "± 1 std over seeds" in plots.BAND_NOTE
    assert "random exploration (first 2.5k steps)" in legend_texts(fig)


def test_learning_curves_with_one_seed_say_there_is_no_band(tmp_path: Path) -> None:
    runs = aggregate.load_runs(write_grid(tmp_path / "g", (("sac", "sac"),), seeds=1))
    (ax,) = visible_axes(plots.make_figure("learning-curves", runs))
    assert lines_of(ax) == ["sac (n=1 seed, no band)"]


def test_exploration_differs_by_label_one_span_each(tmp_path: Path) -> None:
    write_grid(tmp_path / "g", (("usbpo", "usbpo"),), initial_steps=2000)
    write_grid(tmp_path / "g", (("sac", "sac"),), initial_steps=1000)
    (ax,) = visible_axes(plots.make_figure("learning-curves", aggregate.load_runs(tmp_path / "g")))
    labels = sorted(p.get_label() for p in ax.patches if p.get_label().startswith("random"))
    assert labels == [
        "random exploration (sac: first 1k steps)",
        "random exploration (usbpo: first 2k steps)",
    ]


# ----------------------------------------------------------------------------- --reference


def test_reference_overlays_inverted_pendulum_and_says_so(tmp_path: Path) -> None:
    assert (REFERENCE / "tianshou").is_dir(), "shared/reference belongs beside the checkout"
    grid = write_grid(
        tmp_path / "g",
        (("sac", "sac"), ("td3", "td3")),
        envs=("InvertedPendulum-v4",),
        steps=(5000, 20000, 40000, 80000),
    )
    said: list[str] = []
    fig = plots.make_figure(
        "learning-curves", aggregate.load_runs(grid), reference_dir=REFERENCE, report=said.append
    )
    (ax,) = visible_axes(fig)
    for algo in ("SAC", "TD3", "PPO"):
        assert f"{algo} (tianshou, published)" in lines_of(ax)
    assert len(said) == 3 and all(
        line.startswith("reference: InvertedPendulum-v4") for line in said
    )
    sac = next(line for line in said if "SAC" in line)
    assert "InvertedPendulum-v2_sac.csv" in sac and "gym v2" in sac and "10 seeds" in sac
    published = next(
        line for line in ax.get_lines() if line.get_label() == "SAC (tianshou, published)"
    )
    assert max(published.get_xdata()) <= 80000  # cut at our last step


def test_reference_on_hopper_names_each_source(tmp_path: Path) -> None:
    grid = write_grid(tmp_path / "g", (("mbpo", "mbpo"),), steps=(5000, 10000, 20000))
    said: list[str] = []
    fig = plots.make_figure(
        "learning-curves", aggregate.load_runs(grid), reference_dir=REFERENCE, report=said.append
    )
    drawn = [label for label in lines_of(visible_axes(fig)[0]) if "published" in label]
    assert drawn == [
        "MBPO (erl_lib, published)",
        "SAC (erl_lib, published)",
        "MACURA (erl_lib, published)",
        "SAC (tianshou, published)",
        "TD3 (tianshou, published)",
    ]
    assert len(said) == 6  # five overlays, and PPO (first point after 20k steps) not drawn
    mbpo = next(line for line in said if "erl_lib/mbpo/Hopper.csv" in line)
    assert "published mean curve" in mbpo  # its "seeds" are a band, not independent runs
    assert "mean of 8 seeds" in next(line for line in said if "erl_lib/sac" in line)


def test_reference_that_matches_nothing_says_so(tmp_path: Path) -> None:
    grid = write_grid(tmp_path / "g", (("sac", "sac"),), envs=("Pendulum-v1",))
    said: list[str] = []
    fig = plots.make_figure(
        "learning-curves", aggregate.load_runs(grid), reference_dir=REFERENCE, report=said.append
    )
    assert said == [
        f"reference: nothing in {REFERENCE} matches Pendulum-v1 (looked for "
        "erl_lib/{mbpo,sac,macura}/Pendulum.csv, tianshou/Pendulum-v*_{sac,td3,ppo}.csv, "
        "alm/gym_pendulum.csv)"
    ]
    assert not any("published" in label for label in lines_of(visible_axes(fig)[0]))


def test_reference_cli_prints_one_line_per_overlay(tmp_path: Path) -> None:
    write_grid(
        tmp_path / "g", (("sac", "sac"),), envs=("InvertedPendulum-v4",), steps=(5000, 20000)
    )
    result = usbpo_inproc(
        "plot",
        "--figure",
        "learning-curves",
        "--runs",
        "g",
        "--reference",
        str(REFERENCE),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("reference:")]
    assert len(said) == 3, result.stderr  # SAC and TD3 drawn, PPO has one point by 20k steps
    assert sum("overlaid" in line for line in said) == 2
    assert any("PPO" in line and "not drawn" in line for line in said)
    assert (tmp_path / "g" / "learning-curves.png").is_file()


# ----------------------------------------------------------------------------- the user's sequence


def test_the_users_three_commands_as_typed(tmp_path: Path) -> None:
    """`usbpo train --env Hopper-v4`, `usbpo compare --algos usbpo,mbpo,cmlo`, `usbpo plot
    --figure delta-magnitude`, defaults everywhere but the run length."""
    cut = ["--preset", "tiny", "--steps", "200"]
    train = usbpo("train", "--env", "Hopper-v4", *cut, "--quiet", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-2000:]
    compare = usbpo("compare", "--algos", "usbpo,mbpo,cmlo", *cut, "--seeds", "1", cwd=tmp_path)
    assert compare.returncode == 0, compare.stderr[-2000:]
    runs = snapshot(tmp_path / "runs")
    result = usbpo("plot", "--figure", "delta-magnitude", cwd=tmp_path)
    assert "two runs claim" not in result.stderr
    if result.returncode == 0:
        figure = tmp_path / "runs" / "compare" / "delta-magnitude.png"
        assert f"figure: {figure.relative_to(tmp_path)}" in result.stdout
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "plot: delta-magnitude from runs/compare" in result.stderr  # says which
        assert "also runs/train" in result.stderr  # and what else there was
    else:
        assert result.returncode == 2, result.stderr
        assert "runs/compare" in result.stderr and "runs/train" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert snapshot(tmp_path / "runs") == runs


# ----------------------------------------------------------------------------- unfinished grids


def stop_early(run: Path, rows: int) -> None:
    """Keep the first `rows` evaluations of a run: a grid stopped part-way through it."""
    progress = pd.read_csv(run / "progress.csv")
    progress.head(rows).to_csv(run / "progress.csv", index=False)


def set_progress(folder: Path, pattern: str, values: dict) -> None:
    """Set columns of each progress.csv under `folder` that `pattern` matches: each value is a
    constant or a function of the frame."""
    for path in folder.rglob(pattern):
        progress = pd.read_csv(path)
        for column, value in values.items():
            progress[column] = value(progress) if callable(value) else value
        progress.to_csv(path, index=False)


def test_a_mean_over_seeds_ends_where_the_shortest_seed_ends(tmp_path: Path) -> None:
    """mbpo (rank 1) returns 20 i + seed at step 1000 i; seed 2 stopped after 2 evaluations.
    Mean at 1k and 2k: 21 and 41, std 1; past 2k the 'mean' would be that of seeds 0-1 only
    (60.5, 80.5) under a legend saying n=3, so the curve must end at 2k."""
    grid = write_grid(tmp_path / "g", COMPARE)
    stop_early(grid / "Hopper-v4" / "mbpo" / "seed2", 2)
    notes: list[str] = []
    fig = plots.make_figure("learning-curves", aggregate.load_runs(grid), report=notes.append)
    (ax,) = visible_axes(fig)
    lines = {line.get_label(): line for line in ax.get_lines()}
    mbpo = lines["mbpo (n=3 seeds)"]
    assert list(mbpo.get_xdata()) == [1000, 2000]
    assert list(mbpo.get_ydata()) == pytest.approx([21.0, 41.0])
    assert list(lines["usbpo (n=3 seeds)"].get_xdata()) == [1000, 2000, 3000, 4000]  # untouched
    assert (
        "plot: Hopper-v4 mbpo: mean drawn to 2k env steps, the steps all 3 seeds have "
        "(seeds reach 0: 4k, 1: 4k, 2: 2k)" in notes
    )


def test_delta_mean_ends_where_the_shortest_seed_ends(tmp_path: Path) -> None:
    """delta = 0.01 / i + 0.001 seed from the second evaluation on; with usbpo seed 1 stopped
    after 2 evaluations, the steps all seeds have are 2k only: mean 0.005 + 0.001 = 0.006."""
    grid = write_grid(tmp_path / "g", (("usbpo", "usbpo"),))
    stop_early(grid / "Hopper-v4" / "usbpo" / "seed1", 2)
    notes: list[str] = []
    fig = plots.make_figure("delta-magnitude", aggregate.load_runs(grid), report=notes.append)
    (delta,) = [line for ax in fig.axes for line in ax.get_lines() if line.get_label() == "delta"]
    assert list(delta.get_xdata()) == [2000]
    assert list(delta.get_ydata()) == pytest.approx([0.006])
    assert any(note.startswith("plot: Hopper-v4 usbpo delta: mean drawn to 2k") for note in notes)


def test_a_figure_of_unfinished_runs_says_so_on_the_figure(tmp_path: Path) -> None:
    """config.json says --steps 4000; mbpo seed 2 reached 2000, sac seed 0 3000: each figure
    names them above everything, and the console line says the same."""
    grid = write_grid(tmp_path / "g", (*COMPARE, ("sac", "sac")))
    stop_early(grid / "Hopper-v4" / "mbpo" / "seed2", 2)
    stop_early(grid / "Hopper-v4" / "sac" / "seed0", 3)
    runs = aggregate.load_runs(grid)
    expected = (
        "unfinished: 2 of 12 runs (mbpo seed 2 at 2k of 4k, sac seed 0 at 3k of 4k env steps)"
    )
    for figure in ("learning-curves", "compute-cost"):
        notes: list[str] = []
        fig = plots.make_figure(figure, runs, report=notes.append)
        assert f"plot: {expected}" in notes
        assert fig.get_suptitle().replace("\n", " ") == expected
    fig = plots.make_figure("delta-magnitude", runs)  # usbpo only: all finished
    assert "unfinished" not in fig.get_suptitle()
    result = usbpo_inproc("plot", "--figure", "learning-curves", "--runs", "g", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"plot: {expected}" in result.stderr


def test_finished_runs_carry_no_unfinished_mark(tmp_path: Path) -> None:
    """The same grid run to its --steps: no mark, no line; a run whose config.json names no
    --steps is not called unfinished (unknown is not short)."""
    grid = write_grid(tmp_path / "g", COMPARE)
    notes: list[str] = []
    fig = plots.make_figure("learning-curves", aggregate.load_runs(grid), report=notes.append)
    assert fig.get_suptitle() == ""
    assert not [note for note in notes if "unfinished" in note]
    other = write_grid(tmp_path / "h", (("sac", "sac"),), seeds=1)
    run = other / "Hopper-v4" / "sac" / "seed0"
    (run / "config.json").write_text(json.dumps({"algo": "sac", "env_id": "Hopper-v4"}))
    stop_early(run, 2)
    assert plots.unfinished_note(plots.with_run_info(aggregate.load_runs(other))) is None


# ----------------------------------------------------------------------------- what is drawn

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_style() -> dict[str, float]:
    """The figure style README's "What the figures state" promises, read from its text."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    patterns = {
        "width": r"each panel ([\d.]+) in wide",
        "height": r"and ([\d.]+) in high",
        "columns": r"at most (\d+) panels a row",
        "title": r"titles ([\d.]+) pt",
        "label": r"axis labels and the note above the panels ([\d.]+) pt",
        "tick": r"tick labels and legends ([\d.]+) pt",
        "line": r"plain lines ([\d.]+) pt",
        "dpi": r"PNG at (\d+) dpi",
    }
    found = {key: re.search(pattern, text) for key, pattern in patterns.items()}
    assert all(found.values()), {key: bool(match) for key, match in found.items()}
    return {key: float(match[1]) for key, match in found.items()}


def note_above(fig: Figure):
    """The text object of the note above the panels (the figure's suptitle)."""
    (note,) = [text for text in fig.texts if text.get_text() == fig.get_suptitle()]
    return note


def test_figures_are_sized_and_styled_as_the_readme_says(tmp_path: Path) -> None:
    """Four envs: a row of three panels and a row of one (two hidden), each panel one column of
    a two-column paper; fonts, spines, grid, line width and resolution as README states."""
    style = readme_style()
    envs = ("Hopper-v4", "Walker2d-v4", "HalfCheetah-v4", "Ant-v4")
    runs = aggregate.load_runs(write_grid(tmp_path / "g", COMPARE, envs=envs, seeds=2))
    fig = plots.make_figure("learning-curves", runs)
    columns = int(style["columns"])
    assert columns == 3
    assert tuple(fig.get_size_inches()) == pytest.approx(
        (columns * style["width"], 2 * style["height"])
    )
    assert len(fig.axes) == 6 and len(visible_axes(fig)) == 4
    for ax in visible_axes(fig):
        assert ax.title.get_fontsize() == style["title"]
        assert ax.xaxis.label.get_fontsize() == ax.yaxis.label.get_fontsize() == style["label"]
        ticks = [*ax.get_xticklabels(), *ax.get_yticklabels()]
        assert ticks and {tick.get_fontsize() for tick in ticks} == {style["tick"]}
        assert not ax.spines["top"].get_visible() and not ax.spines["right"].get_visible()
        assert all(line.get_visible() for line in ax.xaxis.get_gridlines())
    assert {text.get_fontsize() for text in fig.legends[0].get_texts()} == {style["tick"]}
    assert fig.legends[0].get_title().get_fontsize() == style["tick"]
    stop_early(tmp_path / "g" / "Ant-v4" / "usbpo" / "seed0", 2)
    unfinished = aggregate.load_runs(tmp_path / "g")
    for name in ("learning-curves", "delta-magnitude", "compute-cost"):
        fig = plots.make_figure(name, unfinished)
        note = note_above(fig)
        assert "unfinished" in note.get_text() and note.get_fontsize() == style["label"], name
    delta = plots.make_figure("delta-magnitude", runs[runs["env"] == "Hopper-v4"])
    note = note_above(delta)
    assert note.get_text().startswith("mean ± std") and note.get_fontsize() == style["label"]
    widths = {line.get_linewidth() for ax in delta.axes for line in ax.get_lines()}
    widths -= {0.5}  # the zero line under delta
    assert widths == {style["line"]}
    png = plots.plot_figure("learning-curves", runs, tmp_path / "f.png")
    with PIL.Image.open(png) as image:
        assert image.info["dpi"] == pytest.approx((style["dpi"], style["dpi"]), abs=0.01)
    pdf = plots.plot_figure("learning-curves", runs, tmp_path / "f.pdf").read_bytes()
    # TrueType outlines (matplotlib embeds them as a CIDFontType2), never Type 3 bitmaps
    assert b"/CIDFontType2" in pdf and b"/Type3" not in pdf


@pytest.mark.parametrize(
    ("steps", "text"),
    [(999, "999"), (1000, "1k"), (2500, "2.5k"), (999_000, "999k"), (1e6, "1M"), (1.5e6, "1.5M")],
)
def test_step_axes_read_in_thousands_and_millions(tmp_path: Path, steps: float, text: str) -> None:
    runs = aggregate.load_runs(write_grid(tmp_path / "g", COMPARE, seeds=1))
    for name in ("learning-curves", "delta-magnitude"):
        for ax in visible_axes(plots.make_figure(name, runs)):
            assert ax.xaxis.get_major_formatter()(steps, 0) == text


def band_at(ax, colour: object) -> dict[float, tuple[float, float]]:
    """x -> (low, high) of the filled band drawn in `colour`."""
    (band,) = [c for c in ax.collections if tuple(c.get_facecolor()[0][:3]) == colour[:3]]
    spans: dict[float, list[float]] = {}
    for x, y in band.get_paths()[0].vertices:
        spans.setdefault(round(float(x), 6), []).append(float(y))
    return {x: (min(ys), max(ys)) for x, ys in spans.items()}


def test_the_band_is_one_std_over_seeds_either_side_of_the_mean(tmp_path: Path) -> None:
    """mbpo (rank 1) returns 20 i + seed for seeds 0, 1, 2 at step 1000 i: mean 20 i + 1 and
    std (ddof 1) exactly 1, so its band runs from 20 i to 20 i + 2."""
    grid = write_grid(tmp_path / "g", COMPARE)
    (ax,) = visible_axes(plots.make_figure("learning-curves", aggregate.load_runs(grid)))
    (mbpo,) = [line for line in ax.get_lines() if line.get_label() == "mbpo (n=3 seeds)"]
    band = band_at(ax, matplotlib.colors.to_rgba(mbpo.get_color()))
    assert band == {
        float(step): pytest.approx((20.0 * i, 20.0 * i + 2)) for i, step in enumerate(STEPS, 1)
    }


def test_delta_rows_put_usbpo_first_and_carry_a_legend(tmp_path: Path) -> None:
    """Labels of usbpo runs in a row each: USB-PO's own label first, then natural order (not
    the alphabetical order in which the runs are grouped)."""
    variants = (("phase2-both", "usbpo"), ("usbpo-lr1e-5", "usbpo"), ("usbpo", "usbpo"))
    envs = ("Walker2d-v4", "Hopper-v4")
    runs = aggregate.load_runs(write_grid(tmp_path / "g", variants, envs=envs, seeds=1))
    fig = plots.make_figure("delta-magnitude", runs)
    titles = [ax.get_title() for ax in visible_axes(fig)[::2]]
    assert titles == [
        f"{env}: {who}, n=1 seed"
        for env in ("Hopper-v4", "Walker2d-v4")
        for who in ("usbpo", "usbpo-lr1e-5 (usbpo)", "phase2-both (usbpo)")
    ]
    assert set(legend_texts(fig)) >= {
        "model shift, after phase 2",
        "model shift, before phase 2",
        "model bias, after phase 2",
        "model bias, before phase 2",
        "delta",
    }


def test_delta_needs_all_three_columns_with_values(tmp_path: Path) -> None:
    """Shift and bias alone are not the figure: a run whose delta is still empty (one model
    training: delta starts at the second) or whose CSV has no delta column is refused."""
    early = aggregate.load_runs(write_grid(tmp_path / "g", (("usbpo", "usbpo"),), steps=(1000,)))
    assert early["model_shift"].notna().all() and early["delta"].isna().all()
    with pytest.raises(UsageError, match="needs column.*delta.*have none"):
        plots.make_figure("delta-magnitude", early)
    runs = aggregate.load_runs(write_grid(tmp_path / "h", (("usbpo", "usbpo"),)))
    with pytest.raises(plots.NotQualified):
        plots.qualifying_runs("delta-magnitude", runs.drop(columns=["delta"]))


def test_make_figure_reports_what_it_leaves_out(tmp_path: Path) -> None:
    """Each note of `qualifying_runs` reaches `report`, as does a --reference that a figure
    other than learning-curves cannot use."""
    runs = aggregate.load_runs(write_grid(tmp_path / "g", (*COMPARE, ("sac", "sac"))))
    said: list[str] = []
    plots.make_figure("delta-magnitude", runs, reference_dir=tmp_path, report=said.append)
    assert said == [
        "plot: left out label(s) sac: no values in delta, model_shift, model_bias",
        "plot: drawing the usbpo runs only; cmlo, mbpo also logged delta, model_shift, model_bias",
        "reference: figure delta-magnitude overlays no published curves (learning-curves does)",
    ]


def test_an_unknown_figure_is_refused_by_every_entry_point(tmp_path: Path) -> None:
    runs = aggregate.load_runs(write_grid(tmp_path / "g", COMPARE, seeds=1))
    for call in (
        lambda: plots.make_figure("fig9", runs),
        lambda: plots.select_runs("fig9", tmp_path),
        lambda: plots.plot_figure("fig9", runs, tmp_path / "f.png"),
    ):
        with pytest.raises(UsageError, match="unknown figure 'fig9' \\(choose: learning-curves"):
            call()
    assert not list(tmp_path.glob("*.png"))


def test_run_info_is_read_once(tmp_path: Path) -> None:
    """A frame that carries its runs' config.json info is drawn as it is: the info is not read
    again (a run moved or rewritten since does not change what was selected)."""
    grid = write_grid(tmp_path / "g", COMPARE, seeds=1)
    framed = plots.with_run_info(aggregate.load_runs(grid))
    assert plots.with_run_info(framed) is framed
    for config in grid.rglob("config.json"):
        config.unlink()
    assert set(plots.qualifying_runs("delta-magnitude", framed)[0]["algo"]) == {"usbpo"}


def test_unfinished_runs_of_several_envs_name_their_env(tmp_path: Path) -> None:
    grid = write_grid(tmp_path / "g", COMPARE, envs=("Hopper-v4", "Walker2d-v4"), seeds=1)
    stop_early(grid / "Walker2d-v4" / "mbpo" / "seed0", 3)
    assert plots.unfinished_note(aggregate.load_runs(grid)) == (
        "unfinished: 1 of 6 runs (Walker2d-v4 mbpo seed 0 at 3k of 4k env steps)"
    )


def test_a_run_folder_outside_the_seed_layout_is_a_grid_by_its_parent(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    assert plots.grid_folder(root / "a" / "b" / "my-run", root) == root / "a" / "b"
    assert plots.grid_folder(root / "g" / "Hopper-v4" / "usbpo" / "seed0", root) == root / "g"
    assert plots.grid_folder(root, root) == root


def test_compute_cost_shows_a_phase_above_a_tenth_of_a_percent(tmp_path: Path) -> None:
    """README: a phase is shown where some label spends over 0.1% of the panel's largest total
    in it. SAC's largest total here is 0.5 + 3.5 + 0.2 = 4.2 s per 1000 steps (mean over
    seeds); rollouts at 0.15% of it are a bar, at 0.05% they are not."""
    for share, shown in ((0.0015, True), (0.0005, False)):
        grid = write_grid(tmp_path / str(share), (("sac", "sac"),))
        set_progress(grid, "progress.csv", {"t_rollout": share * 4.2})
        (ax,) = visible_axes(plots.make_figure("compute-cost", aggregate.load_runs(grid)))
        ticks = [tick.get_text() for tick in ax.get_xticklabels()]
        assert ("rollouts" in ticks) is shown, (share, ticks)
    # beside a label that spends 100x longer, 0.15% of SAC's total is below the panel's floor
    write_grid(tmp_path / "0.0015", (("slow", "sac"),), seeds=1, timing=False)
    set_progress(tmp_path / "0.0015", "slow/*/progress.csv", {"t_policy": 420.0})
    runs = aggregate.load_runs(tmp_path / "0.0015")
    (ax,) = visible_axes(plots.make_figure("compute-cost", runs))
    assert "rollouts" not in [tick.get_text() for tick in ax.get_xticklabels()]


def test_compute_cost_of_no_measured_time_has_only_a_total(tmp_path: Path) -> None:
    """Timing columns of zeros: no phase cost anything, so no phase is a group."""
    grid = write_grid(tmp_path / "g", (("sac", "sac"),), seeds=1)
    timing = [c for c in PROGRESS_COLUMNS if c.startswith("t_")]
    set_progress(grid, "progress.csv", dict.fromkeys(timing, 0.0))
    (ax,) = visible_axes(plots.make_figure("compute-cost", aggregate.load_runs(grid)))
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["total"]


@pytest.mark.parametrize("seeds", [1, 2])
def test_error_bars_need_two_seeds(tmp_path: Path, seeds: int) -> None:
    runs = aggregate.load_runs(write_grid(tmp_path / "g", (("sac", "sac"),), seeds=seeds))
    (ax,) = visible_axes(plots.make_figure("compute-cost", runs))
    (bars,) = bars_by_label(ax).values()
    assert (bars.errorbar is not None) is (seeds == 2)


def test_a_single_evaluation_is_drawn(tmp_path: Path) -> None:
    """One seed, one evaluation (and, for delta, one value: the second of two rows)."""
    runs = aggregate.load_runs(
        write_grid(tmp_path / "g", (("usbpo", "usbpo"),), steps=(1000,), seeds=1)
    )
    (ax,) = visible_axes(plots.make_figure("learning-curves", runs, reference_dir=REFERENCE))
    (ours,) = [line for line in ax.lines if line.get_label() == "usbpo (n=1 seed, no band)"]
    assert list(ours.get_xdata()) == [1000] and list(ours.get_ydata()) == [10.0]
    two = aggregate.load_runs(
        write_grid(tmp_path / "h", (("usbpo", "usbpo"),), steps=(1000, 2000), seeds=1)
    )
    _, right = visible_axes(plots.make_figure("delta-magnitude", two))
    assert list(right.lines[0].get_ydata()) == pytest.approx([0.005])


def test_curves_half_a_point_apart_are_not_called_identical(tmp_path: Path) -> None:
    write_grid(tmp_path / "g", (("usbpo", "usbpo"),), seeds=1)
    write_grid(tmp_path / "g", (("mbpo", "mbpo"),), seeds=1)
    raised = {"eval_return_mean": lambda progress: progress["eval_return_mean"] + 0.5}
    set_progress(tmp_path / "g", "mbpo/*/progress.csv", raised)
    (ax,) = visible_axes(plots.make_figure("learning-curves", aggregate.load_runs(tmp_path / "g")))
    assert list(ax.texts) == []


def test_a_panel_mixing_truncated_and_full_observations_gets_the_full_alm_curve(
    tmp_path: Path,
) -> None:
    grid = write_grid(
        tmp_path / "g",
        (("alm", "alm"), ("sac", "sac")),
        envs=("Ant-v4",),
        steps=(5000, 10000, 15000),
        seeds=1,
    )
    config = grid / "Ant-v4" / "alm" / "seed0" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "truncate_obs": True}))
    said: list[str] = []
    plots.make_figure(
        "learning-curves", aggregate.load_runs(grid), reference_dir=REFERENCE, report=said.append
    )
    (alm,) = [line for line in said if "ALM" in line]
    assert "alm/gym_ant.csv" in alm
    (grid / "Ant-v4" / "sac" / "seed0" / "config.json").write_text(config.read_text())
    said.clear()
    plots.make_figure(
        "learning-curves", aggregate.load_runs(grid), reference_dir=REFERENCE, report=said.append
    )
    (alm,) = [line for line in said if "ALM" in line]
    assert "alm/gym_truncated_ant.csv" in alm


DESIGN = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"


def test_the_published_sac_asymptotes_are_designs_reference_numbers() -> None:
    """DESIGN.md, "Reference numbers": SAC at 1M steps (CleanRL). `--sac-asymptote published`
    draws those for the envs that have one; ENV=RETURN pairs are the user's own."""
    text = " ".join(DESIGN.read_text(encoding="utf-8").split())
    line = re.search(r"SAC at 1M steps \(public CleanRL benchmark\): ([^.]+)\.", text)
    assert line, "DESIGN.md's SAC reference line"
    design = {family: float(value) for family, value in re.findall(r"(\w+) ~(\d+)", line[1])}
    assert len(design) == 5
    assert plots.PUBLISHED_SAC == design
    assert plots.sac_asymptotes("published", ["Hopper-v4", "Pendulum-v1", "Humanoid-v5"]) == {
        "Hopper-v4": design["Hopper"],
        "Humanoid-v5": design["Humanoid"],
    }
    assert plots.sac_asymptotes("published", ["Pendulum-v1"]) is None
    assert plots.sac_asymptotes("Hopper-v4=3000, Ant-v4 = 4000", ["Hopper-v4"]) == {
        "Hopper-v4": 3000.0,
        "Ant-v4": 4000.0,
    }
    assert plots.sac_asymptotes("", ["Hopper-v4"]) is None
    with pytest.raises(UsageError, match="--sac-asymptote 'Hopper': expected ENV=RETURN"):
        plots.sac_asymptotes("Hopper", ["Hopper-v4"])


def test_declarations_cannot_be_changed_in_place() -> None:
    """What a figure needs is a declaration: a caller cannot weaken it for everyone after."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        plots.NEEDS["delta-magnitude"].any_column = True  # type: ignore[misc]


def test_alm_reference_is_the_truncated_file_for_truncated_runs() -> None:
    """ALM publishes Ant with full and with truncated observations (`--truncate-obs`)."""
    names = {
        truncated: [ref.path.name for ref in plots.reference_files(REFERENCE, "Ant-v4", cut)[0]]
        for truncated, cut in ((False, False), (True, True))
    }
    assert "gym_ant.csv" in names[False] and "gym_truncated_ant.csv" not in names[False]
    assert "gym_truncated_ant.csv" in names[True] and "gym_ant.csv" not in names[True]
    (alm,) = [r for r in plots.reference_files(REFERENCE, "Walker2d-v4")[0] if r.algo == "alm"]
    assert (alm.display, alm.source, alm.version) == ("ALM", "alm", "gym v2")


def test_a_run_without_a_readable_config_has_no_run_info(tmp_path: Path) -> None:
    """No config.json: algo is the label, exploration and --steps unknown, not truncated."""
    grid = write_grid(tmp_path / "g", (("my-sac", "sac"),), seeds=1)
    (grid / "Hopper-v4" / "my-sac" / "seed0" / "config.json").write_text("[1, 2]")
    info = plots.with_run_info(aggregate.load_runs(grid)).iloc[0]
    assert info["algo"] == "my-sac" and not info["truncate_obs"]
    assert pd.isna(info["initial_steps"]) and pd.isna(info["planned_steps"])


def test_a_manifest_is_looked_for_up_to_the_runs_folder_only(tmp_path: Path) -> None:
    """A grid.json several levels above a run (under --runs) makes that folder the grid; one
    above --runs does not."""
    root = tmp_path / "outer" / "runs"
    (tmp_path / "outer" / "grid.json").parent.mkdir(parents=True)
    (tmp_path / "outer" / "grid.json").write_text("{}")
    seed = root / "g" / "Hopper-v4" / "usbpo" / "seed0"
    assert plots.grid_folder(seed, root) == root / "g"
    (root / "mine").mkdir(parents=True)
    (root / "mine" / "grid.json").write_text("{}")
    assert plots.grid_folder(root / "mine" / "a" / "b" / "c" / "run", root) == root / "mine"


def test_manifest_labels_are_the_nonempty_strings_it_lists() -> None:
    manifest = {"variants": [{"label": ""}, {"label": 3}, {"label": "a"}, "b", {"algo": "x"}, ""]}
    assert plots.manifest_labels(manifest) == ["a", "b"]
    assert plots.manifest_labels({"algos": ["usbpo", "mbpo"]}) == ["usbpo", "mbpo"]
    assert plots.manifest_labels({}) == []


def test_one_seed_has_a_band_of_zero_width_and_every_point_marked(tmp_path: Path) -> None:
    """With one seed there is no spread: the band is the line itself (and the legend says no
    band). A curve of four evaluations marks all four."""
    runs = aggregate.load_runs(write_grid(tmp_path / "g", (("sac", "sac"),), seeds=1))
    (ax,) = visible_axes(plots.make_figure("learning-curves", runs))
    (line,) = ax.get_lines()
    band = band_at(ax, matplotlib.colors.to_rgba(line.get_color()))
    assert band == {float(s): (10.0 * i, 10.0 * i) for i, s in enumerate(STEPS, 1)}
    start, every = line.get_markevery()
    assert len(range(start, len(STEPS), every)) == len(STEPS)


def test_delta_panels_label_their_axes_and_draw_zero(tmp_path: Path) -> None:
    """The left axis is a W2 estimate; delta, which can be negative, is drawn against 0. Runs
    logged before the `_before` columns existed draw the after-phase-2 curves only."""
    runs = aggregate.load_runs(write_grid(tmp_path / "g", (("usbpo", "usbpo"),)))
    left, right = visible_axes(plots.make_figure("delta-magnitude", runs))
    assert left.get_ylabel() == "W2 estimate"
    assert [list(line.get_ydata()) for line in right.get_lines()][1:] == [[0.0, 0.0]]
    # a before value missing at one of the evaluations that have a delta still leaves the
    # dashed curves
    gaps = runs.copy()
    gaps.loc[gaps["epoch"] == 2, ["model_shift_before", "model_bias_before"]] = None
    left, _ = visible_axes(plots.make_figure("delta-magnitude", gaps))
    assert "model shift, before phase 2" in lines_of(left)
    old = runs.drop(columns=["model_shift_before", "model_bias_before"])
    left, _ = visible_axes(plots.make_figure("delta-magnitude", old))
    assert lines_of(left) == ["model shift, after phase 2", "model bias, after phase 2"]


def test_compute_cost_names_its_env_and_its_phase_names_do_not_collide(tmp_path: Path) -> None:
    """Seven groups in one column's width: the phase names under the bars must not overlap."""
    runs = aggregate.load_runs(write_grid(tmp_path / "g", (("usbpo", "usbpo"), ("sac", "sac"))))
    fig = plots.make_figure("compute-cost", runs)
    (ax,) = visible_axes(fig)
    assert ax.get_title() == "Hopper-v4"
    assert all(line.get_visible() for line in ax.yaxis.get_gridlines())
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    rectangles = [text_rectangle(tick, renderer) for tick in ax.get_xticklabels()]
    assert len(rectangles) == 7
    angle = ax.get_xticklabels()[0].get_rotation()
    for a, b in zip(rectangles, rectangles[1:]):
        assert not parallel_rectangles_overlap(a, b, angle), (a, b)
    # each slanted name ends at its group's tick, so it reads as that group's
    for x, rectangle in zip(ax.get_xticks(), rectangles):
        tick_x = ax.transData.transform((x, 0.0))[0]
        assert rectangle[:, 0].max() == pytest.approx(tick_x, abs=1.0)


def text_rectangle(text, renderer) -> np.ndarray:
    """The four corners (pixels) of a text's own rectangle, rotated as drawn: the window
    extent is the axis-aligned box around it, which overlaps its neighbour's when slanted."""
    box = text.get_window_extent(renderer)
    theta = np.deg2rad(text.get_rotation())
    c, s = np.cos(theta), np.sin(theta)
    assert abs(c * c - s * s) > 0.2, "the box's sides fix the rectangle below 40 degrees"
    width = (c * box.width - s * box.height) / (c * c - s * s)
    height = (c * box.height - s * box.width) / (c * c - s * s)
    corners = [(height * s, 0), (height * s + width * c, width * s)]
    corners += [(width * c, width * s + height * c), (0, height * c)]
    return np.array(corners) + [box.x0, box.y0]


def parallel_rectangles_overlap(a: np.ndarray, b: np.ndarray, angle: float) -> bool:
    """Rectangles of the same rotation overlap when their extents overlap both along the text
    and across it (separating axes)."""
    theta = np.deg2rad(angle)
    for axis in ((np.cos(theta), np.sin(theta)), (-np.sin(theta), np.cos(theta))):
        pa, pb = a @ axis, b @ axis
        if pa.max() <= pb.min() + 0.5 or pb.max() <= pa.min() + 0.5:
            return False
    return True


def test_a_sources_own_folder_is_a_reference_folder_too(tmp_path: Path) -> None:
    """`--reference ../shared/reference/erl_lib` reads erl_lib's curves, and only those."""
    found, _ = plots.reference_files(REFERENCE / "erl_lib", "Hopper-v4")
    assert [(ref.source, ref.algo) for ref in found] == [
        ("erl_lib", "mbpo"),
        ("erl_lib", "sac"),
        ("erl_lib", "macura"),
    ]
    found, _ = plots.reference_files(REFERENCE / "tianshou", "InvertedPendulum-v4")
    assert {ref.source for ref in found} == {"tianshou"} and len(found) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        found[0].path = tmp_path  # type: ignore[misc]


def test_a_published_curve_needs_two_points_within_the_run(tmp_path: Path) -> None:
    """A published curve at steps 0, 1000, 2000: a run to 1000 steps draws its first two
    points (a line); a run to 999 steps has one point there, and it is not drawn."""
    folder = tmp_path / "reference" / "erl_lib" / "sac"
    folder.mkdir(parents=True)
    rows = [f"{step},0,{step / 10},{seed}" for seed in (0, 1) for step in (0, 1000, 2000)]
    (folder / "Hopper.csv").write_text("step,time,reward,seed\n" + "\n".join(rows) + "\n")
    for last, drawn in ((1000, 2), (999, 0)):
        grid = write_grid(tmp_path / f"g{last}", (("sac", "sac"),), steps=(last,), seeds=1)
        said: list[str] = []
        fig = plots.make_figure(
            "learning-curves",
            aggregate.load_runs(grid),
            reference_dir=tmp_path / "reference",
            report=said.append,
        )
        (ax,) = visible_axes(fig)
        published = [line for line in ax.get_lines() if "published" in line.get_label()]
        assert [len(line.get_xdata()) for line in published] == ([drawn] if drawn else [])
        assert ("not drawn: 1 point(s)" in said[0]) is (drawn == 0), said


def legend_columns(fig: Figure) -> int:
    """Columns of the figure's legend, counted from where its entries are drawn."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    lefts = {round(text.get_window_extent(renderer).x0) for text in fig.legends[0].get_texts()}
    return len(lefts)


def test_the_legend_is_never_wider_than_the_panels(tmp_path: Path) -> None:
    """README: up to 2 columns under one panel, 4 under several, fewer where labels are long;
    the saved image stays the panels' width (a paper would otherwise shrink it, fonts and all)."""
    style = readme_style()
    five = (*COMPARE, ("sac", "sac"), ("td3", "td3"))
    grid = write_grid(tmp_path / "g", five, envs=("Hopper-v4", "Ant-v4"), initial_steps=None)
    runs = aggregate.load_runs(grid)
    one_panel = runs[runs["env"] == "Hopper-v4"]
    assert legend_columns(plots.make_figure("learning-curves", one_panel)) == 2
    assert legend_columns(plots.make_figure("learning-curves", runs)) == 4
    # five labels of one seed each: "lab0 (n=1 seed, no band)" is too long for two columns
    variants = tuple((f"lab{i}", "sac") for i in range(5))
    long = aggregate.load_runs(write_grid(tmp_path / "long", variants, seeds=1))
    for name in ("learning-curves", "compute-cost"):
        fig = plots.make_figure(name, long)
        renderer = fig.canvas.get_renderer()
        assert fig.legends[0].get_window_extent(renderer).width <= fig.bbox.width
        png = plots.plot_figure(name, long, tmp_path / f"{name}.png")
        with PIL.Image.open(png) as image:
            assert image.size[0] <= style["width"] * style["dpi"], name


@pytest.mark.parametrize(
    ("name", "has_step"), [("gym_ant.csv", True), ("gym_truncated_humanoid.csv", False)]
)
def test_alm_curves_are_the_mean_of_their_seed_columns(name: str, has_step: bool) -> None:
    """ALM's files: `Step` then one column per seed, or (truncated Humanoid) the seed columns
    alone, one row every 5k steps from 5k (reference README). Read here with the csv module."""
    with (REFERENCE / "alm" / name).open(newline="") as file:
        header, *body = [row for row in csv.reader(file) if row]
    seeds = header[1:] if has_step else header
    complete = [row for row in body if all(cell.strip() for cell in row)]
    steps = [float(row[0]) if has_step else 5000.0 * (k + 1) for k, row in enumerate(body)]
    step_of = {id(row): step for row, step in zip(body, steps)}
    expected = [
        (step_of[id(row)], sum(map(float, row[1:] if has_step else row)) / len(seeds))
        for row in complete
    ]
    curve, n_seeds = plots.load_reference(
        plots.ReferenceFile("alm", "ALM", "alm", "gym v2", REFERENCE / "alm" / name)
    )
    assert n_seeds == len(seeds) == 5
    assert list(zip(curve["step"], curve["reward"])) == pytest.approx(expected)


def test_a_wide_reference_row_that_a_seed_lacks_is_left_out(tmp_path: Path) -> None:
    """The mean at a step is over every seed: a row with a missing seed is not drawn."""
    path = tmp_path / "gym_ant.csv"
    path.write_text("Step,a,b\n5000,1,3\n10000,,5\n15000,4,6\n")
    curve, n_seeds = plots.load_reference(plots.ReferenceFile("alm", "ALM", "alm", "v2", path))
    assert n_seeds == 2
    assert list(zip(curve["step"], curve["reward"])) == [(5000.0, 2.0), (15000.0, 5.0)]


def test_one_unfinished_run_of_one(tmp_path: Path) -> None:
    grid = write_grid(tmp_path / "g", (("sac", "sac"),), seeds=1)
    stop_early(grid / "Hopper-v4" / "sac" / "seed0", 1)
    assert plots.unfinished_note(aggregate.load_runs(grid)) == (
        "unfinished: 1 of 1 run (sac seed 0 at 1k of 4k env steps)"
    )


def test_a_grid_is_as_recent_as_its_last_written_run(tmp_path: Path) -> None:
    """Grid a's runs wrote 2 h and 1 min ago, grid b's 1 h ago: a wrote last."""
    root = tmp_path / "runs"
    a = write_grid(root / "a", (("usbpo", "usbpo"),), seeds=2)
    b = write_grid(root / "b", (("usbpo", "usbpo"),), seeds=2)
    age(a, 7200)
    age(b, 3600)
    age(a / "Hopper-v4" / "usbpo" / "seed1", 60)
    assert plots.select_runs("delta-magnitude", root).grid.folder == a


def test_each_labels_bars_stay_within_their_group(tmp_path: Path) -> None:
    """Per phase, one bar per label side by side: bars of different labels never overlap and
    none reaches into the next group."""
    variants = (("usbpo", "usbpo"), ("mbpo", "mbpo"), ("sac", "sac"))
    runs = aggregate.load_runs(write_grid(tmp_path / "g", variants))
    (ax,) = visible_axes(plots.make_figure("compute-cost", runs))
    spans: dict[int, list[tuple[float, float]]] = {}
    for container in bars_by_label(ax).values():
        for patch in container.patches:
            centre = patch.get_x() + patch.get_width() / 2
            spans.setdefault(round(centre), []).append(
                (patch.get_x(), patch.get_x() + patch.get_width())
            )
    assert sorted(spans) == list(range(7))
    for group, bars in spans.items():
        bars.sort()
        assert all(left > group - 0.5 and right < group + 0.5 for left, right in bars)
        if len(bars) == 3:  # every label has a bar here: together centred on the name
            assert (bars[0][0] + bars[-1][1]) / 2 == pytest.approx(group)
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(bars, bars[1:]))
    assert len(spans[6]) == 3  # every label has a total
    # left to right in the legend's order: USB-PO first, then the others in natural order
    order = sorted(bars_by_label(ax).items(), key=lambda item: item[1].patches[-1].get_x())
    assert [label for label, _ in order] == [f"{k} (n=3 seeds)" for k in ("usbpo", "mbpo", "sac")]


@pytest.mark.parametrize("n", [10, 11])
def test_every_label_has_a_colour_of_its_own(tmp_path: Path, n: int) -> None:
    variants = tuple((f"sac-{k}", "sac") for k in range(n))
    runs = aggregate.load_runs(write_grid(tmp_path / "g", variants, seeds=1))
    (ax,) = visible_axes(plots.make_figure("learning-curves", runs))
    colours = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in ax.lines}
    assert len(colours) == n and len(set(colours.values())) == n


def test_many_coinciding_curves_all_stay_visible(tmp_path: Path) -> None:
    """Six identical curves: each drawn narrower with smaller markers than the one before, down
    to a floor that still shows (0.9 pt lines, 2.5 pt markers)."""
    variants = tuple((f"sac-{k}", "sac") for k in range(6))
    grid = write_grid(tmp_path / "g", variants, seeds=1, same_returns=True)
    (ax,) = visible_axes(plots.make_figure("learning-curves", aggregate.load_runs(grid)))
    widths = [line.get_linewidth() for line in ax.lines]
    sizes = [line.get_markersize() for line in ax.lines]
    assert widths == sorted(widths, reverse=True) and sizes == sorted(sizes, reverse=True)
    assert widths[0] > widths[1] > widths[2] > widths[3]
    assert min(widths) >= 0.9 - 1e-9 and min(sizes) >= 2.5 - 1e-9
    (note,) = ax.texts
    assert note.get_text() == "identical curves: sac-1, sac-2, sac-3, sac-4, sac-5 = sac-0"
    renderer = ax.figure.canvas.get_renderer()
    ax.figure.draw(renderer)
    inside = ax.get_window_extent(renderer)
    box = note.get_window_extent(renderer)
    assert inside.x0 <= box.x0 and box.x1 <= inside.x1 + 30  # may run past a narrow panel
    assert inside.y0 <= box.y0 and box.y1 <= inside.y1


def test_equal_returns_at_other_steps_are_not_identical_curves(tmp_path: Path) -> None:
    """Two labels with the same returns, evaluated at different steps, are different curves."""
    write_grid(tmp_path / "g", (("usbpo", "usbpo"),), steps=(1000, 2000, 3000, 4000))
    write_grid(tmp_path / "g", (("mbpo", "mbpo"),), steps=(1500, 2500, 3500, 4500))
    (ax,) = visible_axes(plots.make_figure("learning-curves", aggregate.load_runs(tmp_path / "g")))
    assert list(ax.texts) == []


def test_one_random_step_is_shaded_and_none_is_not(tmp_path: Path) -> None:
    write_grid(tmp_path / "g", (("usbpo", "usbpo"),), initial_steps=1)
    write_grid(tmp_path / "g", (("sac", "sac"),), initial_steps=0)
    (ax,) = visible_axes(plots.make_figure("learning-curves", aggregate.load_runs(tmp_path / "g")))
    spans = [p.get_label() for p in ax.patches if p.get_label().startswith("random")]
    assert spans == ["random exploration (first 1 steps)"]


def test_a_figure_goes_into_folders_it_makes(tmp_path: Path) -> None:
    runs = aggregate.load_runs(write_grid(tmp_path / "g", COMPARE, seeds=1))
    out = plots.plot_figure("compute-cost", runs, tmp_path / "paper" / "figs" / "cost.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_whose_config_names_another_algo_is_left_out_of_a_study(tmp_path: Path) -> None:
    """A cmlo-threshold folder whose cmlo-alpha5 runs were in fact usbpo (their config.json says
    so) draws the cmlo runs only, and says what it left out."""
    grid = write_grid(tmp_path / "g", CMLO_STUDY[:2])
    write_grid(grid, (("cmlo-alpha5", "usbpo"),))
    said: list[str] = []
    fig = plots.make_figure("cmlo-threshold", aggregate.load_runs(grid), report=said.append)
    assert lines_of(visible_axes(fig)[0]) == ["cmlo-alpha1 (n=3 seeds)", "cmlo-alpha3 (n=3 seeds)"]
    assert said == ["plot: left out label(s) cmlo-alpha5: not cmlo runs"]


def test_a_figure_is_written_beside_its_grid_when_the_grid_is_under_runs(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    grid = write_grid(root / "compare", COMPARE, seeds=1)
    assert plots.select_runs("learning-curves", root).default_out_folder == grid
    assert plots.select_runs("learning-curves", grid).default_out_folder == grid
    inside = grid / "Hopper-v4"  # --runs inside a grid: the figure stays where the user pointed
    assert plots.select_runs("learning-curves", inside).default_out_folder == inside


@pytest.mark.parametrize("n", [4, 5, 6])
def test_a_refusal_names_four_grids_and_counts_the_rest(tmp_path: Path, n: int) -> None:
    for k in range(n):
        write_grid(tmp_path / f"g{k}", (("sac", "sac"),), seeds=1)
    with pytest.raises(UsageError) as refusal:
        plots.select_runs("delta-magnitude", tmp_path)
    line = str(refusal.value)
    assert line.count(": the runs (labels sac) have none") == 4
    assert line.endswith(f"; and {n - 4} more)" if n > 4 else "have none)")


def test_a_labels_exploration_is_its_longest_seeds(tmp_path: Path) -> None:
    """Seeds of one label that explored for different lengths: the span covers the longest, so
    no seed's random steps are drawn as learning."""
    grid = write_grid(tmp_path / "g", (("sac", "sac"),), seeds=2, initial_steps=1000)
    config = grid / "Hopper-v4" / "sac" / "seed1" / "config.json"
    config.write_text(config.read_text().replace('"initial_steps": 1000', '"initial_steps": 2000'))
    (ax,) = visible_axes(plots.make_figure("learning-curves", aggregate.load_runs(grid)))
    spans = [p for p in ax.patches if p.get_label().startswith("random")]
    assert [(p.get_label(), p.get_width()) for p in spans] == [
        ("random exploration (first 2k steps)", 2000.0)
    ]
