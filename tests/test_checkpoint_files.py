"""A run's checkpoint files (runs/checkpoint.py) on states written here: which files a run
keeps, which one a resume reads, and what it refuses to read. (test_resume.py kills real runs
at random moments; this names the rule that broke.)"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from usbpo_cli.errors import UsageError
from usbpo_cli.runs.checkpoint import FORMAT_VERSION, Checkpointer, newest_checkpoint_step

IDENTITY = {"algo": "sac", "env_id": "InvertedPendulum-v4"}


def state(step: int) -> dict:
    return {"step": step, "weights": torch.full((3,), float(step))}


def test_the_newest_keep_checkpoints_stay_named_by_their_zero_padded_step(tmp_path: Path) -> None:
    saver = Checkpointer(tmp_path, IDENTITY, keep=2)
    for step in (1000, 2000, 10_000):  # 10000 after 2000: names sort as numbers
        path = saver.save(state(step), step)
        assert path.name == f"ckpt-{step:010d}.pt" and saver.last_bytes == path.stat().st_size
    assert [p.name for p in saver.paths()] == ["ckpt-0000010000.pt", "ckpt-0000002000.pt"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt-0000002000.pt",
        "ckpt-0000010000.pt",
    ]  # no temporary file left
    assert newest_checkpoint_step(tmp_path) == 10_000
    loaded, warnings = Checkpointer(tmp_path, IDENTITY).load_latest()
    assert warnings == [] and loaded["step"] == 10_000
    assert torch.equal(loaded["weights"], torch.full((3,), 10_000.0))
    one = Checkpointer(tmp_path / "one", IDENTITY, keep=1)
    for step in (1, 2):
        one.save(state(step), step)
    assert [p.name for p in one.paths()] == ["ckpt-0000000002.pt"]


def test_no_checkpoint_reads_as_none(tmp_path: Path) -> None:
    assert Checkpointer(tmp_path, IDENTITY).load_latest() == (None, [])
    assert newest_checkpoint_step(tmp_path) is None
    with pytest.raises(UsageError, match="--keep-checkpoints must be >= 1, got 0"):
        Checkpointer(tmp_path, IDENTITY, keep=0)


def test_a_torn_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    saver = Checkpointer(tmp_path, IDENTITY, keep=3)
    for step in (1, 2, 3):
        saver.save(state(step), step)
    for torn in saver.paths()[:2]:  # the two newest cut short, as a full disk might leave them
        data = torn.read_bytes()
        torn.write_bytes(data[: len(data) // 2])
    loaded, warnings = saver.load_latest()
    assert loaded["step"] == 1
    assert len(warnings) == 2 and "ckpt-0000000003.pt is unreadable" in warnings[0]
    assert "ckpt-0000000002.pt is unreadable" in warnings[1]
    assert newest_checkpoint_step(tmp_path) == 3  # by name: a torn one counts


def test_a_checkpoint_of_another_run_or_format_is_refused(tmp_path: Path) -> None:
    Checkpointer(tmp_path, IDENTITY).save(state(1), 1)
    with pytest.raises(UsageError, match="belongs to env_id 'InvertedPendulum-v4', not 'Hop"):
        Checkpointer(tmp_path, {**IDENTITY, "env_id": "Hopper-v4"}).load_latest()
    folder = tmp_path / "checkpoints"
    for version, message in ((FORMAT_VERSION + 1, "upgrade usbpo"), (1, "--restart")):
        payload = {"format_version": version, **IDENTITY, "state": state(5)}
        torch.save(payload, folder / "ckpt-0000000005.pt")
        with pytest.raises(UsageError, match=message):
            Checkpointer(tmp_path, IDENTITY).load_latest()


class Runs:
    """An object whose unpickling would call os.system."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_that_would_run_code_is_refused_not_skipped(tmp_path: Path) -> None:
    saver = Checkpointer(tmp_path, IDENTITY)
    saver.save(state(1), 1)
    with open(tmp_path / "checkpoints" / "ckpt-0000000002.pt", "wb") as f:
        pickle.dump({"format_version": FORMAT_VERSION, "state": Runs()}, f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's note on the pickle protocol stays quiet
        with pytest.raises(UsageError, match="is refused: it holds more than a checkpoint may"):
            saver.load_latest()


def test_checkpoints_written_in_format_2_still_resume(tmp_path: Path) -> None:
    # Format 2 (each agent's own generators) is what every checkpoint on disk since then says.
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"format_version": 2, **IDENTITY, "state": state(7)}, folder / "ckpt-7.pt")
    loaded, _ = Checkpointer(tmp_path, IDENTITY).load_latest()
    assert loaded["step"] == 7


def test_the_last_write_is_measured(tmp_path: Path) -> None:
    saver = Checkpointer(tmp_path, IDENTITY)
    assert (saver.last_bytes, saver.last_seconds) == (0, 0.0)  # nothing written yet
    path = saver.save(state(1), 1)
    assert saver.last_bytes == path.stat().st_size > 0
    assert 0.0 < saver.last_seconds < 60.0
