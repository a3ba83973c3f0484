"""How much slower (or faster) this machine is than the cost model's reference machine.

The cost model (status.py, README "Time estimates") prices each operation as measured on the
reference machine of benchmarks/RESULTS.md. CPUs differ far more than a planning figure can
absorb: the policy update, which is most of a model-based run's time (G updates per env
step), measured 4.3 ms on the reference machine and 45 ms on a 2-core AVX2 EPYC at one thread,
where an uncalibrated estimate promised a HalfCheetah grid in 5 hours that needed 30. So
before a long CPU run the command times that update here, at the run's thread count, and
scales the whole estimate by the ratio. The update is the same SAC update the runs make
(Hopper's shapes, the reference figure's), drawn from a generator of its own so that timing it
leaves the global random streams, and so every run's numbers, untouched.
"""

from __future__ import annotations

import statistics
import time

from usbpo_cli.runs.status import SAC_UPDATE_BARE_S

OBS_DIM, ACT_DIM, BATCH = 11, 3, 256  # Hopper's shapes, as the reference figure was measured


def measure_slowdown(threads: int, repeats: int = 5) -> float:
    """This machine's seconds per reference-machine second at `threads` torch threads: the
    median of `repeats` SAC updates (after one warm-up) over the reference figure. The caller's
    thread count and random state are as they were on return."""
    import torch

    from usbpo_cli.agents.buffers import Batch
    from usbpo_cli.agents.sac import SAC

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        # The networks' constructors draw from the global generator (nn.Linear's own init)
        # before their seeded init overwrites it: fork_rng puts the global stream back after.
        with torch.random.fork_rng(devices=[]):
            generator = torch.Generator().manual_seed(0)
            bound = torch.ones(ACT_DIM)
            sac = SAC(OBS_DIM, ACT_DIM, -bound, bound, generators=[generator])
            batch = Batch(
                torch.randn(BATCH, OBS_DIM, generator=generator),
                torch.rand(BATCH, ACT_DIM, generator=generator) * 2 - 1,
                torch.randn(BATCH, generator=generator),
                torch.randn(BATCH, OBS_DIM, generator=generator),
                torch.zeros(BATCH),
            )
            sac.update(batch)  # warm-up: first-call allocations
            seconds = []
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                sac.update(batch)
                seconds.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(seconds) / SAC_UPDATE_BARE_S
