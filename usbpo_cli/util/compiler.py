"""`--compile`: whether torch.compile can build kernels here, asked once, at the start of a run.

torch.compile generates C++ kernels for a CPU (it needs a C++ compiler on the PATH) and Triton
kernels for a GPU, and only on the Pythons it supports. Without them a compiled update fails at
its first call, which in a run is after the exploration steps, minutes or hours in. So a run
asking for `--compile` compiles and runs one tiny kernel on its device first, and a failure is
refused with one line before any file is written.
"""

from __future__ import annotations

import torch

from usbpo_cli.errors import UsageError

_checked: dict[str, str | None] = {}  # device -> why compiling fails there (None: it works)


def _trial_kernel(x: torch.Tensor) -> torch.Tensor:
    return (x * 2.0).relu() + 1.0


def compile_refusal(device: torch.device) -> str | None:
    """Why torch.compile cannot build and run a kernel on `device` (None: it can); the trial
    (a few seconds, once per device and process) is cached."""
    key = str(device)
    if key not in _checked:
        try:
            trial = torch.compile(_trial_kernel, dynamic=False)
            result = trial(torch.ones(4, device=device))
            ok = bool((result == 3.0).all())
            _checked[key] = None if ok else "its trial kernel computed a wrong result"
        except Exception as error:  # noqa: BLE001 (any failure to build means: cannot compile)
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            _checked[key] = f"{type(error).__name__}: {first[:160]}"
    return _checked[key]


def check_compile(device: torch.device) -> None:
    """Refuse `--compile` with one line where torch.compile cannot build kernels on `device`."""
    why = compile_refusal(device)
    if why is not None:
        raise UsageError(
            f"--compile: torch.compile cannot build kernels on {device} here ({why}); "
            f"run without --compile"
        )
