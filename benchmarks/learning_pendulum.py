"""Learning benchmark: USB-PO and MBPO on InvertedPendulum-v4 at the paper preset, 3 seeds each.

Runs one training at a time (2-core machine), skips runs whose progress.csv is complete, then
prints a markdown table of mean eval return against env steps and the first env step at which
each seed's eval return reached 900.

usage: python benchmarks/learning_pendulum.py [--steps 10000] [--seeds 3] [--out runs/bench-ip]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from usbpo_cli.runs.runner import RunSpec, run_training

THRESHOLD = 900.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--algos", default="usbpo,mbpo")
    parser.add_argument("--env", default="InvertedPendulum-v4")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ip"))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 leaves a core free)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = []
    for algo in args.algos.split(","):
        for seed in range(args.seeds):
            out = args.out / args.env / algo / f"seed{seed}"
            csv = out / "progress.csv"
            done = csv.exists() and pd.read_csv(csv).env_step.max() >= args.steps
            if not done:
                if out.exists():
                    for f in out.iterdir():
                        f.unlink()
                print(f"training {algo} seed {seed} ...", flush=True)
                [summary] = run_training(RunSpec(args.env, algo, seed, args.steps, out))
                print(
                    f"  {summary.wall_time_s:.0f} s, final {summary.final_return:.1f}", flush=True
                )
            frame = pd.read_csv(csv)
            frame["algo"], frame["seed"] = algo, seed
            frames.append(frame)
    data = pd.concat(frames)
    stats = data.groupby(["env_step", "algo"]).eval_return_mean.agg(["mean", "std"])
    algos = args.algos.split(",")
    print(f"\n### {args.env}: eval return, mean ± std over {args.seeds} seeds\n")
    print("| env step | " + " | ".join(algos) + " |\n|---|" + "---|" * len(algos))
    for step in sorted(data.env_step.unique()):
        cells = [
            f"{stats.loc[(step, a), 'mean']:.1f} ± {stats.loc[(step, a), 'std']:.1f}"
            if (step, a) in stats.index
            else ""
            for a in algos
        ]
        print(f"| {step} | " + " | ".join(cells) + " |")
    print(f"\n### first env step with eval return >= {THRESHOLD:.0f}\n")
    print("| algo | per seed | mean wall time per run (s) |\n|---|---|---|")
    for algo, group in data.groupby("algo"):
        firsts = []
        for _, run in group.groupby("seed"):
            hit = run[run.eval_return_mean >= THRESHOLD]
            firsts.append(str(int(hit.env_step.min())) if len(hit) else "never")
        wall = group.groupby("seed").wall_time_s.max().mean()
        print(f"| {algo} | {', '.join(firsts)} | {wall:.0f} |")
    final = data[data.env_step == data.env_step.max()].groupby("algo").eval_return_mean
    print("\nfinal mean eval return:", final.mean().round(1).to_dict())


if __name__ == "__main__":
    main()
