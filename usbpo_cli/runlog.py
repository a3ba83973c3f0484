"""Run logging: the one CSV writer, config.json, the run folder guard and per-phase timers.

`PROGRESS_COLUMNS` is a public interface (documented in the README): every algorithm writes all
of them, leaving a cell empty where a quantity does not apply (model columns for SAC, say).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usbpo_cli.errors import UsageError

if TYPE_CHECKING:  # torch stays out of this module's imports: plotting and aggregation use it
    import torch

PROGRESS_COLUMNS: tuple[str, ...] = (
    "env_step",
    "epoch",
    "eval_return_mean",
    "eval_return_std",
    "train_return",
    "wall_time_s",
    "model_loss_train",
    "model_loss_holdout",
    "model_epochs",
    "model_trainings",
    "model_shift",
    "model_bias",
    "model_shift_before",
    "model_bias_before",
    "phase2_steps",
    "delta",
    "rollout_length",
    "critic_loss",
    "actor_loss",
    "alpha",
    "t_env",
    "t_model_phase1",
    "t_model_phase2",
    "t_rollout",
    "t_policy",
    "t_eval",
)
TIMING_COLUMNS: tuple[str, ...] = tuple(c for c in PROGRESS_COLUMNS if c.startswith("t_"))
VOLATILE_CONFIG_KEYS = ("versions", "git_commit", "created", "command")


class TrainingDiverged(RuntimeError):
    """A loss or metric became NaN or infinite; no row with it is written."""


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class CsvLogger:
    """Appends one row per evaluation and flushes it to disk at once; never rewrites a row."""

    def __init__(self, path: Path, columns: tuple[str, ...] = PROGRESS_COLUMNS) -> None:
        self.path, self.columns = Path(path), columns
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)
        if is_new:
            self._writer.writerow(columns)
            self._flush()

    def _flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def write(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"columns not in the CSV schema: {sorted(unknown)}")
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise TrainingDiverged(f"{key} is {value} at env step {row.get('env_step')}")
        self._writer.writerow([_format(row.get(c)) for c in self.columns])
        self._flush()

    def close(self) -> None:
        self._file.close()


def write_text_atomic(path: Path, text: str) -> None:
    """Write then rename, so a reader never sees half a file and a crash leaves the old one."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}


def prepare_run_dir(out: Path, config: dict[str, Any]) -> None:
    """Create the run folder, refusing one that holds another run or any earlier progress."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    config_path = out / "config.json"
    if config_path.exists():
        try:
            existing = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError):
            raise UsageError(f"{config_path} is unreadable; refusing to overwrite it") from None
        if comparable(existing) != comparable(json.loads(json.dumps(config, default=str))):
            raise UsageError(f"{out} already holds a different run; choose another --out")
        if (out / "progress.csv").exists():
            raise UsageError(f"{out} already holds this run's progress.csv; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to {out}: {error.strerror}") from None


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
