"""Read finished runs back from their CSVs and summarise them across seeds.

Everything here works from `progress.csv` (and `config.json` where present) alone, so `compare`
tables and `plot` figures can be made on any machine: this module must never import torch or
gymnasium (a test checks it), and the run layer's CSV reader it uses (`runs/csvlog.py`)
imports neither.

Run folders follow `<root>/<experiment...>/<env>/<label>/seed<k>/`. `label` is the algorithm for
`compare` and the variant name (`usbpo-lr1e-4`, `phase2-shift`, ...) for ablations; every table
groups by it.

Statistics follow Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice"):
interquartile mean (IQM) with stratified-bootstrap confidence intervals and the probability of
improvement. They are implemented on scipy here because rliable does not install with our pins.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from usbpo_cli.errors import UsageError
from usbpo_cli.runs.csvlog import read_csv_rows
from usbpo_cli.runs.folders import write_text_atomic

REQUIRED_COLUMNS: tuple[str, ...] = ("env_step", "eval_return_mean")
# Columns load_runs adds to identify a run; everything else in the frame comes from the CSV.
ID_COLUMNS: tuple[str, ...] = ("env", "label", "seed", "env_id", "run")
METRICS: tuple[str, ...] = ("final", "auc")
_SEED_FOLDER = re.compile(r"seed(\d+)")


# ----------------------------------------------------------------------------- loading


def progress_paths(root: Path) -> list[Path]:
    """Every progress.csv under `root`, sorted; a missing folder, a file, or a folder without
    any is a `UsageError`. Hidden folders (e.g. `.cache`, or files a user set aside) hold no
    current results and are skipped."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"runs folder {root} does not exist")
    if not root.is_dir():
        raise UsageError(f"runs folder {root} is a file, not a folder")
    paths = sorted(
        p
        for p in root.rglob("progress.csv")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not paths:
        raise UsageError(f"no progress.csv found under {root}")
    return paths


def load_runs(root: Path) -> pd.DataFrame:
    """Every `progress.csv` below `root` as one tidy frame, one row per evaluation.

    Adds `env`, `label`, `seed` (from the folder names, else from `config.json`), `env_id` (the
    gymnasium id from `config.json`, else `env`: reference curves are matched on it) and `run`
    (the run folder). Sorted by env, label, seed, env_step. Any unreadable file is a
    `UsageError` naming it: a table silently missing a seed would be worse than no table.
    """
    return load_progress(progress_paths(root))


def load_progress(paths: list[Path]) -> pd.DataFrame:
    """The given `progress.csv` files as `load_runs` reads them: identity columns added, two
    folders claiming one (env, label, seed) refused, sorted by env, label, seed, env_step."""
    frames = [_with_identity(read_progress(path), path) for path in paths]
    runs = pd.concat(frames, ignore_index=True)
    _check_unique_runs(runs)
    runs = runs.sort_values(["env", "label", "seed", "env_step"], kind="stable")
    return runs.reset_index(drop=True)


def read_progress(path: Path) -> pd.DataFrame:
    """One `progress.csv` as numbers, refusing anything a summary could silently get wrong."""
    rows = read_csv_rows(path)
    header, body = rows[0][1], [row for _, row in rows[1:]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UsageError(f"{path}: missing required column(s) {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise UsageError(f"{path}: unparsable header (repeated column names)")
    if not body:
        raise UsageError(f"{path}: has a header but no evaluation rows yet")
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise UsageError(
                f"{path}: truncated or malformed row at line {line} "
                f"({len(row)} fields, header has {len(header)})"
            )
    frame = pd.DataFrame(body, columns=header)
    for column in header:
        frame[column] = _to_numbers(
            frame[column], path, column, required=column in REQUIRED_COLUMNS
        )
    _check_increasing(frame["env_step"], path)
    if (frame["env_step"] % 1 == 0).all():
        frame["env_step"] = frame["env_step"].astype("int64")
    return frame


def _to_numbers(values: pd.Series, path: Path, column: str, required: bool) -> pd.Series:
    """Numeric column; empty cells are NaN. Required columns must be finite everywhere.

    A non-numeric optional column is kept as text rather than refused, so a column added to the
    schema later never breaks reading older tools' output.
    """
    stripped = values.str.strip()
    numbers = pd.to_numeric(stripped.where(stripped != "", None), errors="coerce").astype(float)
    if required:
        bad = ~np.isfinite(numbers.to_numpy())
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise UsageError(
                f"{path}: {column} must be a finite number, got {values.iloc[index]!r} "
                f"at line {index + 2}"
            )
        return numbers
    if (numbers.isna() & (stripped != "")).any():
        return values
    return numbers


def _check_increasing(steps: pd.Series, path: Path) -> None:
    """Rows are appended once per evaluation, so env_step only grows; anything else means two
    runs were written into one file and every curve and AUC from it would be wrong."""
    diffs = np.diff(steps.to_numpy())
    if (diffs <= 0).any():
        line = int(np.flatnonzero(diffs <= 0)[0]) + 3
        raise UsageError(f"{path}: env_step does not increase at line {line}")


def _read_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a run, or {} when there is none: folder names usually suffice."""
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError(f"{path}: unparsable JSON") from None
    return data if isinstance(data, dict) else {}


def run_identity(run_dir: Path) -> tuple[str, str, int, str]:
    """(env, label, seed, env_id) of a run folder.

    A folder named `seed<k>` (or `seed<k>-<suffix>`, as `make demo` writes) fixes the layout
    `<env>/<label>/seed<k>`; any other folder needs `config.json` with `env_id`, `algo`, `seed`.
    """
    config = _read_config(run_dir)
    match = _SEED_FOLDER.match(run_dir.name)
    if match and run_dir.parent.name and run_dir.parent.parent.name:
        env, label, seed = run_dir.parent.parent.name, run_dir.parent.name, int(match[1])
    else:
        missing = [key for key in ("env_id", "algo", "seed") if key not in config]
        if missing:
            raise UsageError(
                f"{run_dir / 'progress.csv'}: cannot tell env, label and seed: the folder is not "
                f"<env>/<label>/seed<k> and config.json lacks {', '.join(missing)}"
            )
        env, label = str(config["env_id"]), str(config["algo"])
        try:
            seed = int(config["seed"])
        except (TypeError, ValueError):
            raise UsageError(f"{run_dir / 'config.json'}: seed is not an integer") from None
    return env, label, seed, str(config.get("env_id", env))


def _with_identity(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    env, label, seed, env_id = run_identity(path.parent)
    ids = {"env": env, "label": label, "seed": seed, "env_id": env_id, "run": str(path.parent)}
    return pd.concat([pd.DataFrame(ids, index=frame.index), frame], axis=1)


def _check_unique_runs(runs: pd.DataFrame) -> None:
    """Two folders claiming the same (env, label, seed) would be averaged as one seed."""
    folders = runs.groupby(["env", "label", "seed"])["run"].unique()
    for (env, label, seed), found in folders.items():
        if len(found) > 1:
            raise UsageError(
                f"two runs claim env {env}, label {label}, seed {seed}: "
                f"{found[0]}/progress.csv and {found[1]}/progress.csv"
            )


# ----------------------------------------------------------------------------- per-seed scores


def final_and_auc(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (env, label, seed): the last evaluation return and the normalised AUC.

    AUC is the mean evaluation return over evaluation points, so it rewards learning early and is
    on the same scale as the return; it is comparable only between runs evaluated on the same
    step grid, as runs of one `compare` grid are.
    """
    ordered = runs.sort_values(["env", "label", "seed", "env_step"], kind="stable")
    grouped = ordered.groupby(["env", "label", "seed"], sort=True)
    scores = grouped.agg(
        final=("eval_return_mean", "last"),
        auc=("eval_return_mean", "mean"),
        final_step=("env_step", "last"),
        n_evals=("env_step", "size"),
    )
    return scores.reset_index()


def tidy_results(runs: pd.DataFrame) -> pd.DataFrame:
    """The frame `compare` writes as results.csv: env, algo (= label), seed, env_step, then every
    metric column in the CSV's own order, one row per evaluation of every run."""
    metrics = [c for c in runs.columns if c not in ID_COLUMNS and c != "env_step"]
    tidy = runs[["env", "label", "seed", "env_step", *metrics]].rename(columns={"label": "algo"})
    return tidy.reset_index(drop=True)


# ----------------------------------------------------------------------------- statistics


def iqm(x: np.ndarray | Sequence[float], axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50%. Robust to one outlier seed, yet far less
    noisy than the median with the 5-10 seeds RL papers can afford."""
    return stats.trim_mean(np.asarray(x, dtype=float), 0.25, axis=axis)


def bootstrap_ci(
    samples_per_task: Sequence[np.ndarray],
    statistic: Callable[..., Any],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Stratified percentile-bootstrap CI of `statistic` over all tasks' scores pooled.

    Seeds are resampled within each task independently (scipy's multi-sample bootstrap), so every
    resample keeps each task's weight. Returns (nan, nan) when a task has fewer than two scores: a
    CI from one seed would be a falsely precise point.
    """
    samples = tuple(np.asarray(s, dtype=float).ravel() for s in samples_per_task)
    if not samples or any(len(s) < 2 for s in samples):
        return float("nan"), float("nan")
    if all(np.all(s == s[0]) for s in samples):
        value = float(statistic(np.concatenate(samples)))
        return value, value  # every resample gives this value: skip drawing them
    result = stats.bootstrap(
        samples,
        _pooled(statistic),
        n_resamples=n_resamples,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _pooled(statistic: Callable[..., Any]) -> Callable[..., Any]:
    """Vectorised `statistic(*samples, axis)` applying `statistic` to the samples concatenated."""
    takes_axis = "axis" in inspect.signature(statistic).parameters

    def pooled(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        joined = np.concatenate(samples, axis=axis)
        if takes_axis:
            return np.asarray(statistic(joined, axis=axis))
        return np.apply_along_axis(statistic, axis, joined)

    return pooled


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + 0.5 P(X = Y) over all pairs of scores (the Mann-Whitney U statistic divided by
    the number of pairs, as rliable computes it for one task)."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if not len(x) or not len(y):
        raise ValueError("probability of improvement needs at least one score on each side")
    greater = (x[:, None] > y[None, :]).mean()
    equal = (x[:, None] == y[None, :]).mean()
    return float(greater + 0.5 * equal)


def probability_of_improvement_ci(
    x_per_task: Sequence[np.ndarray],
    y_per_task: Sequence[np.ndarray],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, low, high) of the average over tasks of P(X > Y), with a stratified bootstrap
    CI resampling X's and Y's seeds independently within each task (as rliable does)."""
    if len(x_per_task) != len(y_per_task) or not x_per_task:
        raise ValueError("need the same, non-zero number of tasks for X and Y")
    xs = [np.asarray(s, dtype=float).ravel() for s in x_per_task]
    ys = [np.asarray(s, dtype=float).ravel() for s in y_per_task]
    n = len(xs)

    def average(*samples: np.ndarray) -> float:
        pairs = zip(samples[:n], samples[n:])
        return float(np.mean([probability_of_improvement(a, b) for a, b in pairs]))

    estimate = average(*xs, *ys)
    if any(len(s) < 2 for s in xs + ys):
        return estimate, float("nan"), float("nan")
    if all(np.all(s == s[0]) for s in xs + ys):
        return estimate, estimate, estimate
    result = stats.bootstrap(
        (*xs, *ys),
        average,
        n_resamples=n_resamples,
        vectorized=False,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return estimate, float(result.confidence_interval.low), float(result.confidence_interval.high)


# ----------------------------------------------------------------------------- tables


def summary_table(
    runs: pd.DataFrame,
    metric: str = "final",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per env and label: n seeds, mean, std (ddof 1), IQM and its bootstrap CI (ci_low, ci_high)
    of the per-seed `metric` ("final" or "auc"). std and the CI are NaN with one seed."""
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r} (choose: {', '.join(METRICS)})")
    columns = ["env", "label", "n", "mean", "std", "iqm", "ci_low", "ci_high"]
    rows = []
    for (env, label), group in final_and_auc(runs).groupby(["env", "label"], sort=True):
        values = group[metric].to_numpy(dtype=float)
        low, high = bootstrap_ci([values], iqm, confidence, n_resamples, seed)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        rows.append([env, label, len(values), values.mean(), std, float(iqm(values)), low, high])
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------- saved tables

# Columns that count something (steps, epochs, seeds): written as integers, never as 1000.0.
INTEGER_COLUMNS: tuple[str, ...] = (
    "env_step",
    "epoch",
    "seed",
    "n_seeds",
    "n",
    "model_epochs",
    "model_trainings",
    "phase2_steps",
    "rollout_length",
    "model_update_step",
    "final_step",
    "n_evals",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
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
)


def with_integer_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each INTEGER_COLUMNS column that holds only whole numbers (or empty cells)
    as a nullable integer, so CSV shows 1000, not 1000.0, and an empty cell stays empty. A
    column that is a mean over several trainings (model_epochs 12.5) stays a float."""
    frame = frame.copy()
    for column in INTEGER_COLUMNS:
        if column not in frame.columns or not pd.api.types.is_numeric_dtype(frame[column]):
            continue
        values = frame[column].to_numpy(dtype=float)
        present = values[~np.isnan(values)]
        if np.all(np.isfinite(present)) and np.all(present % 1 == 0):
            frame[column] = frame[column].astype("Int64")
    return frame


def csv_text(frame: pd.DataFrame) -> str:
    """A frame as CSV text: integer columns as integers, empty cells where a value is NaN."""
    return with_integer_columns(frame).to_csv(index=False)


def grid_summary(
    runs: pd.DataFrame,
    reference: str | None = "usbpo",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """The table `compare` and `ablate` save as summary.csv: per env and algo (label), the
    number of seeds, the final return's mean, std, IQM and its bootstrap CI, the AUC's mean and
    std, and P(`reference` > algo) on the final return. std and the CI are empty with one seed;
    the probability is empty for the reference itself or where the env has no reference run."""
    final = summary_table(runs, "final", confidence, n_resamples, seed)
    auc = summary_table(runs, "auc", confidence, n_resamples, seed).set_index(["env", "label"])
    scores = final_and_auc(runs)
    rows = []
    for _, row in final.iterrows():
        env, label = row["env"], row["label"]
        in_env = scores[scores["env"] == env]
        ours = in_env[in_env["label"] == reference]["final"].to_numpy(dtype=float)
        theirs = in_env[in_env["label"] == label]["final"].to_numpy(dtype=float)
        better = (
            probability_of_improvement(ours, theirs)
            if reference is not None and label != reference and len(ours) and len(theirs)
            else float("nan")
        )
        rows.append(
            [
                env,
                label,
                int(row["n"]),
                row["mean"],
                row["std"],
                row["iqm"],
                row["ci_low"],
                row["ci_high"],
                auc.loc[(env, label), "mean"],
                auc.loc[(env, label), "std"],
                better,
            ]
        )
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    summary["n_seeds"] = summary["n_seeds"].astype("int64")
    return summary


def write_grid_report(
    out: Path, labels: set[tuple[str, str]], reference: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write a grid's results.csv (every row) and summary.csv (per env and algo) from the runs
    of `labels` ((env, label) pairs) under `out`; returns the summary and the AUC table (indexed
    by env and label) for printing."""
    runs = load_runs(out)
    runs = runs[[pair in labels for pair in zip(runs["env"], runs["label"])]]
    write_text_atomic(out / "results.csv", csv_text(tidy_results(runs)))
    summary = grid_summary(runs, reference)
    write_text_atomic(out / "summary.csv", csv_text(summary))
    return summary, summary_table(runs, "auc").set_index(["env", "label"])
