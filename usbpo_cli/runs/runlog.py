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
    "model_update_step",
    "event_sum",
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


NOT_SET = "(not set)"


def first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted key, old value, new value) where two JSON-like values differ, keys in
    `old`'s order (then keys only `new` has); None when they are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in [*old, *(k for k in new if k not in old)]:
            path = f"{key}.{name}" if key else str(name)
            if name not in new:
                return path, old[name], NOT_SET
            if name not in old:
                return path, NOT_SET, new[name]
            found = first_difference(old[name], new[name], path)
            if found is not None:
                return found
        return None
    return None if old == new else (key, old, new)


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'KEY is OLD there, NEW now' for the first difference of two config payloads (a setting
    under `config` is named by its own key, as `--set` takes it)."""
    found = first_difference(old, new)
    if found is None:
        return "nothing differs"
    key, was, now = found
    key = key.removeprefix("config.")
    return f"{key} is {was!r} there, {now!r} now"


def as_json(data: Any) -> Any:
    """`data` as it reads back from a JSON file (tuples become lists, paths strings)."""
    return json.loads(json.dumps(data, default=str))


def refuse_current_folder(out: Path, option: str = "--out") -> None:
    """The current folder (`--out ""` or `--out .`) is nobody's run or grid folder: writing run
    files among a user's own would mix them up."""
    if Path(out).resolve() == Path.cwd().resolve():
        raise UsageError(
            f"{option} {str(out)!r} is the current folder {Path.cwd()}; "
            f"give the run a folder of its own"
        )


def prepare_run_dir(out: Path, config: dict[str, Any], resume: bool = False) -> None:
    """Create the run folder, refusing one that holds another run, or (unless resuming) any
    earlier progress of this one."""
    refuse_current_folder(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    config_path = out / "config.json"
    if resume and not config_path.exists():
        raise UsageError(f"--resume: no run to resume in {out} (no config.json there)")
    if config_path.exists():
        try:
            existing = json.loads(config_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            existing = None
        if not isinstance(existing, dict):
            raise UsageError(f"{config_path} is unreadable; refusing to overwrite it")
        if comparable(existing) != comparable(as_json(config)):
            difference = describe_difference(comparable(existing), comparable(as_json(config)))
            raise UsageError(
                f"{out} already holds a different run ({difference}); "
                f"choose another --out, or rerun with its settings"
            )
        if (out / "progress.csv").exists() and not resume:
            raise UsageError(
                f"{out} already holds this run's progress.csv; add --resume to continue it"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to {out}: {error.strerror}") from None


class RunLock:
    """An exclusive lock on a run folder, so two processes never write one run. The OS drops it
    when its holder dies, even by SIGKILL."""

    def __init__(self, out: Path) -> None:
        import fcntl

        self.path = out / ".lock"
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise UsageError(f"{out} is in use by {holder}; wait for it or stop it") from None

    def announce(self) -> None:
        """Name this process as the holder (once the run is sure to start, so a refused run
        leaves the file as it was)."""
        import socket

        self._file.seek(0)
        self._file.truncate()
        self._file.write(
            f"pid {os.getpid()} on {socket.gethostname()} "
            f"since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        )
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()


def reconcile_progress(path: Path, rows: int) -> tuple[int, list[str]]:
    """Make `progress.csv` agree with a checkpoint that has written `rows` rows.

    A torn last line (a kill mid-write) is removed; rows beyond the checkpoint (possible only
    when falling back to an older checkpoint) are dropped, since the resumed run writes them
    again. Returns how many rows the file now holds and what was done.
    """
    if not path.exists():
        return 0, []
    data = path.read_bytes()
    lines = data.split(b"\n")
    notes = []
    if data and not data.endswith(b"\n"):
        notes.append("removed a torn last line from progress.csv")
    lines = lines[:-1]  # the text after the final newline: empty, or the torn line
    header, body = lines[:1], lines[1:]
    if len(body) > rows:
        notes.append(
            f"dropped {len(body) - rows} progress row(s) newer than the checkpoint; "
            f"they are computed again"
        )
        body = body[:rows]
    if notes:
        write_text_atomic(path, b"\n".join(header + body).decode() + "\n" if header else "")
    return len(body), notes


def append_event(out: Path, message: str) -> None:
    """A timestamped line in the run's `events.log`: resumes, fallbacks, rollbacks."""
    with open(out / "events.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


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
