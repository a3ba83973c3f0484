"""The paper's figures, drawn from the runs' CSVs (a frame from `aggregate.load_runs`).

Plotting never needs a live run, so this module imports neither torch nor gymnasium (a test
checks it) and draws headless: the Agg backend is chosen before anything else in matplotlib is
imported, and figures are `matplotlib.figure.Figure` objects that never enter pyplot's global
state, so many figures in one process leak nothing.

Figures are sized for a two-column paper: about 3.4 in wide per panel, 8-9 pt fonts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from usbpo_cli.errors import UsageError  # noqa: E402

FIGURES: dict[str, str] = {
    "learning-curves": "eval return vs env steps per env, mean ± std over seeds (paper Fig. 2)",
    "cmlo-threshold": "CMLO learning curves for each event threshold alpha (paper Fig. 1)",
    "delta-magnitude": "USB-PO's delta against model shift and model bias (paper Fig. 3)",
    "phase2-lr": "ablation: learning curves for each phase-2 learning rate",
    "phase2-terms": "ablation: learning curves with phase 2 on shift, bias or both",
    "compute-cost": "wall seconds per 1000 env steps in each phase, stacked per label",
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
REFERENCE_ALGOS: dict[str, str] = {"mbpo": "MBPO", "sac": "SAC", "macura": "MACURA"}
CURVE_TITLES: dict[str, str] = {
    "learning-curves": "{env}",
    "cmlo-threshold": "{env}: CMLO threshold",
    "phase2-lr": "{env}: phase-2 learning rate",
    "phase2-terms": "{env}: phase-2 objective",
}


def plot_figure(
    name: str,
    runs: pd.DataFrame,
    out: Path,
    reference_dir: Path | None = None,
    sac_asymptote: dict[str, float] | None = None,
) -> Path:
    """Draw figure `name` from `runs` into `out` (format from its extension) and return `out`.

    `reference_dir` (published curves, `erl_lib/{mbpo,sac,macura}/<Family>.csv`) and
    `sac_asymptote` ({env or env id: return}) are used by `learning-curves` only.
    """
    if name not in FIGURES:
        raise UsageError(f"unknown figure {name!r} (choose: {', '.join(FIGURES)})")
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(
            f"{out}: unsupported figure format {out.suffix or '(none)'!r} (use .png, .pdf or .svg)"
        )
    with matplotlib.rc_context(STYLE):
        _save(make_figure(name, runs, reference_dir, sac_asymptote), out, fmt)
    return out


def make_figure(
    name: str,
    runs: pd.DataFrame,
    reference_dir: Path | None = None,
    sac_asymptote: dict[str, float] | None = None,
) -> Figure:
    """The figure `name` as a matplotlib Figure, unsaved (for tests and notebooks)."""
    if name not in FIGURES:
        raise UsageError(f"unknown figure {name!r} (choose: {', '.join(FIGURES)})")
    if runs.empty:
        raise UsageError(f"figure {name}: there are no runs to draw")
    if reference_dir is not None and not Path(reference_dir).is_dir():
        raise UsageError(f"reference folder {reference_dir} does not exist")
    with matplotlib.rc_context(STYLE):
        if name in CURVE_TITLES:
            return _curves_figure(name, runs, reference_dir, sac_asymptote)
        if name == "delta-magnitude":
            return _delta_figure(runs)
        return _cost_figure(runs)


def _save(fig: Figure, out: Path, fmt: str) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format=fmt, dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.02)
    except OSError as error:
        raise UsageError(f"cannot write {out}: {error.strerror or error}") from None


# ----------------------------------------------------------------------------- layout helpers


def _natural_key(text: str) -> list[object]:
    """Sort `cmlo-alpha10` after `cmlo-alpha5`, as a reader expects."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def _label_key(label: str) -> tuple[bool, list[object]]:
    """USB-PO (the method under study) first, then the rest in natural order."""
    return (not str(label).startswith("usbpo"), _natural_key(label))


def _sorted(values: object, key: Callable[[str], object] = _natural_key) -> list[str]:
    return sorted(pd.unique(pd.Series(values)), key=key)


def _panels(n: int) -> tuple[Figure, list[Axes]]:
    """A grid of n panels at column width each, constrained layout (tight, legend included)."""
    columns = min(n, MAX_COLUMNS)
    rows = -(-n // columns)
    fig = Figure(figsize=(PANEL_WIDTH_IN * columns, PANEL_HEIGHT_IN * rows), layout="constrained")
    grid = fig.subplots(rows, columns, squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _steps_axis(ax: Axes) -> None:
    ax.set_xlabel("Env steps")
    ax.xaxis.set_major_formatter(FuncFormatter(_format_steps))
    ax.grid(alpha=0.25, linewidth=0.5)


def _format_steps(value: float, _position: int) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _figure_legend(fig: Figure, axes: list[Axes]) -> None:
    """One legend for all panels, below them: panels share their labels and stay uncluttered."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        columns = min(len(handles), 2 if len(axes) == 1 else 4)
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=columns,
            frameon=False,
        )


def _colours(labels: list[str]) -> dict[str, tuple[float, ...]]:
    """One colour per label across every panel, so a label reads the same everywhere."""
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _mean_std(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean and std (ddof 1; 0 with one seed) of `column` over seeds at each env step."""
    values = frame[["env_step", column]].dropna()
    summary = values.groupby("env_step")[column].agg(["mean", "std"]).reset_index()
    summary["std"] = summary["std"].fillna(0.0)
    return summary


def _band(ax: Axes, summary: pd.DataFrame, colour: object, label: str) -> None:
    x, mean, std = summary["env_step"], summary["mean"], summary["std"]
    ax.plot(x, mean, color=colour, label=label)
    ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)


def _has_values(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and pd.to_numeric(frame[column], errors="coerce").notna().any()


# ----------------------------------------------------------------------------- learning curves


def _curves_figure(
    name: str,
    runs: pd.DataFrame,
    reference_dir: Path | None,
    sac_asymptote: dict[str, float] | None,
) -> Figure:
    """Eval return against env steps, one panel per env, one band per label."""
    runs = _curve_labels(name, runs)
    labels = _sorted(runs["label"], key=_label_key)
    colours = _colours(labels)
    envs = _sorted(runs["env"])
    fig, axes = _panels(len(envs))
    for ax, env in zip(axes, envs):
        panel = runs[runs["env"] == env]
        for label in labels:
            seeds = panel[panel["label"] == label]
            if not seeds.empty:
                _band(ax, _mean_std(seeds, "eval_return_mean"), colours[label], label)
        if name == "learning-curves":
            env_id = str(panel["env_id"].iloc[0]) if "env_id" in panel else env
            x_max = float(panel["env_step"].max())
            if reference_dir is not None:
                _reference_curves(ax, Path(reference_dir), env_id, x_max, colours)
            _asymptote(ax, sac_asymptote, env, env_id)
        ax.set_title(CURVE_TITLES[name].format(env=env))
        ax.set_ylabel("Eval return")
        _steps_axis(ax)
    _figure_legend(fig, axes)
    return fig


def _curve_labels(name: str, runs: pd.DataFrame) -> pd.DataFrame:
    """The CMLO figure shows the `cmlo*` labels when there are any; the rest show every label."""
    if name == "cmlo-threshold":
        cmlo = runs[runs["label"].astype(str).str.startswith("cmlo")]
        if not cmlo.empty:
            return cmlo
    return runs


def _asymptote(ax: Axes, asymptotes: dict[str, float] | None, env: str, env_id: str) -> None:
    if not asymptotes:
        return
    value = asymptotes.get(env, asymptotes.get(env_id))
    if value is not None:
        ax.axhline(float(value), color="0.3", linestyle="--", linewidth=0.9, label="SAC asymptote")


def _reference_curves(
    ax: Axes,
    reference_dir: Path,
    env_id: str,
    x_max: float,
    colours: dict[str, tuple[float, ...]],
) -> None:
    """Published erl_lib curves (mean over seeds) as thin dotted lines, cut at our last step so
    a 500k-step reference does not squash a shorter run. Missing files are skipped."""
    family = env_id.split("-v")[0]
    for algo, display in REFERENCE_ALGOS.items():
        path = _find_case_insensitive(reference_dir / "erl_lib" / algo, f"{family}.csv")
        if path is None:
            continue
        curve = read_reference_curve(path)
        curve = curve[curve["step"] <= x_max]
        if curve.empty:
            continue
        ax.plot(
            curve["step"],
            curve["reward"],
            linestyle=":",
            linewidth=1.0,
            color=colours.get(algo, "0.45"),
            label=f"{display} (erl_lib, published)",
        )


def _find_case_insensitive(folder: Path, name: str) -> Path | None:
    """The file `name` in `folder` ignoring case (env folders may say `hopper`), else None."""
    if not folder.is_dir():
        return None
    for path in folder.iterdir():
        if path.name.lower() == name.lower() and path.is_file():
            return path
    return None


def read_reference_curve(path: Path) -> pd.DataFrame:
    """Mean reward over seeds per step from a long `step,time,reward,seed` file.

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


# ----------------------------------------------------------------------------- delta magnitude


def _delta_figure(runs: pd.DataFrame) -> Figure:
    """Delta, model shift and model bias against env steps, one panel per (env, label)."""
    missing = [c for c in DELTA_COLUMNS if not _has_values(runs, c)]
    if missing:
        raise UsageError(
            f"figure delta-magnitude needs column(s) {', '.join(missing)} with values; the runs "
            f"(labels {', '.join(_sorted(runs['label']))}) have none (they are written by "
            "model-based runs such as usbpo)"
        )
    runs = _delta_runs(runs)
    pairs = list(runs.groupby(["env", "label"]).groups)
    pairs.sort(key=lambda pair: (_natural_key(pair[0]), _natural_key(pair[1])))
    colours = dict(zip(DELTA_COLUMNS, ("tab:red", "tab:blue", "tab:green")))
    names = {"delta": "delta", "model_shift": "model shift", "model_bias": "model bias"}
    several_labels = runs["label"].nunique() > 1
    fig, axes = _panels(len(pairs))
    for ax, (env, label) in zip(axes, pairs):
        panel = runs[(runs["env"] == env) & (runs["label"] == label)]
        for column in DELTA_COLUMNS:
            if _has_values(panel, column):
                _band(ax, _mean_std(panel, column), colours[column], names[column])
        ax.axhline(0.0, color="0.5", linewidth=0.5)
        ax.set_title(f"{env}: {label}" if several_labels else env)
        ax.set_ylabel("W2 estimate")
        _steps_axis(ax)
    _figure_legend(fig, axes)
    return fig


def _delta_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The usbpo* labels with values, else every label that logged the model columns."""
    logged = runs.groupby("label")[list(DELTA_COLUMNS)].apply(lambda g: g.notna().any().all())
    with_values = [label for label, ok in logged.items() if ok]
    if not with_values:
        raise UsageError(
            "figure delta-magnitude needs delta, model_shift and model_bias from one label; "
            "no label has all three"
        )
    usbpo = [label for label in with_values if str(label).startswith("usbpo")]
    chosen = runs[runs["label"].isin(usbpo or with_values)]
    # Delta needs a model buffer from before the update, so it starts at the second model
    # training; the first one (from an untrained M1) would dwarf everything after it.
    return chosen[pd.to_numeric(chosen["delta"], errors="coerce").notna()]


# ----------------------------------------------------------------------------- compute cost


def phase_cost(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of wall seconds per 1000 env steps in each phase, per (env, label).

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
    return per_run[phases].groupby(level=["env", "label"]).mean().reset_index()


def _cost_figure(runs: pd.DataFrame) -> Figure:
    """Stacked bars of per-phase wall seconds per 1000 env steps, one panel per env."""
    if not any(_has_values(runs, p) for p in PHASES):
        raise UsageError(
            f"figure compute-cost needs the timing columns {', '.join(PHASES)}; the runs have none"
        )
    cost = phase_cost(runs)
    phases = [p for p in PHASES if p in cost.columns and cost[p].gt(0).any()]
    colours = dict(zip(PHASES, matplotlib.colormaps["tab10"].colors))
    envs = _sorted(cost["env"])
    fig, axes = _panels(len(envs))
    for ax, env in zip(axes, envs):
        panel = cost[cost["env"] == env]
        panel = panel.iloc[
            sorted(range(len(panel)), key=lambda i: _label_key(panel["label"].iloc[i]))
        ]
        _stacked_bars(ax, panel, phases, colours)
        ax.set_title(env)
        ax.set_ylabel("Wall s per 1000 env steps")
        ax.grid(axis="y", alpha=0.25, linewidth=0.5)
    _figure_legend(fig, axes)
    return fig


def _stacked_bars(
    ax: Axes, panel: pd.DataFrame, phases: list[str], colours: dict[str, object]
) -> None:
    x = np.arange(len(panel))
    bottom = np.zeros(len(panel))
    for phase in phases:
        heights = panel[phase].fillna(0.0).to_numpy(float)
        ax.bar(x, heights, 0.7, bottom=bottom, color=colours[phase], label=PHASES[phase])
        bottom += heights
    ax.set_xticks(x, [str(label) for label in panel["label"]])
    if len(panel) > 3 or max(len(str(label)) for label in panel["label"]) > 8:
        ax.tick_params(axis="x", labelrotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
