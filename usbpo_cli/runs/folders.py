"""Run folders: config.json, atomic writes, the guard that refuses a folder holding something
else, and the events log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from usbpo_cli.errors import UsageError

NOT_SET = "(not set)"
VOLATILE_CONFIG_KEYS = ("versions", "git_commit", "created", "command")


def write_text_atomic(path: Path, text: str) -> None:
    """Write then rename, so a reader never sees half a file and a crash leaves the old one."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


# Keys config.json and grid.json gained after runs and grids had been written, with the value
# those used.
LATER_KEYS = {"precision": "fp32", "compile": False}


def with_later_keys(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded config.json or grid.json payload with the keys added since filled in (after
    its own keys, so a difference is still named in the recorded order)."""
    missing = {k: v for k, v in LATER_KEYS.items() if k not in recorded}
    return {**recorded, **missing}


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The payload as a rerun must match it: no volatile keys; keys added later filled in."""
    return {k: v for k, v in with_later_keys(config).items() if k not in VOLATILE_CONFIG_KEYS}


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


# What a run folder holds: the files a run writes (checkpoints in their own subfolder).
RUN_FILES = ("config.json", "progress.csv", "events.log", ".lock", ".write-test", "status.json")
RUN_FILE_PATTERNS = ("progress.unresumable-*.csv", "*.tmp")
CHECKPOINT_PATTERNS = ("ckpt-*.pt", "ckpt-*.pt.tmp", "unreadable-*")


def foreign_entry(out: Path) -> Path | None:
    """The first entry of the folder `out` that no run writes; None when it holds only run
    files (or nothing)."""
    for path in sorted(out.iterdir()):
        if path.name == "checkpoints" and path.is_dir():
            for inner in sorted(path.iterdir()):
                if not any(inner.match(p) for p in CHECKPOINT_PATTERNS):
                    return inner
        elif not path.is_file() or not (
            path.name in RUN_FILES or any(path.match(p) for p in RUN_FILE_PATTERNS)
        ):
            return path
    return None


def prepare_run_dir(out: Path, config: dict[str, Any], resume: bool = False) -> None:
    """Create the run folder, refusing one that holds another run, (unless resuming) any
    earlier progress of this one, or, for a new run, anything a run does not write."""
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
    elif out.is_dir() and (foreign := foreign_entry(out)) is not None:  # a new run's folder
        raise UsageError(
            f"{out} holds {foreign.relative_to(out)}, which is not a run's; "
            f"give the run a new or empty folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to {out}: {error.strerror}") from None


def append_event(out: Path, message: str) -> None:
    """A timestamped line in the run's `events.log`: resumes, fallbacks, rollbacks."""
    with open(out / "events.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
