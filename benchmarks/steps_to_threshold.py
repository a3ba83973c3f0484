"""Env steps each run needs to first reach an eval return, read from run folders' CSVs only.

Why a separate table: `usbpo compare` summarises final and mean returns on one budget, while
the baselines here ran on different budgets (model-free ones need longer), and the question
asked of them is how soon each passes the task's bar.

usage: python benchmarks/steps_to_threshold.py ROOT [ROOT ...] [--threshold 900]
       [--steps 5000,10000,20000,30000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from usbpo_cli.experiments.aggregate import load_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="run roots (as `compare --out`)")
    parser.add_argument("--threshold", type=float, default=900.0)
    parser.add_argument(
        "--steps", default="5000,10000,20000,30000", help="env steps for the return columns"
    )
    args = parser.parse_args()
    columns = [int(s) for s in args.steps.split(",")]
    print(
        f"| algo (root) | budget | first env step with eval return >= {args.threshold:.0f}, "
        f"per seed | mean wall time per run (s) | "
        + " | ".join(f"return at {c // 1000}k" for c in columns)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(columns))
    for root in args.roots:
        runs = load_runs(root)
        for label, group in runs.groupby("label"):
            firsts, walls, budget = [], [], 0
            at_step: dict[int, list[float]] = {c: [] for c in columns}
            for _, run in group.groupby("seed"):
                hit = run[run.eval_return_mean >= args.threshold]
                firsts.append(str(int(hit.env_step.min())) if len(hit) else "never")
                walls.append(run.wall_time_s.max())
                budget = max(budget, int(run.env_step.max()))
                for c in columns:  # the last evaluation at or before c
                    before = run[run.env_step <= c]
                    if len(before) and c <= run.env_step.max():
                        at_step[c].append(float(before.eval_return_mean.iloc[-1]))
            cells = [
                f"{np.mean(v):.0f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.0f}" if v else ""
                for v in at_step.values()
            ]
            print(
                f"| {label} ({root.name}) | {budget} | {', '.join(firsts)} | "
                f"{np.mean(walls):.0f} | " + " | ".join(cells) + " |"
            )


if __name__ == "__main__":
    main()
