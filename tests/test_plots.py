"""Figures from hand-made run folders: every figure renders to a real image in every format,
published reference curves overlay from ../shared/reference, figures that need columns the runs
lack say so, and neither plotting nor aggregation ever imports torch or gymnasium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from usbpo_cli.errors import UsageError
from usbpo_cli.experiments import aggregate, plots
from usbpo_cli.runs.csvlog import PROGRESS_COLUMNS

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"  # /work/shared/reference here and in CI
ENVS = ("Hopper-v4", "Walker2d-v4")
LABELS = ("usbpo", "mbpo", "sac")
SEEDS = 3
STEPS = (5000, 10000, 15000, 20000)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def progress_row(
    label: str, seed: int, i: int, step: int, algo: str | None = None, rank: int | None = None
) -> dict[str, float | None]:
    """One evaluation row; SAC leaves the model columns empty, as the real loop does."""
    algo = algo or label
    model_based = algo != "sac"
    rank = LABELS.index(label) if rank is None else rank
    row: dict[str, float | None] = dict.fromkeys(PROGRESS_COLUMNS)
    row.update(
        env_step=step,
        epoch=i,
        eval_return_mean=100.0 * i * (1 + rank) + seed,
        eval_return_std=5.0,
        wall_time_s=10.0 * i,
        t_env=0.5,
        t_policy=3.0,
        t_eval=0.2,
    )
    if model_based:
        row.update(
            model_shift=1.0 / i + 0.01 * seed,
            model_bias=0.5 / i,
            delta=0.01 * (seed - 1),
            t_model_phase1=2.0,
            t_rollout=0.3,
            t_model_phase2=1.0 if algo == "usbpo" else None,
        )
    return row


def write_runs(
    root: Path, labels: tuple[str, ...] = LABELS, algos: tuple[str, ...] | None = None
) -> Path:
    """Runs `<root>/<env>/<label>/seed<k>`; `algos` (default: the labels) go into config.json."""
    for env in ENVS:
        for rank, (label, algo) in enumerate(zip(labels, algos or labels)):
            for seed in range(SEEDS):
                folder = root / env / label / f"seed{seed}"
                folder.mkdir(parents=True)
                config = {"algo": algo, "env_id": env, "seed": seed, "steps": STEPS[-1]}
                (folder / "config.json").write_text(json.dumps(config))
                rows = [
                    progress_row(label, seed, i, s, algo, rank)
                    for i, s in enumerate(STEPS, start=1)
                ]
                pd.DataFrame(rows, columns=PROGRESS_COLUMNS).to_csv(
                    folder / "progress.csv", index=False
                )
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def runs(root: Path) -> pd.DataFrame:
    return aggregate.load_runs(root)


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """One grid per ablation study with a figure of its own, labelled as `ablate` labels them."""
    frames = {}
    for study, variants in plots.STUDY_VARIANTS.items():
        labels, algos = zip(*variants)
        root = write_runs(tmp_path_factory.mktemp(study), labels, algos)
        frames[study] = aggregate.load_runs(root)
    return frames


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_every_figure_renders_png(
    runs: pd.DataFrame, study_runs: dict[str, pd.DataFrame], tmp_path: Path, name: str
) -> None:
    out = plots.plot_figure(name, study_runs.get(name, runs), tmp_path / "sub" / f"{name}.png")
    assert out == tmp_path / "sub" / f"{name}.png"
    assert_png(out)


def test_pdf_and_svg(runs: pd.DataFrame, tmp_path: Path) -> None:
    pdf = plots.plot_figure("learning-curves", runs, tmp_path / "curves.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    svg = plots.plot_figure("compute-cost", runs, tmp_path / "cost.SVG")
    text = svg.read_text()
    assert "<svg" in text and "Wall s per 1000 env steps" in text  # text kept as text


def test_unknown_format_and_unknown_figure(runs: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unsupported figure format '\.jpg'"):
        plots.plot_figure("learning-curves", runs, tmp_path / "a.jpg")
    with pytest.raises(UsageError, match="learning-curves, cmlo-threshold") as error:
        plots.plot_figure("fig9", runs, tmp_path / "a.png")
    assert all(name in str(error.value) for name in plots.FIGURES)


def test_learning_curves_panels_and_asymptote(runs: pd.DataFrame) -> None:
    fig = plots.make_figure("learning-curves", runs, sac_asymptote={"Hopper-v4": 3000.0})
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == list(ENVS)
    assert axes[0].get_xlabel() == "Env steps" and axes[0].get_ylabel() == "Eval return"
    hopper = [line.get_label() for line in axes[0].get_lines()]
    assert hopper.count("SAC asymptote") == 1 and "SAC asymptote" not in [
        line.get_label() for line in axes[1].get_lines()
    ]
    usbpo = next(line for line in axes[0].get_lines() if line.get_label() == "usbpo (n=3 seeds)")
    # mean over seeds 0, 1, 2 of 100 * i + seed at the last evaluation
    assert usbpo.get_ydata()[-1] == pytest.approx(400 + 1)
    assert fig.get_size_inches()[0] == pytest.approx(2 * plots.PANEL_WIDTH_IN)
    assert fig.legends, "a legend names the labels"


def _synthetic_reference(root: Path) -> Path:
    """erl_lib-style long-format curves (step,time,reward,seed) for two seeds, past our steps."""
    for algo in ("mbpo", "sac", "macura"):
        folder = root / "erl_lib" / algo
        folder.mkdir(parents=True)
        rows = [
            f"{step},{step / 10},{step / 100 + seed},{seed}"
            for seed in (0, 1)
            for step in range(0, 2 * STEPS[-1] + 1, 1000)
        ]
        (folder / "Hopper.csv").write_text("step,time,reward,seed\n" + "\n".join(rows) + "\n")
    return root


def test_reference_overlay(runs: pd.DataFrame, tmp_path: Path) -> None:
    reference = _synthetic_reference(tmp_path / "reference")
    fig = plots.make_figure("learning-curves", runs, reference_dir=reference)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    for name in ("MBPO", "SAC", "MACURA"):
        assert f"{name} (erl_lib, published)" in labels
    sac = next(line for line in fig.axes[0].get_lines() if line.get_label().startswith("SAC ("))
    assert max(sac.get_xdata()) <= STEPS[-1]  # cut at our last step
    assert sac.get_ydata()[-1] == pytest.approx(max(sac.get_xdata()) / 100 + 0.5)  # seed mean
    assert_png(plots.plot_figure("learning-curves", runs, tmp_path / "ref.png", reference))


def test_published_reference_is_read_right() -> None:
    """The real published MBPO Hopper curve (shared/reference beside the checkout, as in CI)."""
    path = REFERENCE / "erl_lib" / "mbpo" / "Hopper.csv"
    assert path.exists(), f"{path} missing: the shared/ folder belongs beside the checkout"
    curve = plots.read_reference_curve(path)
    nearest = curve.iloc[(curve["step"] - 100_000).abs().argmin()]
    assert nearest["reward"] == pytest.approx(3315, abs=1)  # reference README: 3315 ± 373


def test_reference_files_missing_are_skipped(runs: pd.DataFrame, tmp_path: Path) -> None:
    fig = plots.make_figure("learning-curves", runs, reference_dir=tmp_path)
    assert not any("published" in line.get_label() for line in fig.axes[0].get_lines())


def test_delta_magnitude_uses_usbpo_runs(runs: pd.DataFrame) -> None:
    fig = plots.make_figure("delta-magnitude", runs)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    # usbpo only: per env one panel of shift and bias, one of delta
    assert [ax.get_title() for ax in axes] == [
        "Hopper-v4: usbpo, n=3 seeds",
        "delta (model after phase 2)",
        "Walker2d-v4: usbpo, n=3 seeds",
        "delta (model after phase 2)",
    ]
    assert {line.get_label() for line in axes[0].get_lines()} >= {
        "model shift, after phase 2",
        "model bias, after phase 2",
    }
    assert [line.get_label() for line in axes[1].get_lines()][0] == "delta"


def test_compute_cost_per_1000_steps(runs: pd.DataFrame) -> None:
    per_seed = plots.phase_cost_per_seed(runs).drop(columns=["seed", "total"])
    cost = per_seed.groupby(["env", "label"]).mean()
    # each of 4 rows holds 0.5 s of env time over 20000 steps -> 0.1 s per 1000 steps
    assert cost.loc[("Hopper-v4", "sac"), "t_env"] == pytest.approx(0.1)
    assert cost.loc[("Hopper-v4", "usbpo"), "t_model_phase2"] == pytest.approx(0.2)
    assert cost.loc[("Hopper-v4", "sac"), "t_model_phase1"] == 0.0


def test_figure_needing_missing_columns(tmp_path: Path) -> None:
    sac_only = aggregate.load_runs(write_runs(tmp_path / "sac", labels=("sac",)))
    with pytest.raises(UsageError, match="delta-magnitude needs column.*delta.*model_shift"):
        plots.plot_figure("delta-magnitude", sac_only, tmp_path / "d.png")
    no_timing = sac_only.drop(columns=[c for c in sac_only if c.startswith("t_")])
    with pytest.raises(UsageError, match="compute-cost needs the timing columns"):
        plots.plot_figure("compute-cost", no_timing, tmp_path / "c.png")
    assert not list(tmp_path.glob("*.png"))


def test_schema_names_used_here_exist() -> None:
    used = (*aggregate.REQUIRED_COLUMNS, *plots.DELTA_COLUMNS, *plots.PHASES)
    assert set(used) <= set(PROGRESS_COLUMNS)


def test_no_torch_or_gymnasium_import(root: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from usbpo_cli.experiments import aggregate, plots\n"
        f"runs = aggregate.load_runs(Path({str(root)!r}))\n"
        "aggregate.summary_table(runs, 'auc', n_resamples=100)\n"
        f"plots.plot_figure('compute-cost', runs, Path({str(tmp_path / 'x.png')!r}))\n"
        "bad = [m for m in ('torch', 'gymnasium') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "import matplotlib\n"
        "assert matplotlib.get_backend().lower() == 'agg', matplotlib.get_backend()\n"
    )
    # headless whatever the user's MPLBACKEND says: plotting must not need a display
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "svg"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
