"""Every number of RESULTS.md's HalfCheetah-v4 section (issue 16), recomputed from the CSVs.

Reads the grid's committed run folders (config.json and progress.csv of each seed) and the
published curves of ../shared/reference/erl_lib, and prints, as Markdown:
1. the summary table: per algo, seeds, final return (mean and std, IQM with its 95%
   bootstrap CI) and AUC (IQM with its CI), and P(USB-PO > algo) with its CI, on both;
2. our MBPO (and SAC) mean evaluation return at 10k, 15k and 20k env steps next to the
   published mean curve at the same steps (erl_lib's MBPO: a mean curve with a band, read at
   its nearest point and interpolated; erl_lib's SAC: 8 real seeds);
3. every evaluation of our MBPO from 10k env steps on against the published band there
   (interpolated), and per seed how many fall below, inside and above it;
4. USB-PO against MBPO at every evaluation both have: each seed's return, the means and the
   difference of the means;
5. wall time per run and per phase (the t_* columns summed over rows), in hours, and the
   run's seconds per 1000 env steps after its random exploration.
Runs still going count with the rows they have; a column says how far each got.

usage: python benchmarks/halfcheetah_report.py [--runs benchmarks/runs/halfcheetah-20k]
       [--reference ../shared/reference]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from usbpo_cli.experiments.aggregate import (
    bootstrap_ci,
    final_and_auc,
    iqm,
    load_runs,
    probability_of_improvement_ci,
)
from usbpo_cli.experiments.plots import load_reference, reference_files, with_run_info

ROOT = Path(__file__).resolve().parents[1]
ENV = "HalfCheetah-v4"
CHECK_STEPS = (10_000, 15_000, 20_000)
PHASES = ("t_env", "t_model_phase1", "t_model_phase2", "t_rollout", "t_policy", "t_eval")


def ci_text(values: np.ndarray) -> str:
    """IQM [95% CI] of per-seed values (the CI needs two seeds)."""
    low, high = bootstrap_ci([values], iqm, 0.95, 2000, 0)
    centre = float(iqm(values))
    if np.isnan(low):
        return f"{centre:.0f}"
    return f"{centre:.0f} [{low:.0f}, {high:.0f}]"


def summary(runs: pd.DataFrame) -> list[str]:
    scores = final_and_auc(runs[runs["env"] == ENV])
    lines = [
        "| algo | seeds (env steps reached) | final mean ± std | final IQM [95% CI] | "
        "AUC IQM [95% CI] | P(USB-PO > algo), final [CI] | P(USB-PO > algo), AUC [CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    ours = scores[scores["label"] == "usbpo"]
    for label, group in scores.groupby("label", sort=True):
        final = group["final"].to_numpy(float)
        std = f"{np.std(final, ddof=1):.0f}" if len(final) > 1 else "-"
        reached = ", ".join(str(int(s)) for s in group["final_step"])
        better = ["-", "-"]
        if label != "usbpo" and len(ours):
            for i, metric in enumerate(("final", "auc")):
                p, low, high = probability_of_improvement_ci(
                    [ours[metric].to_numpy(float)], [group[metric].to_numpy(float)]
                )
                better[i] = f"{p:.2f}" + ("" if np.isnan(low) else f" [{low:.2f}, {high:.2f}]")
        lines.append(
            f"| {label} | {len(final)} ({reached}) | {final.mean():.0f} ± {std} | "
            f"{ci_text(final)} | {ci_text(group['auc'].to_numpy(float))} | "
            f"{better[0]} | {better[1]} |"
        )
    return lines


def at_step(curve: pd.DataFrame, step: int) -> tuple[float, float, float]:
    """(nearest step, its value, the value interpolated at `step`) of a (step, reward) curve."""
    nearest = curve.iloc[int(np.argmin(np.abs(curve["step"].to_numpy(float) - step)))]
    interpolated = float(np.interp(step, curve["step"], curve["reward"]))
    return float(nearest["step"]), float(nearest["reward"]), interpolated


def erl_lib_files(reference: Path) -> dict:
    """{algo: ReferenceFile} of erl_lib's published HalfCheetah curves under `reference`."""
    return {ref.algo: ref for ref in reference_files(reference, ENV)[0] if ref.source == "erl_lib"}


def published(runs: pd.DataFrame, reference: Path) -> list[str]:
    files = erl_lib_files(reference)
    lines = [
        "| algo | env steps | ours: mean (per seed) | published mean: nearest point (step) | "
        "published, interpolated | published min-max |",
        "|---|---|---|---|---|---|",
    ]
    for label in ("mbpo", "sac"):
        ours = runs[(runs["env"] == ENV) & (runs["label"] == label)]
        ref = files.get(label)
        if ref is None or ours.empty:
            continue
        curve, _ = load_reference(ref)
        raw = pd.read_csv(ref.path)
        for step in CHECK_STEPS:
            rows = ours[ours["env_step"] == step].sort_values("seed")
            if rows.empty:
                continue
            values = rows["eval_return_mean"].to_numpy(float)
            seeds = ", ".join(f"{v:.0f}" for v in values)
            near_step, near, interpolated = at_step(curve, step)
            if abs(near_step - step) > 0.1 * step:  # erl_lib's SAC: every 10k steps only
                lines.append(f"| {label} | {step} | {values.mean():.0f} ({seeds}) | "
                             "(not evaluated there) | - | - |")  # fmt: skip
                continue
            band = raw[raw["step"] == near_step]["reward"]
            lines.append(
                f"| {label} | {step} | {values.mean():.0f} ({seeds}) | {near:.0f} "
                f"({near_step:.0f}) | {interpolated:.0f} | {band.min():.0f} to {band.max():.0f} |"
            )
    return lines


def band_at(per_step: pd.DataFrame, step: float) -> tuple[float, float, float]:
    """(low, mean, high) of a published mean curve with a band (erl_lib's MBPO: per step, the
    "seeds" are values spread around the mean), each interpolated linearly at `step`;
    `per_step` has the columns step, min, mean and max."""
    steps = per_step["step"].to_numpy(float)
    return tuple(float(np.interp(step, steps, per_step[c])) for c in ("min", "mean", "max"))


def within_band(runs: pd.DataFrame, reference: Path, label: str = "mbpo") -> list[str]:
    """Every evaluation of our `label` from 10k env steps (before that the published MBPO
    curve is interpolation, reference README) to the curve's last step, against the published
    band there: each seed's value marked below (v) or above (^) the band, then per seed how
    many of its evaluations fall below, inside and above."""
    files = erl_lib_files(reference)
    ours = runs[(runs["env"] == ENV) & (runs["label"] == label)]
    if label not in files or ours.empty:
        return []
    raw = pd.read_csv(files[label].path)
    per_step = raw.groupby("step")["reward"].agg(["min", "mean", "max"]).reset_index()
    last = float(raw["step"].max())
    ours = ours[(ours["env_step"] >= 10_000) & (ours["env_step"] <= last)]
    if ours.empty:
        return []
    seeds = sorted(int(s) for s in ours["seed"].unique())
    lines = [
        f"| env steps | published band (mean) | {' | '.join(f'seed {s}' for s in seeds)} |",
        "|---|---|" + "---|" * len(seeds),
    ]
    counts = {s: [0, 0, 0] for s in seeds}  # below, inside, above
    for step, at in ours.groupby("env_step", sort=True):
        low, mean, high = band_at(per_step, float(step))
        cells = []
        for seed in seeds:
            value = at.loc[at["seed"] == seed, "eval_return_mean"]
            if value.empty:
                cells.append("")
                continue
            v = float(value.iloc[0])
            where = 0 if v < low else 2 if v > high else 1
            counts[seed][where] += 1
            cells.append(f"{v:.0f}{' v' if where == 0 else ' ^' if where == 2 else ''}")
        lines.append(
            f"| {int(step)} | {low:.0f} to {high:.0f} ({mean:.0f}) | {' | '.join(cells)} |"
        )
    lines.append("")
    for seed, (below, inside, above) in counts.items():
        total = below + inside + above
        lines.append(
            f"- seed {seed}: {inside} of {total} evaluations inside the band, {below} below, "
            f"{above} above"
        )
    return lines


def head_to_head(runs: pd.DataFrame, ours: str = "usbpo", other: str = "mbpo") -> list[str]:
    """`ours` against `other` at every evaluation step both have from the first learning step
    on: each seed's return, the mean over the seeds present at that step, and ours minus other
    (so that the reading's per-step numbers come from the CSVs, not from a hand copy)."""
    runs = with_run_info(runs[runs["env"] == ENV])  # initial_steps from each config.json
    a, b = runs[runs["label"] == ours], runs[runs["label"] == other]
    if a.empty or b.empty:
        return []
    start = pd.concat([a, b])["initial_steps"].max()
    steps = sorted(set(a["env_step"]) & set(b["env_step"]))
    lines = [
        f"| env steps | {ours}: mean (per seed) | {other}: mean (per seed) | {ours} - {other} |",
        "|---|---|---|---|",
    ]
    for step in (s for s in steps if s > start):
        cells, means = [], []
        for frame in (a, b):
            at = frame[frame["env_step"] == step].sort_values("seed")["eval_return_mean"]
            values = at.to_numpy(float)
            means.append(values.mean())
            cells.append(f"{values.mean():.0f} ({', '.join(f'{v:.0f}' for v in values)})")
        lines.append(f"| {int(step)} | {cells[0]} | {cells[1]} | {means[0] - means[1]:+.0f} |")
    return lines


def wall_times(runs: pd.DataFrame) -> list[str]:
    header = " | ".join(p[2:] for p in PHASES)
    lines = [
        f"| run | env steps | wall h | {header} | policy share | s per 1000 learning steps |",
        "|---|---|---|" + "---|" * len(PHASES) + "---|---|",
    ]
    runs = with_run_info(runs[runs["env"] == ENV])  # initial_steps from each config.json
    for (label, seed), run in runs.groupby(["label", "seed"], sort=True):
        run = run.sort_values("env_step")
        last = run.iloc[-1]
        sums = [run[p].sum() / 3600 if p in run else 0.0 for p in PHASES]
        phases = " | ".join(f"{s:.2f}" for s in sums)
        share = sums[PHASES.index("t_policy")] / max(1e-9, sum(sums))
        # Seconds per 1000 env steps once learning runs: from the row at the end of the random
        # exploration to the last row (the machine's rate; the exploration costs next to nothing).
        begin = run[run["env_step"] <= run["initial_steps"].iloc[0]]
        rate = "-"
        if not begin.empty and last["env_step"] > begin.iloc[-1]["env_step"]:
            span = last["env_step"] - begin.iloc[-1]["env_step"]
            rate = f"{(last['wall_time_s'] - begin.iloc[-1]['wall_time_s']) / span * 1000:.0f}"
        lines.append(
            f"| {label} seed{seed} | {int(last['env_step'])} | {last['wall_time_s'] / 3600:.2f} | "
            f"{phases} | {share:.0%} | {rate} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks/runs/halfcheetah-20k")
    parser.add_argument("--reference", type=Path, default=ROOT.parent / "shared/reference")
    args = parser.parse_args()
    # config.json read once here; head_to_head and wall_times find the columns and reuse them
    runs = with_run_info(load_runs(args.runs))
    for title, lines in (
        ("Summary (final = last evaluation; AUC = mean over evaluations)", summary(runs)),
        ("Against the published curves (erl_lib, gymnasium v4)", published(runs, args.reference)),
        (
            "Our MBPO at each evaluation against the published MBPO band (v below, ^ above)",
            within_band(runs, args.reference),
        ),
        ("USB-PO against MBPO at each evaluation after the random exploration", head_to_head(runs)),
        ("Wall time (hours; phases summed over the rows of progress.csv)", wall_times(runs)),
    ):
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
