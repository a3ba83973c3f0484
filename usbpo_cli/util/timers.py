"""Per-phase wall-clock timers: every agent reports where its time goes (t_env, t_policy, ...)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch stays out of this module's imports
    import torch


class PhaseTimer:
    """Accumulates wall seconds per named phase; `on_phase` is told when a phase starts."""

    def __init__(self, device: torch.device, on_phase: Callable[[str], None] | None = None) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.sync = device.type == "cuda"
        self.on_phase = on_phase

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.on_phase is not None:
            self.on_phase(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                import torch

                torch.cuda.synchronize()
            self.totals[name] += time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        totals, self.totals = dict(self.totals), defaultdict(float)
        return totals
