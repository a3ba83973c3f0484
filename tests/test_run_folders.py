"""The run folder's rules (runs/folders.py), on folders and payloads built here: what a run
folder may hold, how two config payloads differ, and what older folders are taken to have
used for the keys added since."""

from __future__ import annotations

from pathlib import Path

import pytest

from usbpo_cli.runs.folders import (
    NOT_SET,
    comparable,
    first_difference,
    foreign_entry,
    prepare_run_dir,
)


def make(root: Path, *names: str) -> Path:
    """Files (a trailing / makes a folder) under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if name.endswith("/") else path.write_text("x")
    return root


def test_a_folder_of_run_files_holds_nothing_foreign(tmp_path: Path) -> None:
    assert foreign_entry(make(tmp_path / "empty")) is None
    run = make(
        tmp_path / "run",
        "config.json",
        "progress.csv",
        "events.log",
        ".lock",
        "status.json",
        ".status.json.123.tmp",
        "progress.unresumable-20261206-120000.csv",
        "checkpoints/ckpt-00001000.pt",
        "checkpoints/ckpt-00002000.pt.tmp",
        "checkpoints/unreadable-20261206-120000/",
    )
    assert foreign_entry(run) is None


@pytest.mark.parametrize(
    "names",
    [
        ("config.json", "notes.txt"),
        ("mine/",),  # an empty folder of one's own
        ("checkpoints",),  # a file where the checkpoints folder would go
        ("checkpoints/ckpt-00001000.pt", "checkpoints/weights.bin"),
        ("progress.csv/",),  # a folder under a run file's name
    ],
    ids=["a file", "an empty folder", "a checkpoints file", "a stray checkpoint", "a folder"],
)
def test_anything_a_run_does_not_write_is_named(tmp_path: Path, names: tuple[str, ...]) -> None:
    folder = make(tmp_path / "run", *names)
    assert foreign_entry(folder) == folder / names[-1].rstrip("/")


def test_a_new_run_folder_is_left_as_it_was_made(tmp_path: Path) -> None:
    out = tmp_path / "run"
    prepare_run_dir(out, {"algo": "sac"})
    assert out.is_dir() and list(out.iterdir()) == []  # the write probe is gone


def test_the_first_difference_is_named_where_it_is(tmp_path: Path) -> None:
    old = {"algo": "sac", "config": {"gamma": 0.99, "tau": 0.005}, "steps": 100}
    assert first_difference(old, dict(old)) is None
    changed = {**old, "config": {"gamma": 0.9, "tau": 0.005}}
    assert first_difference(old, changed) == ("config.gamma", 0.99, 0.9)
    assert first_difference(old, {**old, "config": 5}) == ("config", old["config"], 5)
    assert first_difference({"a": 1}, {"a": 1, "b": 2}) == ("b", NOT_SET, 2)
    assert first_difference({"a": 1, "b": 2}, {"b": 2}) == ("a", 1, NOT_SET)


def test_folders_written_before_a_setting_existed_count_as_its_old_value() -> None:
    old = {"algo": "sac", "steps": 100}  # recorded before --precision and --compile
    assert comparable(old) == comparable({**old, "precision": "fp32", "compile": False})
    assert comparable(old) != comparable({**old, "compile": True})
    assert comparable(old) != comparable({**old, "precision": "bf16"})
