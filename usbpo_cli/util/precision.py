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

fp32 products on an AMD CPU with AVX-512: torch hands float32 matrix products to MKL, which on a
CPU not made by Intel runs its AVX2 kernels (about 110 GFLOP/s per core on the Zen 5 EPYC of
benchmarks/RESULTS.md, where oneDNN's AVX-512 float32 kernels reach about twice that). There,
for networks at least ONEDNN_MIN_WIDTH wide, `configure` sends float32 products to oneDNN,
still computed in float32 (narrower ones lose more to oneDNN's cost per call than its kernels
win: a 64-wide SAC update took 1.24 ms against MKL's 0.94). USBPO_FP32_PRODUCTS=mkl keeps MKL,
=onednn asks for oneDNN at any width and on any CPU without AMX; the default is auto.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from usbpo_cli.errors import UsageError

PRECISIONS = ("fp32", "bf16")
ALLOW_EMULATED = "USBPO_ALLOW_EMULATED_BF16"

# /proc/cpuinfo flag -> the instruction set's name, for any of which bf16 products are native.
NATIVE_BF16_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "bf16": "Arm BF16"}


@functools.cache
def read_cpuinfo() -> str:
    """/proc/cpuinfo's text, read once per process (every agent asks for the CPU's flags and
    vendor); empty where that file does not exist (not Linux)."""
    path = Path("/proc/cpuinfo")
    return path.read_text(errors="replace") if path.exists() else ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`) from /proc/cpuinfo, or from the
    text given; empty where that file does not exist (not Linux)."""
    if cpuinfo is None:
        cpuinfo = read_cpuinfo()
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


FP32_PRODUCTS = "USBPO_FP32_PRODUCTS"
# any of these and oneDNN's "bf16 allowed" mode (the switch that reaches oneDNN) would really
# round float32 products to bf16 (AMX); without them it computes them in float32
AMX_FLAGS = {"amx_bf16", "amx_tile", "amx_int8", "amx_fp16"}
# the narrowest hidden layer for which auto picks oneDNN (a SAC update on Zen 5, 2 threads:
# 128 wide 1.89 ms against MKL's 1.94, 256 wide 3.5 against 4.7; 64 wide 1.24 against 0.94)
ONEDNN_MIN_WIDTH = 128


def cpu_vendor(cpuinfo: str | None = None) -> str:
    """The x86 vendor string (`AuthenticAMD`, `GenuineIntel`) from /proc/cpuinfo or the text
    given; empty where there is none (Arm, not Linux)."""
    if cpuinfo is None:
        cpuinfo = read_cpuinfo()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "vendor_id":
            return value.strip()
    return ""


def fp32_products_library(
    choice: str, vendor: str, flags: Iterable[str], widest_layer: int = ONEDNN_MIN_WIDTH
) -> str:
    """Which library should multiply float32 matrices on this CPU: "onednn" or "mkl".

    auto picks oneDNN only where MKL is known to take its slow path and oneDNN's float32
    kernels are AVX-512 (an AMD CPU with AVX-512), for networks whose widest hidden layer is at
    least ONEDNN_MIN_WIDTH, and never on a CPU with AMX, where the switch that reaches oneDNN
    lets it round float32 products to bf16."""
    if choice not in ("auto", "mkl", "onednn"):
        raise UsageError(f"{FP32_PRODUCTS}={choice!r}: choose auto, mkl or onednn")
    found = set(flags)
    if found & AMX_FLAGS or choice == "mkl":
        return "mkl"
    if choice == "onednn":
        return "onednn"
    suits = vendor == "AuthenticAMD" and "avx512f" in found and widest_layer >= ONEDNN_MIN_WIDTH
    return "onednn" if suits else "mkl"


def products_stay_float32() -> bool:
    """Whether a float32 product still carries float32's accuracy (against float64): the
    guard that the oneDNN switch has not rounded to bf16 (which would err ~1e-3, not ~1e-7)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 512, generator=generator)
    b = torch.randn(512, 64, generator=generator)
    exact = a.double() @ b.double()
    error = ((a @ b).double() - exact).abs().max() / exact.abs().max()
    return bool(error < 1e-5)


def route_fp32_products(
    choice: str | None = None,
    vendor: str | None = None,
    flags: Iterable[str] | None = None,
    widest_layer: int = ONEDNN_MIN_WIDTH,
) -> str:
    """Send float32 products on the CPU to the library `fp32_products_library` picks (the
    process-wide torch switch), check that they stay float32, and say which library it is."""
    switch = getattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision", None)
    if switch is None or not torch.backends.mkldnn.is_available():
        return "mkl"  # a torch without the switch: its default
    library = fp32_products_library(
        os.environ.get(FP32_PRODUCTS, "auto") if choice is None else choice,
        cpu_vendor() if vendor is None else vendor,
        cpu_flags() if flags is None else flags,
        widest_layer,
    )
    torch.backends.mkldnn.matmul.fp32_precision = "bf16" if library == "onednn" else "none"
    if library == "onednn" and not products_stay_float32():
        torch.backends.mkldnn.matmul.fp32_precision = "none"
        return "mkl"
    return library


def check_precision(name: str, device: torch.device) -> None:
    """Refuse an unknown precision, or bf16 where it would only be emulated (and a bad
    USBPO_FP32_PRODUCTS: checked here, before a run writes anything, not when its agent is
    made)."""
    fp32_products_library(os.environ.get(FP32_PRODUCTS, "auto"), "", ())
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


def configure(name: str, device: torch.device, widest_layer: int = ONEDNN_MIN_WIDTH) -> None:
    """Process-wide settings of a precision: TF32 products on CUDA under bf16; on a CPU, the
    library that multiplies float32 matrices for networks this wide (`route_fp32_products`)."""
    if device.type == "cpu":
        route_fp32_products(widest_layer=widest_layer)
    if name == "bf16" and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
