"""The paper's figures, drawn from the runs' CSVs.

Each figure declares what it needs (`NEEDS`: columns with values, algorithms, an ablation
study) and draws only runs that have it; a figure never mixes grids. `select_runs` finds the
grids under a folder (a grid is a `compare` or `ablate` folder, `runs/train`, ...: see
`grid_folder`), keeps those that qualify for the figure and picks the most recent one, saying
which; `make_figure` refuses a frame that does not qualify, in one line.

Plotting never needs a live run, so this module imports neither torch nor gymnasium (a test
checks it) and draws headless: the Agg backend is chosen before anything else in matplotlib is
imported, and figures are `matplotlib.figure.Figure` objects that never enter pyplot's global
state, so many figures in one process leak nothing.

Figures are sized for a two-column paper: about 3.4 in wide per panel, 8-9 pt fonts.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from usbpo_cli.errors import UsageError  # noqa: E402
from usbpo_cli.experiments import aggregate  # noqa: E402

FIGURES: dict[str, str] = {
    "learning-curves": "eval return vs env steps per env, mean ± std over seeds (paper Fig. 2)",
    "cmlo-threshold": "CMLO learning curves for each event threshold alpha (paper Fig. 1); "
    "needs the cmlo-threshold study",
    "delta-magnitude": "USB-PO's delta (own panel) against model shift and model bias, before "
    "and after phase 2 (paper Fig. 3)",
    "phase2-lr": "ablation: learning curves for each phase-2 learning rate; needs that study",
    "phase2-terms": "ablation: phase 2 on shift, bias or both against none; needs that study",
    "compute-cost": "wall seconds per 1000 env steps in each phase, mean ± std over seeds",
}
FORMATS = ("png", "pdf", "svg")
PANEL_WIDTH_IN, PANEL_HEIGHT_IN, MAX_COLUMNS = 3.4, 2.5, 3
PNG_DPI = 200
STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.2,
    "svg.fonttype": "none",  # text stays text in SVG
    "pdf.fonttype": 42,  # TrueType in PDF, as most publishers ask
}
DELTA_COLUMNS = ("delta", "model_shift", "model_bias")
PHASES: dict[str, str] = {
    "t_env": "env steps",
    "t_model_phase1": "model phase 1",
    "t_model_phase2": "model phase 2",
    "t_rollout": "rollouts",
    "t_policy": "policy updates",
    "t_eval": "evaluation",
}
# A phase "costs something" in a compute-cost panel when some label spends more than this share
# of the panel's largest total in it: a phase an algorithm skips still times a few microseconds.
COST_FLOOR = 1e-3
CURVE_TITLES: dict[str, str] = {
    "learning-curves": "{env}",
    "cmlo-threshold": "{env}: CMLO threshold",
    "phase2-lr": "{env}: phase-2 learning rate",
    "phase2-terms": "{env}: phase-2 objective",
}
BAND_NOTE = "line: mean over seeds; band: ± 1 std over seeds"
# Markers and line styles per label, so curves that coincide (USB-PO and MBPO share everything
# up to the first phase 2) stay visible: hollow markers of different shapes at staggered points.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
# Solid and dashed only: dotted and dash-dot lines are the published reference curves.
LINESTYLES = ("-", (0, (5, 2)))

# Variant (label, algo) pairs of the ablation studies that have figures of their own: a copy of
# `experiments.STUDIES` (that module imports torch), kept equal by a test. A grid without a
# manifest belongs to a study when it holds a label that is the study's own (label != algo).
STUDY_VARIANTS: dict[str, tuple[tuple[str, str], ...]] = {
    "phase2-lr": (
        ("usbpo-lr1e-5", "usbpo"),
        ("usbpo-lr1e-4", "usbpo"),
        ("usbpo-lr1e-3", "usbpo"),
    ),
    "phase2-terms": (
        ("mbpo", "mbpo"),
        ("phase2-shift", "usbpo"),
        ("phase2-bias", "usbpo"),
        ("phase2-both", "usbpo"),
    ),
    "cmlo-threshold": (
        ("cmlo-alpha1", "cmlo"),
        ("cmlo-alpha3", "cmlo"),
        ("cmlo-alpha5", "cmlo"),
    ),
}
MANIFEST = "grid.json"  # written by `compare` and `ablate` into the grid folder


@dataclass(frozen=True)
class Needs:
    """What a figure draws from: runs with values in `columns` (all of them, or any one when
    `any_column`), of `algos` (None: any), of `study` (None: any grid); among those, the runs
    of `prefer` when there are any."""

    columns: tuple[str, ...]
    need: str  # the requirement in words, for refusals
    any_column: bool = False
    algos: tuple[str, ...] | None = None
    study: str | None = None
    prefer: tuple[str, ...] = ()


def _study_need(study: str) -> str:
    labels = ", ".join(label for label, _ in STUDY_VARIANTS[study])
    return f"the runs of the {study} study (labels {labels}; `usbpo ablate --study {study}`)"


NEEDS: dict[str, Needs] = {
    "learning-curves": Needs(("eval_return_mean",), "runs with eval_return_mean"),
    "cmlo-threshold": Needs(
        ("eval_return_mean",),
        _study_need("cmlo-threshold"),
        algos=("cmlo",),
        study="cmlo-threshold",
    ),
    "delta-magnitude": Needs(
        DELTA_COLUMNS,
        f"column(s) {', '.join(DELTA_COLUMNS)} with values (written by model-based runs such "
        "as usbpo)",
        prefer=("usbpo",),
    ),
    "phase2-lr": Needs(
        ("eval_return_mean",), _study_need("phase2-lr"), algos=("usbpo",), study="phase2-lr"
    ),
    "phase2-terms": Needs(
        ("eval_return_mean",),
        _study_need("phase2-terms"),
        algos=("mbpo", "usbpo"),
        study="phase2-terms",
    ),
    "compute-cost": Needs(
        tuple(PHASES), f"the timing columns {', '.join(PHASES)} with values", any_column=True
    ),
}

Report = Callable[[str], None]


def _ignore(_line: str) -> None:
    pass


# ----------------------------------------------------------------------------- entry points


def check_output(out: Path) -> str:
    """The format of output file `out` (png, pdf or svg), or a UsageError."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(
            f"{out}: unsupported figure format {out.suffix or '(none)'!r} (use .png, .pdf or .svg)"
        )
    return fmt


def plot_figure(
    name: str,
    runs: pd.DataFrame,
    out: Path,
    reference_dir: Path | None = None,
    sac_asymptote: dict[str, float] | None = None,
    *,
    manifest: dict[str, Any] | None = None,
    report: Report | None = None,
) -> Path:
    """Draw figure `name` from `runs` into `out` (format from its extension) and return `out`.

    `reference_dir` (published curves: `erl_lib/`, `tianshou/`, `alm/`) and `sac_asymptote`
    ({env or env id: return}) are used by `learning-curves` only; `report` gets one line per
    reference overlay (or one saying nothing matched) and per group of runs left out.
    """
    out = Path(out)
    fmt = check_output(out)
    fig = make_figure(name, runs, reference_dir, sac_asymptote, manifest=manifest, report=report)
    with matplotlib.rc_context(STYLE):
        _save(fig, out, fmt)
    return out


def make_figure(
    name: str,
    runs: pd.DataFrame,
    reference_dir: Path | None = None,
    sac_asymptote: dict[str, float] | None = None,
    *,
    manifest: dict[str, Any] | None = None,
    report: Report | None = None,
) -> Figure:
    """The figure `name` as a matplotlib Figure, unsaved (for tests and notebooks).

    `runs` is a frame from `aggregate.load_runs` or `select_runs`; runs the figure does not
    need are left out (and reported), and a frame with none it needs is a UsageError.
    `manifest` is the grid's `grid.json`, when there is one: it says which study the runs are.
    """
    _check_name(name)
    report = report or _ignore
    if runs.empty:
        raise UsageError(f"figure {name}: there are no runs to draw")
    if reference_dir is not None and not Path(reference_dir).is_dir():
        raise UsageError(f"reference folder {reference_dir} does not exist")
    try:
        runs, notes = qualifying_runs(name, runs, manifest)
    except NotQualified as refusal:
        raise UsageError(f"figure {name} needs {NEEDS[name].need}; {refusal}") from None
    for note in notes:
        report(f"plot: {note}")
    if reference_dir is not None and name != "learning-curves":
        report(f"reference: figure {name} overlays no published curves (learning-curves does)")
    caveat = unfinished_note(runs)
    if caveat:
        report(f"plot: {caveat}")
    with matplotlib.rc_context(STYLE):
        if name in CURVE_TITLES:
            fig = _curves_figure(name, runs, reference_dir, sac_asymptote, report)
        elif name == "delta-magnitude":
            fig = _delta_figure(runs, report)
        else:
            fig = _cost_figure(runs)
        if caveat:
            _headline(fig, caveat)
    return fig


def _headline(fig: Figure, caveat: str) -> None:
    """Put `caveat` above everything else on the figure, so a copy pasted into a paper or a
    slide still says it (the console line does not travel with the file)."""
    lines = textwrap.wrap(caveat, 110)
    existing = fig.get_suptitle()
    fig.suptitle("\n".join([*lines, existing] if existing else lines), fontsize=8)


def _check_name(name: str) -> None:
    if name not in FIGURES:
        raise UsageError(f"unknown figure {name!r} (choose: {', '.join(FIGURES)})")


def _save(fig: Figure, out: Path, fmt: str) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format=fmt, dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.02)
    except OSError as error:
        raise UsageError(f"cannot write {out}: {error.strerror or error}") from None


# ----------------------------------------------------------------------------- which runs


class NotQualified(Exception):
    """The runs lack what a figure needs; the message says what they have instead."""


def qualifying_runs(
    name: str, runs: pd.DataFrame, manifest: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """The runs of `runs` that figure `name` draws, and one note per group left out.

    Raises NotQualified (saying what the runs are) when none qualifies.
    """
    needs = NEEDS[name]
    runs = with_run_info(runs)
    notes: list[str] = []

    def keep(mask: pd.Series, why: str) -> pd.DataFrame:
        left_out = _sorted(runs.loc[~mask, "label"], key=_label_key)
        if left_out and mask.any():
            notes.append(f"left out label(s) {', '.join(left_out)}: {why}")
        return runs[mask]

    if needs.study:
        wanted = _study_labels(needs.study, runs, manifest)
        ours = runs["label"].isin(wanted)
        if not ours.any():
            raise NotQualified(f"none of its runs is a variant {MANIFEST} lists ({_have(runs)})")
        runs = keep(ours, f"not variants of the {needs.study} study")
    if needs.algos:
        ok = runs["algo"].isin(needs.algos)
        if not ok.any():
            raise NotQualified(f"no run of algo {', '.join(needs.algos)} ({_have(runs)})")
        runs = keep(ok, f"not {' or '.join(needs.algos)} runs")
    has = _runs_with_values(runs, needs.columns, needs.any_column)
    if not has.any():
        raise NotQualified(f"the runs ({_have(runs)}) have none")
    runs = keep(has, f"no values in {', '.join(needs.columns)}")
    preferred = runs["algo"].isin(needs.prefer)
    if preferred.any() and not preferred.all():
        others = _sorted(runs.loc[~preferred, "label"], key=_label_key)
        notes.append(
            f"drawing the {', '.join(needs.prefer)} runs only; {', '.join(others)} also "
            f"logged {', '.join(needs.columns)}"
        )
        runs = runs[preferred]
    return runs, notes


def _study_labels(study: str, runs: pd.DataFrame, manifest: dict[str, Any] | None) -> list[str]:
    """The labels of `study` in this grid: from its manifest, else recognised by the study's
    own variant labels. NotQualified when the grid is not that study."""
    if manifest is not None:
        if manifest.get("study") != study:
            kind = manifest.get("kind") or "grid"
            other = f" of study {manifest['study']}" if manifest.get("study") else ""
            raise NotQualified(f"it is a {kind} grid{other} (by its {MANIFEST})")
        listed = manifest_labels(manifest)
        return listed or [label for label, _ in STUDY_VARIANTS[study]]
    own = {label for label, algo in STUDY_VARIANTS[study] if label != algo}
    if not own & set(runs["label"].astype(str)):
        raise NotQualified(f"the runs have {_have(runs)}")
    return [label for label, _ in STUDY_VARIANTS[study]]


def _runs_with_values(runs: pd.DataFrame, columns: tuple[str, ...], any_column: bool) -> pd.Series:
    """Per row: whether its run has values in `columns` (all, or any one)."""
    present = [c for c in columns if c in runs.columns]
    if not present or (not any_column and len(present) < len(columns)):
        return pd.Series(False, index=runs.index)
    filled = runs[present].apply(pd.to_numeric, errors="coerce").notna()
    per_run = filled.groupby(runs["run"]).any()
    ok = per_run.any(axis=1) if any_column else per_run.all(axis=1)
    return runs["run"].map(ok).fillna(False).astype(bool)


def _count(runs: pd.DataFrame) -> str:
    n = len(pd.unique(runs["run"]))
    return f"{n} run{'s' if n != 1 else ''}"


def _have(runs: pd.DataFrame) -> str:
    return f"labels {', '.join(_sorted(runs['label'], key=_label_key))}"


RUN_INFO: tuple[str, ...] = ("algo", "initial_steps", "truncate_obs", "planned_steps")


def with_run_info(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with `algo` (config.json's, else the label), `initial_steps` (the random
    exploration steps from config.json, NaN when unknown), `truncate_obs` and
    `planned_steps` (the run's --steps, NaN when unknown) per row."""
    if set(RUN_INFO) <= set(runs.columns):
        return runs
    runs = runs.copy()
    if "run" not in runs.columns:
        runs["run"] = [
            f"{e}/{lab}/{s}" for e, lab, s in zip(runs["env"], runs["label"], runs["seed"])
        ]
    info = {run: _config_info(Path(run)) for run in pd.unique(runs["run"])}
    algo = runs["run"].map(lambda run: info[run][0])
    runs["algo"] = algo.where(algo.notna(), runs["label"]).astype(str)
    runs["initial_steps"] = runs["run"].map(lambda run: info[run][1]).astype(float)
    runs["truncate_obs"] = runs["run"].map(lambda run: info[run][2]).astype(bool)
    runs["planned_steps"] = runs["run"].map(lambda run: info[run][3]).astype(float)
    return runs


def _config_info(run_dir: Path) -> tuple[str | None, float, bool, float]:
    nothing = None, float("nan"), False, float("nan")
    path = run_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return nothing
    if not isinstance(config, dict):
        return nothing
    settings = config.get("config")
    initial = settings.get("initial_steps") if isinstance(settings, dict) else None
    algo, steps = config.get("algo"), config.get("steps")
    return (
        str(algo) if algo else None,
        float(initial) if isinstance(initial, (int, float)) else float("nan"),
        bool(config.get("truncate_obs", False)),
        float(steps) if isinstance(steps, (int, float)) and steps > 0 else float("nan"),
    )


def unfinished_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row (env, label, seed, reached, planned) per run whose progress stops short of the
    --steps its config.json names: a grid still training, or stopped part-way. A figure drawn
    from such runs must say so, or it reads as the finished result."""
    runs = with_run_info(runs)
    per_run = runs.groupby("run", sort=False).agg(
        env=("env", "first"),
        label=("label", "first"),
        seed=("seed", "first"),
        reached=("env_step", "max"),
        planned=("planned_steps", "first"),
    )
    short = per_run[per_run["reached"] < per_run["planned"]]  # NaN planned: unknown, not short
    order = [
        (_natural_key(str(e)), _label_key(str(lab)), int(s))
        for e, lab, s in zip(short["env"], short["label"], short["seed"])
    ]
    rows = short.iloc[sorted(range(len(short)), key=order.__getitem__)]
    return rows.reset_index(drop=True)


def unfinished_note(runs: pd.DataFrame) -> str | None:
    """`unfinished: 2 of 3 runs (usbpo seed 0 at 9k of 20k, mbpo seed 0 at 12k of 20k env
    steps)` for the figure and the console; None when every run reached its --steps."""
    runs = with_run_info(runs)
    short = unfinished_runs(runs)
    if short.empty:
        return None
    total = len(pd.unique(runs["run"]))
    several_envs = runs["env"].nunique() > 1
    parts = [
        f"{f'{env} ' if several_envs else ''}{label} seed {int(seed)} at "
        f"{_format_steps(reached)} of {_format_steps(planned)}"
        for env, label, seed, reached, planned in short.itertuples(index=False)
    ]
    runs_word = "run" if total == 1 else "runs"
    return f"unfinished: {len(short)} of {total} {runs_word} ({', '.join(parts)} env steps)"


# ----------------------------------------------------------------------------- grids


_SEED_FOLDER = re.compile(r"seed(\d+)")


@dataclass
class Grid:
    """The runs one `compare`, `ablate` or `train` folder holds (see `grid_folder`)."""

    folder: Path
    paths: list[Path]
    manifest: dict[str, Any] | None = None
    runs: pd.DataFrame | None = None
    error: str | None = None

    @property
    def newest(self) -> float:
        """When a run of the grid last wrote a row."""
        return max(path.stat().st_mtime for path in self.paths)


@dataclass
class Selection:
    """The runs a figure draws: one grid's, with the lines that say which and why."""

    runs: pd.DataFrame
    grid: Grid
    root: Path
    notes: list[str] = field(default_factory=list)

    @property
    def default_out_folder(self) -> Path:
        """The grid folder when it lies under the `--runs` folder, else that folder."""
        folder, root = self.grid.folder, self.root
        return folder if folder == root or root in folder.parents else root


def grid_folder(run_dir: Path, root: Path) -> Path:
    """The grid a run belongs to: the nearest folder with a grid manifest (up to `root`), else
    `<grid>` of the layout `<grid>/<env>/<label>/seed<k>`, else the run's parent folder (the
    run itself when it is `root`)."""
    for folder in run_dir.parents:
        if (folder / MANIFEST).is_file():
            return folder
        if folder == root:
            break
    if _SEED_FOLDER.match(run_dir.name) and run_dir.parent.name and run_dir.parent.parent.name:
        return run_dir.parent.parent.parent
    return root if run_dir == root else run_dir.parent


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """A grid folder's manifest (`grid.json`), None when it has none or it is unreadable."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def manifest_labels(manifest: dict[str, Any]) -> list[str]:
    """The run labels a manifest lists: its variants' labels (ablate) or its algos (compare)."""
    labels = []
    for item in manifest.get("variants") or manifest.get("algos") or []:
        label = item.get("label") if isinstance(item, dict) else item
        if isinstance(label, str) and label:
            labels.append(label)
    return labels


def find_grids(root: Path) -> list[Grid]:
    """Every grid under `root`, each read on its own: a grid with an unreadable run carries the
    error instead of runs, and never blocks the others."""
    root = Path(root)
    paths = aggregate.progress_paths(root)
    groups: dict[Path, list[Path]] = {}
    for path in paths:
        groups.setdefault(grid_folder(path.parent, root), []).append(path)
    grids = []
    for folder, files in groups.items():
        grid = Grid(folder, files, read_manifest(folder))
        try:
            grid.runs = load_grid_runs(files)
        except UsageError as error:
            grid.error = str(error)
        grids.append(grid)
    return grids


def load_grid_runs(paths: list[Path]) -> pd.DataFrame:
    """The runs whose `progress.csv` files are `paths`, as `aggregate.load_runs` reads them,
    plus `algo`, `initial_steps` and `truncate_obs` from each run's config.json."""
    return with_run_info(aggregate.load_progress(list(paths)))


def select_runs(name: str, root: Path) -> Selection:
    """The runs figure `name` draws from the folder `root`: those of the most recent grid
    under it that qualifies, never a mix of grids. The notes name the grid used, the others
    that qualify, runs left out and grids that could not be read.

    No grid qualifies: the first unreadable grid's error, else one line naming every grid and
    what it holds.
    """
    _check_name(name)
    root = Path(root)
    grids = find_grids(root)
    found: list[tuple[Grid, pd.DataFrame, list[str]]] = []
    refused: list[str] = []
    for grid in grids:
        if grid.runs is None:
            continue
        try:
            runs, notes = qualifying_runs(name, grid.runs, grid.manifest)
        except NotQualified as refusal:
            refused.append(f"{grid.folder}: {refusal}")
            continue
        found.append((grid, runs, notes))
    broken = [grid for grid in grids if grid.error is not None]
    if not found:
        if broken:
            raise UsageError(broken[0].error)
        if len(grids) == 1:
            where = f"{grids[0].folder} does not ({refused[0].split(': ', 1)[1]})"
        else:
            more = f"; and {len(refused) - 4} more" if len(refused) > 4 else ""
            where = f"no grid under {root} has them ({'; '.join(refused[:4])}{more})"
        raise UsageError(f"figure {name} needs {NEEDS[name].need}; {where}")
    found.sort(key=lambda item: item[0].newest, reverse=True)
    grid, runs, notes = found[0]
    line = f"plot: {name} from {grid.folder} ({_count(runs)}, {_have(runs)})"
    if len(found) > 1:
        others = ", ".join(str(other.folder) for other, _, _ in found[1:])
        line += (
            f"; the most recent of {len(found)} grids that qualify (also {others}: "
            "choose one with --runs)"
        )
    lines = [line, *(f"plot: {note}" for note in notes)]
    lines += [f"plot: skipped unreadable grid {g.folder}: {g.error}" for g in broken]
    return Selection(runs, grid, root, lines)


# ----------------------------------------------------------------------------- layout helpers


def _natural_key(text: str) -> list[object]:
    """Sort `cmlo-alpha10` after `cmlo-alpha5`, as a reader expects."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def _label_key(label: str) -> tuple[bool, list[object]]:
    """USB-PO (the method under study) first, then the rest in natural order."""
    return (not str(label).startswith("usbpo"), _natural_key(label))


def _sorted(values: object, key: Callable[[str], object] = _natural_key) -> list[str]:
    return sorted(pd.unique(pd.Series(values).astype(str)), key=key)


def _panel_grid(rows: int, columns: int) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(PANEL_WIDTH_IN * columns, PANEL_HEIGHT_IN * rows), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure text with (savefig still picks by format)
    return fig, fig.subplots(rows, columns, squeeze=False)


def _panels(n: int) -> tuple[Figure, list[Axes]]:
    """A grid of n panels at column width each, constrained layout (tight, legend included)."""
    columns = min(n, MAX_COLUMNS)
    fig, grid = _panel_grid(-(-n // columns), columns)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _steps_axis(ax: Axes) -> None:
    ax.set_xlabel("Env steps")
    ax.xaxis.set_major_formatter(FuncFormatter(_format_steps))
    ax.grid(alpha=0.25, linewidth=0.5)


def _format_steps(value: float, _position: int = 0) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _figure_legend(fig: Figure, axes: list[Axes], title: str | None = None) -> None:
    """One legend for all panels, below them: panels share their labels and stay uncluttered."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if not handles:
        return
    renderer = fig.canvas.get_renderer()
    for columns in range(min(len(handles), 2 if len(axes) == 1 else 4), 0, -1):
        legend = fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=columns,
            frameon=False,
            title=title,
            title_fontsize=7,
        )
        # Long labels in too many columns would widen the saved image past its panels (and a
        # paper would shrink it, fonts and all, back to the column): fewer columns instead.
        if columns == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
            return
        legend.remove()


def _colours(labels: list[str]) -> dict[str, tuple[float, ...]]:
    """One colour per label across every panel, so a label reads the same everywhere."""
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _mean_std(
    frame: pd.DataFrame, column: str, report: Report = _ignore, what: str = ""
) -> pd.DataFrame:
    """Mean and std (ddof 1; 0 with one seed) of `column` over seeds at each env step that
    every seed with a value in `column` has. Past the shortest seed (a grid stopped part-way,
    runs of different --steps) the mean would be that of fewer seeds than the legend's n, and
    its jump would read as learning; so the curve ends there and `report` hears it."""
    values = frame[["seed", "env_step", column]].copy()
    values[column] = pd.to_numeric(values[column], errors="coerce")
    values = values.dropna()
    n_seeds = values["seed"].nunique()
    summary = values.groupby("env_step")[column].agg(["mean", "std", "count"]).reset_index()
    common = summary[summary["count"] == n_seeds]
    if len(common) < len(summary):
        last = values.groupby("seed")["env_step"].max()
        end = f"{_format_steps(common['env_step'].max())} env steps" if len(common) else "nothing"
        report(
            f"plot: {what or column}: mean drawn to {end}, the steps all {n_seeds} seeds "
            f"have (seeds reach {', '.join(f'{s}: {_format_steps(v)}' for s, v in last.items())})"
        )
    common = common.drop(columns="count").reset_index(drop=True)
    common["std"] = common["std"].fillna(0.0)
    return common


def _band(
    ax: Axes,
    summary: pd.DataFrame,
    colour: object,
    label: str,
    index: int = 0,
    linestyle: object = "-",
    nested: bool = False,
) -> None:
    """Mean line with hollow markers (shape by `index`, staggered so coinciding curves show
    every marker) and a ± std band. `nested`: the line and markers shrink with `index`, so
    curves that coincide show as a stack of colours, each marker inside the one before."""
    x, mean, std = summary["env_step"], summary["mean"], summary["std"]
    every = max(1, len(x) // 8)
    step = min(index, 3) if nested else 0
    ax.plot(
        x,
        mean,
        color=colour,
        label=label,
        linestyle=linestyle,
        linewidth=2.4 - 0.5 * step if nested else None,
        marker=MARKERS[index % len(MARKERS)],
        markersize=6.5 - 1.2 * step if nested else 3.5,
        markerfacecolor="none",
        markevery=(index % every, every),
    )
    ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)


def _seeds(frame: pd.DataFrame) -> int:
    return int(frame["seed"].nunique())


# ----------------------------------------------------------------------------- learning curves


def _curves_figure(
    name: str,
    runs: pd.DataFrame,
    reference_dir: Path | None,
    sac_asymptote: dict[str, float] | None,
    report: Report,
) -> Figure:
    """Eval return against env steps, one panel per env, one band per label, the random
    exploration shaded."""
    labels = _sorted(runs["label"], key=_label_key)
    colours = _colours(labels)
    envs = _sorted(runs["env"])
    fig, axes = _panels(len(envs))
    for ax, env in zip(axes, envs):
        panel = runs[runs["env"] == env]
        x_max = float(panel["env_step"].max())
        _exploration(ax, panel, x_max)
        drawn: dict[str, pd.DataFrame] = {}
        for index, label in enumerate(labels):
            seeds = panel[panel["label"] == label]
            if not seeds.empty:
                summary = _mean_std(seeds, "eval_return_mean", report, f"{env} {label}")
                style = LINESTYLES[index % len(LINESTYLES)]
                label_n = _with_seeds(label, _seeds(seeds))
                _band(ax, summary, colours[label], label_n, index, style, nested=True)
                drawn[label] = summary
        _note_identical(ax, drawn)
        if name == "learning-curves":
            env_id = str(panel["env_id"].iloc[0]) if "env_id" in panel else env
            if reference_dir is not None:
                truncated = "truncate_obs" in panel and bool(panel["truncate_obs"].all())
                _reference_curves(
                    ax, Path(reference_dir), env_id, x_max, colours, truncated, report
                )
            _asymptote(ax, sac_asymptote, env, env_id)
        ax.set_title(CURVE_TITLES[name].format(env=env))
        ax.set_ylabel("Eval return")
        _steps_axis(ax)
    _figure_legend(fig, axes, BAND_NOTE)
    return fig


def _note_identical(ax: Axes, drawn: dict[str, pd.DataFrame]) -> None:
    """Say in the panel which labels' mean curves are identical throughout (drawn on top of
    each other, only the nested line widths and markers tell them apart)."""
    same: dict[str, list[str]] = {}
    for label, summary in drawn.items():
        for first in same:
            other = drawn[first]
            if len(other) == len(summary) and np.array_equal(
                other["env_step"].to_numpy(), summary["env_step"].to_numpy()
            ):
                if np.allclose(other["mean"], summary["mean"], rtol=1e-12, atol=0.0):
                    same[first].append(label)
                    break
        else:
            same[label] = []
    notes = [f"{', '.join(twins)} = {first}" for first, twins in same.items() if twins]
    if notes:
        ax.text(
            0.02,
            0.98,
            "identical curves: " + "; ".join(notes),
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=6,
            color="0.25",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1.0},
        )


def _with_seeds(label: str, n: int, spread: str = "band") -> str:
    """`usbpo (n=3 seeds)`; with one seed, that there is no band (or error bar) to read."""
    return f"{label} (n={n} seeds)" if n != 1 else f"{label} (n=1 seed, no {spread})"


def _exploration(ax: Axes, panel: pd.DataFrame, x_max: float) -> None:
    """Shade the random-exploration steps (`initial_steps` of each run's config.json); runs
    that differ get one span per value, naming their labels."""
    if "initial_steps" not in panel:
        return
    steps = panel.groupby("label")["initial_steps"].max().dropna()
    steps = steps[steps > 0]
    values = sorted(pd.unique(steps))
    for value in values:
        who = ""
        if len(values) > 1:
            who = f"{', '.join(_sorted(steps[steps == value].index, key=_label_key))}: "
        ax.axvspan(
            0.0,
            min(float(value), x_max),
            color="0.5",
            alpha=0.12,
            linewidth=0,
            zorder=0,
            label=f"random exploration ({who}first {_format_steps(float(value))} steps)",
        )


def _asymptote(ax: Axes, asymptotes: dict[str, float] | None, env: str, env_id: str) -> None:
    if not asymptotes:
        return
    value = asymptotes.get(env, asymptotes.get(env_id))
    if value is not None:
        ax.axhline(float(value), color="0.3", linestyle="--", linewidth=0.9, label="SAC asymptote")


# ----------------------------------------------------------------------------- reference curves


@dataclass(frozen=True)
class ReferenceFile:
    algo: str
    display: str
    source: str  # erl_lib, tianshou or alm
    version: str
    path: Path


REFERENCE_ALGOS: dict[str, dict[str, str]] = {
    "erl_lib": {"mbpo": "MBPO", "sac": "SAC", "macura": "MACURA"},
    "tianshou": {"sac": "SAC", "td3": "TD3", "ppo": "PPO"},
    "alm": {"alm": "ALM"},
}
# A published curve takes the colour of our label of the same algorithm, else its own.
REFERENCE_COLOURS: dict[str, str] = {
    "mbpo": "tab:orange",
    "sac": "tab:green",
    "macura": "tab:brown",
    "td3": "tab:purple",
    "ppo": "tab:olive",
    "alm": "tab:cyan",
}
REFERENCE_STYLES: dict[str, object] = {
    "erl_lib": ":",
    "tianshou": "-.",
    "alm": (0, (6, 1.5, 1, 1.5, 1, 1.5)),
}


def _source_folder(reference_dir: Path, source: str) -> Path | None:
    """`reference_dir/<source>`, or `reference_dir` itself when it is that source's folder."""
    if (reference_dir / source).is_dir():
        return reference_dir / source
    return reference_dir if reference_dir.name == source else None


def _snake(family: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", family).lower()


def reference_files(
    reference_dir: Path, env_id: str, truncated: bool = False
) -> tuple[list[ReferenceFile], str]:
    """Published curves for `env_id` in `reference_dir`, and the files looked for, in words."""
    family = env_id.split("-v")[0]
    found = []
    erl = _source_folder(reference_dir, "erl_lib")
    for algo, display in REFERENCE_ALGOS["erl_lib"].items():
        path = _find_case_insensitive(erl / algo, f"{family}.csv") if erl else None
        if path is not None:
            found.append(ReferenceFile(algo, display, "erl_lib", "gymnasium v4", path))
    tianshou = _source_folder(reference_dir, "tianshou")
    for algo, display in REFERENCE_ALGOS["tianshou"].items():
        pattern = re.compile(rf"{re.escape(family)}-v(\d+)_{algo}\.csv", re.IGNORECASE)
        for path in sorted(tianshou.iterdir()) if tianshou else []:
            match = pattern.fullmatch(path.name)
            if match and path.is_file():
                found.append(ReferenceFile(algo, display, "tianshou", f"gym v{match[1]}", path))
                break
    alm = _source_folder(reference_dir, "alm")
    name = f"gym_{'truncated_' if truncated else ''}{_snake(family)}.csv"
    path = _find_case_insensitive(alm, name) if alm else None
    if path is not None:
        found.append(ReferenceFile("alm", "ALM", "alm", "gym v2", path))
    looked = (
        f"erl_lib/{{mbpo,sac,macura}}/{family}.csv, tianshou/{family}-v*_{{sac,td3,ppo}}.csv, "
        f"alm/{name}"
    )
    return found, looked


def _reference_curves(
    ax: Axes,
    reference_dir: Path,
    env_id: str,
    x_max: float,
    colours: dict[str, tuple[float, ...]],
    truncated: bool,
    report: Report,
) -> None:
    """Published curves (mean over seeds) as thin broken lines, cut at our last step so a
    500k-step reference does not squash a shorter run; one report line per file."""
    files, looked = reference_files(reference_dir, env_id, truncated)
    if not files:
        report(f"reference: nothing in {reference_dir} matches {env_id} (looked for {looked})")
        return
    for ref in files:
        curve, n_seeds = load_reference(ref)
        shown = curve[curve["step"] <= x_max]
        if len(shown) < 2:
            report(
                f"reference: {env_id}: {ref.display} ({ref.path}) not drawn: "
                f"{len(shown)} point(s) within this run's {x_max:.0f} steps"
            )
            continue
        ax.plot(
            shown["step"],
            shown["reward"],
            linestyle=REFERENCE_STYLES[ref.source],
            linewidth=0.9,
            alpha=0.8,
            color=colours.get(ref.algo, REFERENCE_COLOURS[ref.algo]),
            label=f"{ref.display} ({ref.source}, published)",
        )
        # erl_lib's MBPO "seeds" are evenly spaced values around a published mean (see the
        # reference README): a mean curve, not a mean of independent runs.
        banded = (ref.source, ref.algo) == ("erl_lib", "mbpo")
        what = "published mean curve" if banded else f"mean of {n_seeds} seeds"
        report(
            f"reference: {env_id}: overlaid {ref.display} from {ref.path} ({ref.source}, "
            f"{ref.version}, {what}, {len(shown)} points up to step "
            f"{float(shown['step'].max()):.0f})"
        )


def _find_case_insensitive(folder: Path, name: str) -> Path | None:
    """The file `name` in `folder` ignoring case (env folders may say `hopper`), else None."""
    if not folder.is_dir():
        return None
    for path in folder.iterdir():
        if path.name.lower() == name.lower() and path.is_file():
            return path
    return None


def load_reference(ref: ReferenceFile) -> tuple[pd.DataFrame, int]:
    """(step, reward) mean over seeds of a published file, and its number of seeds."""
    if ref.source == "erl_lib":
        curve = read_reference_curve(ref.path)
        return curve, int(pd.read_csv(ref.path, usecols=["seed"])["seed"].nunique())
    if ref.source == "tianshou":
        return read_wide_reference(ref.path, "env_step", lambda c: c.startswith("rew:seed"))
    return read_wide_reference(ref.path, "Step", lambda c: c != "Step", first_step=5000)


def read_reference_curve(path: Path) -> pd.DataFrame:
    """Mean reward over seeds per step from a long `step,time,reward,seed` file (erl_lib).

    Only steps every seed reached are kept, so the tail is never the mean of a lone seed.
    """
    try:
        data = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise UsageError(f"{path}: unparsable reference CSV ({error})") from None
    missing = [c for c in ("step", "reward", "seed") if c not in data.columns]
    if missing:
        raise UsageError(f"{path}: reference CSV lacks column(s) {', '.join(missing)}")
    grouped = data.groupby("step")["reward"].agg(["mean", "size"])
    complete = grouped[grouped["size"] == data["seed"].nunique()]
    return pd.DataFrame(
        {"step": complete.index.to_numpy(float), "reward": complete["mean"].to_numpy(float)}
    )


def read_wide_reference(
    path: Path,
    step_column: str,
    is_seed: Callable[[str], bool],
    first_step: int = 5000,
) -> tuple[pd.DataFrame, int]:
    """Mean over the seed columns of a wide file (tianshou: `env_step`, `rew:seed_*`; ALM:
    `Step` then one column per seed, or no step column: rows every `first_step` from it), at
    rows every seed reached; and the number of seeds."""
    try:
        data = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise UsageError(f"{path}: unparsable reference CSV ({error})") from None
    seeds = [c for c in data.columns if c != step_column and is_seed(str(c))]
    if not seeds:
        raise UsageError(f"{path}: reference CSV has no per-seed columns")
    if step_column in data.columns:
        steps = pd.to_numeric(data[step_column], errors="coerce")
    else:
        steps = pd.Series(first_step * np.arange(1, len(data) + 1), index=data.index)
    values = data[seeds].apply(pd.to_numeric, errors="coerce")
    complete = values.notna().all(axis=1) & steps.notna()
    curve = pd.DataFrame(
        {
            "step": steps[complete].to_numpy(float),
            "reward": values[complete].mean(axis=1).to_numpy(float),
        }
    )
    return curve, len(seeds)


# ----------------------------------------------------------------------------- delta magnitude


def _delta_figure(runs: pd.DataFrame, report: Report = _ignore) -> Figure:
    """Per (env, label) one row of two panels: model shift and model bias (after phase 2 solid,
    before it dashed, for USB-PO), and delta on a panel of its own (about 100x smaller)."""
    # Delta needs a model buffer from before the update, so it starts at the second model
    # training; the first one (from an untrained M1) would dwarf everything after it.
    runs = runs[pd.to_numeric(runs["delta"], errors="coerce").notna()]
    pairs = list(runs.groupby(["env", "label"]).groups)
    pairs.sort(key=lambda pair: (_natural_key(pair[0]), _label_key(pair[1])))
    colours = {"model_shift": "tab:blue", "model_bias": "tab:green", "delta": "tab:red"}
    fig, grid = _panel_grid(len(pairs), 2)
    any_phase2 = False
    for (left, right), (env, label) in zip(grid, pairs):
        panel = runs[(runs["env"] == env) & (runs["label"] == label)]
        algo = str(panel["algo"].iloc[0]) if "algo" in panel else str(label)
        phase2 = algo == "usbpo"
        any_phase2 |= phase2
        where = f"{env} {label} {{}}"  # names a curve in what _mean_std reports
        for index, column in enumerate(("model_shift", "model_bias")):
            words = column.replace("_", " ")
            after = f"{words}, after phase 2" if phase2 else words
            summary = _mean_std(panel, column, report, where.format(column))
            _band(left, summary, colours[column], after, index)
            before = f"{column}_before"
            if phase2 and _has_values(panel, before):
                _band(
                    left,
                    _mean_std(panel, before, report, where.format(before)),
                    colours[column],
                    f"{words}, before phase 2",
                    index + 2,
                    "--",
                )
        who = label if label == algo else f"{label} ({algo})"
        n = _seeds(panel)
        left.set_title(f"{env}: {who}, n={n} seed{'s' if n != 1 else ''}")
        left.set_ylabel("W2 estimate")
        delta = _mean_std(panel, "delta", report, where.format("delta"))
        _band(right, delta, colours["delta"], "delta", 4)
        right.axhline(0.0, color="0.5", linewidth=0.5)
        right.set_title(f"delta{' (model after phase 2)' if phase2 else ''}")
        right.set_ylabel("delta (W2 estimate)")
        for ax in (left, right):
            _steps_axis(ax)
    note = "mean ± std over seeds"
    if any_phase2:
        note += "; solid: after phase 2, dashed: before it"
    fig.suptitle(note, fontsize=8)
    _figure_legend(fig, list(grid.ravel()))
    return fig


def _has_values(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and pd.to_numeric(frame[column], errors="coerce").notna().any()


# ----------------------------------------------------------------------------- compute cost


def phase_cost_per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """Wall seconds per 1000 env steps in each phase (and `total`), per (env, label, seed).

    Each `t_*` cell holds the seconds since the previous row, so a run's total is the column sum;
    a phase a run never enters (model phases for SAC) counts as zero.
    """
    phases = [p for p in PHASES if p in runs.columns]
    numeric = runs[["env", "label", "seed", "env_step"]].copy()
    for phase in phases:
        numeric[phase] = pd.to_numeric(runs[phase], errors="coerce")
    per_run = numeric.groupby(["env", "label", "seed"]).agg(
        {**dict.fromkeys(phases, "sum"), "env_step": "max"}
    )
    per_run[phases] = per_run[phases].div(per_run["env_step"] / 1000.0, axis=0)
    per_run["total"] = per_run[phases].sum(axis=1)
    return per_run[[*phases, "total"]].reset_index()


def _cost_figure(runs: pd.DataFrame) -> Figure:
    """Bars of per-phase wall seconds per 1000 env steps, one group per phase that costs
    something plus the total, one bar per label with ± std over seeds; one panel per env."""
    per_seed = phase_cost_per_seed(runs)
    labels = _sorted(per_seed["label"], key=_label_key)
    colours = _colours(labels)
    envs = _sorted(per_seed["env"])
    fig, axes = _panels(len(envs))
    for ax, env in zip(axes, envs):
        panel = per_seed[per_seed["env"] == env]
        means = panel.groupby("label").mean(numeric_only=True)
        floor = COST_FLOOR * float(means["total"].max())
        phases = [p for p in PHASES if p in means.columns and (means[p] > floor).any()]
        groups = [*phases, "total"]
        here = [label for label in labels if label in means.index]
        width = 0.8 / len(here)
        x = np.arange(len(groups))
        for index, label in enumerate(here):
            seeds = panel[panel["label"] == label]
            n = len(seeds)
            mean = seeds[groups].mean()
            costs = (mean > floor).to_numpy()  # no bar (nor error bar) for a phase it skips
            std = seeds[groups].std(ddof=1).fillna(0.0).to_numpy(float)[costs]
            ax.bar(
                (x + (index - (len(here) - 1) / 2) * width)[costs],
                mean.to_numpy(float)[costs],
                width,
                yerr=std if n > 1 else None,
                capsize=2,
                error_kw={"elinewidth": 0.8, "capthick": 0.8},
                color=colours[label],
                label=_with_seeds(label, n, "error bar"),
            )
        ax.set_xticks(x, [PHASES.get(group, group) for group in groups])
        ax.tick_params(axis="x", labelrotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
        ax.set_title(env)
        ax.set_ylabel("Wall s per 1000 env steps")
        ax.grid(axis="y", alpha=0.25, linewidth=0.5)
    _figure_legend(fig, axes, "bars: mean over seeds; error bars: ± 1 std over seeds")
    return fig


# SAC after 1M env steps, public CleanRL benchmark (DESIGN.md "Reference numbers").
PUBLISHED_SAC = {
    "HalfCheetah": 9600.0,
    "Walker2d": 3600.0,
    "Hopper": 2300.0,
    "InvertedPendulum": 900.0,
    "Humanoid": 5000.0,
}


def sac_asymptotes(text: str | None, envs: list[str]) -> dict[str, float] | None:
    """`--sac-asymptote`: "published" (the CleanRL numbers above, for the envs that have one)
    or ENV=RETURN,... given by the user; None when there is nothing to draw."""
    if not text:
        return None
    if text == "published":
        found = {
            env: PUBLISHED_SAC[env.split("-v")[0]]
            for env in envs
            if env.split("-v")[0] in PUBLISHED_SAC
        }
        return found or None
    values = {}
    for pair in (part.strip() for part in text.split(",") if part.strip()):
        env, _, value = pair.partition("=")
        try:
            values[env.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--sac-asymptote {pair!r}: expected ENV=RETURN") from None
    return values
