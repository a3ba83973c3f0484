"""progress.csv: its columns, the one writer, the one reader (every command reads rows through
`read_csv_rows`), and the repair of a torn or lost last row.

`PROGRESS_COLUMNS` is a public interface (documented in the README): every algorithm writes all
of them, leaving a cell empty where a quantity does not apply (model columns for SAC, say).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from usbpo_cli.errors import TrainingDiverged, UsageError
from usbpo_cli.runs.folders import write_text_atomic

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


def read_csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank CSV row; the first is the header."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: unparsable (not UTF-8 text)") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read ({error.strerror})") from None
    if not text.strip():
        raise UsageError(f"{path}: is empty")
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader if row]
    except csv.Error as error:
        raise UsageError(f"{path}: unparsable CSV ({error})") from None
    return rows


def last_env_step(path: Path) -> int:
    """env_step of the last complete row of a progress.csv; 0 when it has no rows yet."""
    rows = read_csv_rows(path)
    header = rows[0][1]
    complete = [row for _, row in rows[1:] if len(row) == len(header)]
    return int(float(complete[-1][header.index("env_step")])) if complete else 0
