"""progress.csv's writer, reader and repair (runs/csvlog.py) on files written here: the rows a
file must hold after each kind of kill, and what the writer refuses. (The kill-and-resume runs
in test_resume.py check the same end to end, slowly.)"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from usbpo_cli.errors import TrainingDiverged, UsageError
from usbpo_cli.runs.csvlog import CsvLogger, last_env_step, read_csv_rows, reconcile_progress

COLUMNS = ("env_step", "eval_return_mean", "delta")


def test_the_header_is_written_once_and_rows_are_on_disk_at_once(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    logger = CsvLogger(path, COLUMNS)
    logger.write({"env_step": 1000, "eval_return_mean": 0.1 + 0.2})
    # flushed before close: a reader (or a kill) sees the whole row now
    assert path.read_text() == "env_step,eval_return_mean,delta\n1000,0.30000000000000004,\n"
    logger.close()
    again = CsvLogger(path, COLUMNS)  # a resumed run appends; no second header
    again.write({"env_step": 2000, "eval_return_mean": 2.5, "delta": -1e-3})
    again.close()
    assert path.read_text().splitlines() == [
        "env_step,eval_return_mean,delta",
        "1000,0.30000000000000004,",
        "2000,2.5,-0.001",
    ]
    assert float(path.read_text().splitlines()[1].split(",")[1]) == 0.1 + 0.2  # exact repr


def test_an_empty_file_gets_its_header(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    path.write_text("")
    logger = CsvLogger(path, COLUMNS)
    # on disk before any row: a reader of a run still in its first epoch sees the columns
    assert path.read_text() == "env_step,eval_return_mean,delta\n"
    logger.close()


def test_unknown_columns_and_non_finite_values_are_refused_and_not_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "progress.csv"
    logger = CsvLogger(path, COLUMNS)
    with pytest.raises(KeyError, match="critic_los"):
        logger.write({"env_step": 1000, "critic_los": 1.0})
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(TrainingDiverged, match=f"delta is {bad} at env step 1000"):
            logger.write({"env_step": 1000, "eval_return_mean": 1.0, "delta": bad})
    logger.close()
    assert path.read_text() == "env_step,eval_return_mean,delta\n"


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


HEADER = "env_step,eval_return_mean\n"


def test_a_file_that_agrees_with_its_checkpoint_is_left_alone(tmp_path: Path) -> None:
    assert reconcile_progress(tmp_path / "none.csv", 3) == (0, [])
    path = write(tmp_path / "p.csv", HEADER + "1,1.0\n2,2.0\n3,3.0\n")
    assert reconcile_progress(path, 3) == (3, [])
    assert reconcile_progress(path, 5) == (3, [])  # fewer rows: the caller decides
    assert path.read_text() == HEADER + "1,1.0\n2,2.0\n3,3.0\n"
    header_only = write(tmp_path / "h.csv", HEADER)
    assert reconcile_progress(header_only, 0) == (0, [])
    assert header_only.read_text() == HEADER


def test_a_torn_last_line_is_removed(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", HEADER + "1,1.0\n2,2.0\n3,3.")
    have, notes = reconcile_progress(path, 2)
    assert (have, notes) == (2, ["removed a torn last line from progress.csv"])
    assert path.read_text() == HEADER + "1,1.0\n2,2.0\n"


def test_rows_newer_than_the_checkpoint_are_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", HEADER + "1,1.0\n2,2.0\n3,3.0\n4,4.0\n")
    have, notes = reconcile_progress(path, 2)
    assert have == 2 and notes == [
        "dropped 2 progress row(s) newer than the checkpoint; they are computed again"
    ]
    assert path.read_text() == HEADER + "1,1.0\n2,2.0\n"
    torn = write(tmp_path / "t.csv", HEADER + "1,1.0\n2,2.0\n3,3")
    have, notes = reconcile_progress(torn, 1)
    assert have == 1 and len(notes) == 2 and torn.read_text() == HEADER + "1,1.0\n"
    everything = write(tmp_path / "e.csv", HEADER + "1,1.0\n")
    assert reconcile_progress(everything, 0)[0] == 0
    assert everything.read_text() == HEADER


def test_rows_are_read_with_their_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", HEADER + "1,1.0\n\n2,2.0\n")
    assert read_csv_rows(path) == [
        (1, ["env_step", "eval_return_mean"]),
        (2, ["1", "1.0"]),
        (4, ["2", "2.0"]),
    ]
    with pytest.raises(UsageError, match="is empty"):
        read_csv_rows(write(tmp_path / "e.csv", " \n"))
    bad = tmp_path / "b.csv"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_csv_rows(bad)


def test_the_last_env_step_is_the_last_complete_rows(tmp_path: Path) -> None:
    assert last_env_step(write(tmp_path / "h.csv", HEADER)) == 0
    assert last_env_step(write(tmp_path / "p.csv", HEADER + "1000,1.0\n2000.0,2.0\n")) == 2000
    assert last_env_step(write(tmp_path / "t.csv", HEADER + "1000,1.0\n2000\n")) == 1000
