"""`--precision fp32|bf16`: where the heavy products may run in bfloat16.

bf16 means `torch.autocast` (bfloat16) around the ensemble's training, the model rollouts,
USB-PO's phase 2 and the policy update: their matrix products run in bf16 while parameters,
optimiser states and losses stay in float32 (autocast casts each product's inputs, and the
optimisers step the float32 masters). On CUDA the same flag also lets the float32 products
outside those regions use TF32.

bf16 pays only where the hardware multiplies bf16 natively: on a CPU that is AVX512-BF16 or
AMX-BF16 (x86) or the BF16 extension (Arm); elsewhere torch emulates it, slower than float32,
so a run asking for it there is refused at the start, naming what the CPU lacks. The
environment variable USBPO_ALLOW_EMULATED_BF16=1 lifts the refusal, for tests and for
measuring bf16's learning parity on such a machine (the numbers are the same, only slower).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from usbpo_cli.errors import UsageError

PRECISIONS = ("fp32", "bf16")
ALLOW_EMULATED = "USBPO_ALLOW_EMULATED_BF16"

# /proc/cpuinfo flag -> the instruction set's name, for any of which bf16 products are native.
NATIVE_BF16_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "bf16": "Arm BF16"}


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`) from /proc/cpuinfo, or from the
    text given; empty where that file does not exist (not Linux)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.exists() else ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def bf16_refusal(device: torch.device, flags: Iterable[str] | None = None) -> str | None:
    """Why bf16 cannot run natively on `device` (None: it can)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        name = torch.cuda.get_device_name(device)
        return f"--precision bf16: {name} has no native bf16 matrix products; use fp32"
    found = set(cpu_flags() if flags is None else flags)
    if found & set(NATIVE_BF16_FLAGS):
        return None
    missing = " nor ".join(sorted(set(NATIVE_BF16_FLAGS.values()) - {"Arm BF16"}))
    return (
        f"--precision bf16: this CPU has no native bf16 matrix products (neither {missing}); "
        f"use --precision fp32"
    )


def check_precision(name: str, device: torch.device) -> None:
    """Refuse an unknown precision, or bf16 where it would only be emulated."""
    if name not in PRECISIONS:
        raise UsageError(f"--precision {name!r}: choose fp32 or bf16")
    if name == "bf16" and os.environ.get(ALLOW_EMULATED) != "1":
        refusal = bf16_refusal(device)
        if refusal is not None:
            raise UsageError(refusal)


def mixed(name: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The region in which products may run in bf16: `torch.autocast` for bf16, nothing for
    fp32.

    Without autocast's cache of cast weights: that cache lives until the region is left, and
    our regions span many optimiser steps (a whole phase 1, G policy updates), so cached
    copies would go stale after the first step and every later forward pass would use the
    first step's weights (seen: phase 1 never improving under bf16)."""
    if name == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def configure(name: str, device: torch.device) -> None:
    """Process-wide settings of a precision: TF32 products on CUDA under bf16."""
    if name == "bf16" and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
