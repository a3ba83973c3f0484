"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is written at every evaluation row, before the row reaches `progress.csv`, by
writing a temporary file and renaming it, so a kill at any moment leaves either the old or the
new checkpoint complete. It holds the agent (networks, optimisers, buffers, schedule position),
the loop's position, every random generator, the simulator state of both environments, and the
row itself, so a row lost between checkpoint and CSV is written on resume.
"""

from __future__ import annotations

import os
import pickle
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usbpo_cli.errors import UsageError

# 2: each agent's own torch.Generator state replaced the process-global RNG states of 1.
FORMAT_VERSION = 2
PATTERN = "ckpt-*.pt"


def _numpy_globals() -> list[Any]:
    """The only non-tensor, non-builtin types a checkpoint holds: numpy arrays (MuJoCo states,
    numpy's random state, the loop's last observation), their dtypes and numpy scalars (PPO's
    running statistics). Checkpoints are loaded with `weights_only=True` and these alone allowed,
    so loading one can build data but never call anything else: a crafted checkpoint in a run
    folder on a shared filesystem cannot run code on `--resume`."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    dtypes = {type(np.dtype(kind)) for kind in ("?", "u1", "u4", "i4", "i8", "f4", "f8", "U1")}
    return [
        multiarray._reconstruct,
        multiarray.scalar,
        np.ndarray,
        np.dtype,
        *sorted(dtypes, key=lambda t: t.__name__),
    ]


ALLOWED_GLOBALS = _numpy_globals()


def load_checkpoint(path: Path) -> Any:
    """`torch.load` with `weights_only=True` and the allow-list above. Raises
    `pickle.UnpicklingError` for a file that holds anything else (it is not run)."""
    with warnings.catch_warnings(), torch.serialization.safe_globals(ALLOWED_GLOBALS):
        warnings.simplefilter("ignore")  # e.g. torch's note on a foreign pickle protocol
        return torch.load(path, map_location="cpu", weights_only=True)


def _refused(error: Exception) -> bool:
    """True when the weights-only unpickler refused the content (not a torn file)."""
    return isinstance(error, pickle.UnpicklingError) and "weights only" in str(error).lower()


def _refusal_reason(error: Exception) -> str:
    for line in str(error).splitlines():  # torch names the offending global on one line
        line = line.strip()
        if "unsupported" in line.lower():
            return line.removeprefix("WeightsUnpickler error: ").rstrip(".")
    return "content outside the allow-list"


def _newest_first(folder: Path) -> list[Path]:
    """The checkpoint files in `folder`, newest first (their names hold the zero-padded step)."""
    return sorted(folder.glob(PATTERN), reverse=True)


def newest_checkpoint_step(run_dir: Path) -> int | None:
    """The env step in the name of a run folder's newest checkpoint (not read: a torn one
    counts too), None if it has none."""
    paths = _newest_first(Path(run_dir) / "checkpoints")
    return int(paths[0].stem.split("-")[1]) if paths else None


class Checkpointer:
    """Writes and finds a run's checkpoints in `<run>/checkpoints/`, keeping the newest `keep`."""

    def __init__(self, run_dir: Path, identity: dict[str, Any], keep: int = 2) -> None:
        if keep < 1:
            raise UsageError(f"--keep-checkpoints must be >= 1, got {keep}")
        self.folder = Path(run_dir) / "checkpoints"
        self.identity, self.keep = identity, keep
        self.last_bytes, self.last_seconds = 0, 0.0

    def paths(self) -> list[Path]:
        """Checkpoints, newest first."""
        return _newest_first(self.folder)

    def save(self, state: dict[str, Any], step: int) -> Path:
        start = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"ckpt-{step:010d}.pt"
        tmp = target.with_suffix(".pt.tmp")
        payload = {"format_version": FORMAT_VERSION, **self.identity, "state": state}
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        for old in self.paths()[self.keep :]:
            old.unlink(missing_ok=True)
        self.last_bytes = target.stat().st_size
        self.last_seconds = time.perf_counter() - start
        return target

    def load_latest(self) -> tuple[dict[str, Any] | None, list[str]]:
        """The newest readable checkpoint's state (None if there is none) and warnings about
        newer ones that were torn and skipped."""
        warnings = []
        for path in self.paths():
            try:
                payload = load_checkpoint(path)
            except Exception as error:  # a torn or corrupt file: fall back to the previous one
                if _refused(error):  # content no checkpoint of ours holds: never run it
                    raise UsageError(
                        f"{path} is refused: it holds more than a checkpoint may (tensors, "
                        f"numpy arrays, plain containers; {_refusal_reason(error)}); loading it "
                        f"could run code, so nothing was resumed"
                    ) from None
                warnings.append(
                    f"checkpoint {path.name} is unreadable ({type(error).__name__}); "
                    f"falling back to the one before it"
                )
                continue
            self._check(payload, path)
            return payload["state"], warnings
        return None, warnings

    def _check(self, payload: dict[str, Any], path: Path) -> None:
        version = payload.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise UsageError(
                f"{path} has checkpoint format {version!r}; this usbpo reads up to "
                f"{FORMAT_VERSION}: upgrade usbpo to resume it"
            )
        if version < FORMAT_VERSION:
            raise UsageError(
                f"{path} has checkpoint format {version} (process-global random state), which "
                f"this usbpo cannot continue exactly: rerun with --restart, or resume it with "
                f"the usbpo that wrote it"
            )
        for key, expected in self.identity.items():
            if payload.get(key) != expected:
                raise UsageError(f"{path} belongs to {key} {payload.get(key)!r}, not {expected!r}")
