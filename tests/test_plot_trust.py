"""Figures are exactly what they say they are (issue 12, items 3 and 10).

Each figure draws only runs of one grid that has what it needs (columns, algos, study), and
otherwise refuses in one line with exit 2, touching nothing; with several grids it draws the
most recent that qualifies and says which. The figures are read back from the matplotlib
objects: panels, lines per panel, legends, delta on its own axis, the exploration span, error
bars over seeds, and the lines `--reference` prints. Runs are hand-made folders (config.json +
progress.csv), except one test that runs the user's own three commands.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import snapshot, usbpo, usbpo_inproc
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
