"""Keep freed memory in the process for reuse, instead of handing it back to the kernel.

Why: torch's CPU tensors come from malloc, and glibc's malloc serves large blocks (above a
threshold that starts at 128 KiB and grows only as far as the largest block freed) with a
fresh mmap, and gives the top of its heap back to the kernel once enough of it is free. A
training step allocates and frees the same megabyte-sized activations and gradients every
time, so every step touched fresh pages: in a loop of five-seed SAC updates at the paper
preset alone, about 1,900 minor page faults per update and a quarter of its time (10.9 ms
against 8.2 ms with the settings here; a phase-1 epoch 450 against 388 ms). In a whole
training loop the gain is smaller, its large frees having raised glibc's threshold already
(a bf16 USB-PO block 103.0 against 99.4 s; benchmarks/RESULTS.md, issue 15).

What: glibc's `mallopt` raises the mmap threshold to its largest allowed value (32 MiB on a
64-bit machine) and the trim threshold to 1 GiB, so blocks up to 32 MiB are reused from the
heap and a freed heap top is kept. The process keeps what it freed (its resident size stays
at its peak, which it reaches anyway); no number it computes changes. Blocks over 32 MiB
(replay buffers, big rollouts) are still mapped and unmapped as before.

Where not: any C library other than glibc (nothing to set); a user who set glibc's own
`MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` (theirs is kept); and
`USBPO_KEEP_FREED_MEMORY=0`, which leaves malloc as it was.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

from usbpo_cli.errors import UsageError

KEEP_FREED_MEMORY = "USBPO_KEEP_FREED_MEMORY"  # 1 (default): keep freed memory; 0: leave malloc
GLIBC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

# glibc's mallopt parameters (malloc.h) and the values set
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on a 64-bit machine
TRIM_THRESHOLD = 2**30

_applied: str | None = None  # what `keep_freed_memory` did in this process


def allocator_plan(environ: Mapping[str, str], libc: str) -> str:
    """What to do with malloc: "keep" (set the thresholds), or why not: "off" (asked),
    "user" (glibc's own variables are set), "not glibc". An unknown choice is refused."""
    choice = environ.get(KEEP_FREED_MEMORY, "1")
    if choice not in ("0", "1"):
        raise UsageError(f"{KEEP_FREED_MEMORY}={choice!r}: choose 1 (keep freed memory) or 0")
    if choice == "0":
        return "off"
    if any(name in environ for name in GLIBC_SETTINGS):
        return "user"
    if libc != "glibc":
        return "not glibc"
    return "keep"


def check_allocator() -> None:
    """Refuse a bad USBPO_KEEP_FREED_MEMORY before a run writes anything."""
    allocator_plan(os.environ, "glibc")


def keep_freed_memory() -> str:
    """Apply `allocator_plan` to this process, once (later calls return the first outcome)."""
    global _applied
    if _applied is None:
        plan = allocator_plan(os.environ, platform.libc_ver()[0])
        if plan == "keep":
            libc = ctypes.CDLL(None)
            ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
            plan = "keep" if ok else "refused by mallopt"
        _applied = plan
    return _applied
