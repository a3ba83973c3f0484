"""One phase-1 minibatch step of the Hopper-v4 ensemble (paper preset: 7 members, 4 x 200
SiLU, batch 256), timed for groups of 1, 2 and S seeds, per training seed.

    python benchmarks/phase1_step.py [--seeds 5] [--threads 2] [--steps 60]

Since the eleventh session a group whose other seeds have stopped trains a compact group of the
seeds still training, so a step with k seeds left costs what a k-seed group's step costs: these
figures. (At 598af56 this script timed the earlier design, which computed stopped seeds'
parameters in Adam and put them back every step; RESULTS keeps those figures.) fp32 and, where
the CPU has native bf16 matrix products, bf16.
"""

from __future__ import annotations

import argparse
import time

import torch

from usbpo_cli.models.ensemble import GaussianEnsemble, mle_backward
from usbpo_cli.models.optim import adam_step, make_adam
from usbpo_cli.util.precision import bf16_refusal, mixed

OBS, ACT, MEMBERS, BATCH = 11, 3, 7, 256
WEIGHT_DECAY = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)


def time_step(seeds: int, precision: str, steps: int) -> tuple[float, float]:
    """ms per step of a group of `seeds` seeds, all training, and of it the Adam step."""
    device = torch.device("cpu")
    gens = [torch.Generator().manual_seed(s) for s in range(seeds)]
    model = GaussianEnsemble(OBS, ACT, MEMBERS, generators=gens)
    optimizer = make_adam(model.parameters(), 1e-3)
    inputs = torch.randn(seeds * MEMBERS, BATCH, OBS + ACT)
    targets = torch.randn(seeds * MEMBERS, BATCH, OBS + 1)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with mixed(precision, device):
            mle_backward(model, inputs, targets, WEIGHT_DECAY, 0.01)
        began = time.perf_counter()
        adam_step(optimizer)
        return time.perf_counter() - began

    for _ in range(5):  # Adam's state, warm caches
        step()
    began = time.perf_counter()
    adam = sum(step() for _ in range(steps))
    return 1e3 * (time.perf_counter() - began) / steps, 1e3 * adam / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precisions = ["fp32"] + ([] if bf16_refusal(torch.device("cpu")) else ["bf16"])
    print(f"phase-1 step, Hopper-v4 ensemble, {args.threads} threads, {args.steps} steps")
    for precision in precisions:
        for seeds in sorted({1, 2, args.seeds}):
            total, adam = time_step(seeds, precision, args.steps)
            print(
                f"{precision} {seeds} seeds training: {total:.1f} ms/step (Adam {adam:.1f}; "
                f"{total / seeds:.1f} ms per seed)"
            )


if __name__ == "__main__":
    main()
