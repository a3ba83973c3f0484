"""Per-phase wall time per 1000 env steps, USB-PO and MBPO side by side, paper preset.

Trains each algorithm for `initial_steps + 2 epochs` real env steps with the unchanged paper
preset (Hopper-v4 by default) and reads the `t_*` columns of the last progress row, which
covers exactly one 1000-step epoch of learning (the second, so phase 1 is warm-started).

usage: python benchmarks/phase_times.py [--env Hopper-v4] [--out runs/bench-phases]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd
import torch

from usbpo_cli.runs.csvlog import TIMING_COLUMNS
from usbpo_cli.runs.runner import RunSpec, run_training

STEPS = 7000  # 5000 exploration steps + 2 learning epochs of 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v4")
    parser.add_argument("--algos", default="usbpo,mbpo")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-phases"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {}
    for algo in args.algos.split(","):
        out = args.out / args.env / algo
        progress = out / "progress.csv"
        done = progress.exists() and pd.read_csv(progress).env_step.max() >= STEPS
        if not done:  # a finished run is reused, so algos can be trained by separate processes
            shutil.rmtree(out, ignore_errors=True)
            print(f"training {algo} on {args.env} ...", flush=True)
            run_training(RunSpec(args.env, algo, 0, STEPS, out))
        last = pd.read_csv(progress).iloc[-1]
        rows[algo] = last
    algos = list(rows)

    def seconds(algo: str, column: str) -> float:
        value = rows[algo].get(column)
        return float(value) if pd.notna(value) else 0.0

    print(
        f"\n### {args.env}, paper preset: wall seconds per 1000 env steps "
        f"(env steps 6000-7000, torch threads {torch.get_num_threads()})\n"
    )
    print("| phase | " + " | ".join(algos) + " |\n|---|" + "---|" * len(algos))
    for column in TIMING_COLUMNS:
        print(f"| {column} | " + " | ".join(f"{seconds(a, column):.1f}" for a in algos) + " |")
    totals = {a: sum(seconds(a, c) for c in TIMING_COLUMNS) for a in algos}
    print("| total | " + " | ".join(f"{totals[a]:.1f}" for a in algos) + " |")
    if "usbpo" in totals and "mbpo" in totals:
        print(f"\nUSB-PO / MBPO wall time: {totals['usbpo'] / totals['mbpo']:.2f}")
    for algo in algos:
        r = rows[algo]
        print(
            f"{algo}: phase-1 epochs {r.model_epochs:.0f}, phase-2 steps "
            f"{r.phase2_steps if pd.notna(r.phase2_steps) else '-'}, "
            f"eval return {r.eval_return_mean:.1f}"
        )


if __name__ == "__main__":
    main()
