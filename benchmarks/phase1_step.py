"""One phase-1 minibatch step of the Hopper-v4 ensemble (paper preset: 7 members, 4 x 200
SiLU, batch 256), timed for a lone seed and for a group of S seeds with some of them still
training, so the cost of a group's stopped seeds can be seen apart from the rest of the loop.

    python benchmarks/phase1_step.py [--seeds 5] [--threads 2] [--steps 60]

Prints ms per step (forward, backward, Adam and the put-back of stopped seeds) and, of it, the
Adam step and the put-back (`FrozenSeeds.restore`), in fp32 and, where the CPU has native bf16
matrix products, bf16. Why it exists: issue 15's late grid stage showed a group's phase 1
costing more per seed-epoch than a lone seed's; this splits that cost.
"""

from __future__ import annotations

import argparse
import time

import torch

from usbpo_cli.models.ensemble import FrozenSeeds, GaussianEnsemble, mle_backward
from usbpo_cli.models.optim import adam_step, make_adam
from usbpo_cli.util.precision import bf16_refusal, mixed

OBS, ACT, MEMBERS, BATCH = 11, 3, 7, 256
WEIGHT_DECAY = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)


def time_step(seeds: int, training: int, precision: str, steps: int) -> tuple[float, float, float]:
    """ms per step, of which Adam and the put-back, with seeds [0, training) still training."""
    device = torch.device("cpu")
    gens = [torch.Generator().manual_seed(s) for s in range(seeds)]
    model = GaussianEnsemble(OBS, ACT, MEMBERS, generators=gens)
    optimizer = make_adam(model.parameters(), 1e-3)
    frozen = FrozenSeeds(model, optimizer)
    members = None if training == seeds else torch.arange(training * MEMBERS)
    inputs = torch.randn(training * MEMBERS, BATCH, OBS + ACT)
    targets = torch.randn(training * MEMBERS, BATCH, OBS + 1)

    def step() -> tuple[float, float]:
        optimizer.zero_grad(set_to_none=True)
        with mixed(precision, device):
            mle_backward(model, inputs, targets, WEIGHT_DECAY, 0.01, members)
        began = time.perf_counter()
        adam_step(optimizer)
        stepped = time.perf_counter()
        frozen.restore()
        return stepped - began, time.perf_counter() - stepped

    for _ in range(5):  # Adam's state, warm caches
        step()
    for seed in range(training, seeds):
        frozen.freeze(seed)
    adam = put_back = 0.0
    began = time.perf_counter()
    for _ in range(steps):
        a, p = step()
        adam, put_back = adam + a, put_back + p
    total = time.perf_counter() - began
    return 1e3 * total / steps, 1e3 * adam / steps, 1e3 * put_back / steps


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
        configs = [(1, 1)] + [(args.seeds, k) for k in (args.seeds, 2, 1)]
        for seeds, training in configs:
            total, adam, put_back = time_step(seeds, training, precision, args.steps)
            print(
                f"{precision} S={seeds}, {training} training: {total:.1f} ms/step "
                f"(Adam {adam:.1f}, put-back {put_back:.1f}; "
                f"{total / training:.1f} ms per training seed)"
            )


if __name__ == "__main__":
    main()
