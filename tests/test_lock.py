"""The run lock (`runs/lock.py`): one process per run folder, a refusal that names the holder,
a refused process that leaves the lock file as it was, and a lock that dies with its holder."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from usbpo_cli.errors import UsageError
from usbpo_cli.runs.lock import RunLock


def refusal(out: Path) -> str | None:
    """The one line a second process would get for `out` (None: the folder is free)."""
    try:
        RunLock(out).release()
    except UsageError as busy:
        return str(busy)
    return None


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = RunLock(tmp_path)
    assert (tmp_path / ".lock").read_text() == ""  # taken, not yet announced
    assert refusal(tmp_path) == f"{tmp_path} is in use by another process; wait for it or stop it"
    (tmp_path / ".lock").write_text("pid 1 on gone-host since 2026-01-01 00:00:00 and more\n")
    first.announce()  # the last holder's line is replaced whole, not written over
    line = (tmp_path / ".lock").read_text()
    assert re.fullmatch(
        rf"pid {os.getpid()} on {re.escape(socket.gethostname())} "
        r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n",
        line,
    ), line
    assert refusal(tmp_path) == f"{tmp_path} is in use by {line.strip()}; wait for it or stop it"
    assert (tmp_path / ".lock").read_text() == line  # the refused process changed nothing
    first.release()
    first.release()  # twice is harmless (a run's end and its error path both release)
    assert refusal(tmp_path) is None
    assert (tmp_path / ".lock").read_text() == line  # the next holder replaces it on announcing


HOLD = """
import sys, time
from pathlib import Path
from usbpo_cli.runs.lock import RunLock
lock = RunLock(Path(sys.argv[1]))
lock.announce()
print("held", flush=True)
time.sleep(60)
"""


def test_the_lock_dies_with_its_holder_even_by_sigkill(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "held"
        busy = refusal(tmp_path)
        assert busy is not None and f"in use by pid {child.pid} on" in busy
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        deadline = time.monotonic() + 10
        while refusal(tmp_path) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refusal(tmp_path) is None
    finally:
        child.kill()
        child.wait()


def test_a_folder_that_cannot_hold_a_lock_is_an_error_not_a_free_pass(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        RunLock(tmp_path / "missing")


def test_a_previous_holders_line_is_replaced_not_appended_to(tmp_path: Path) -> None:
    """A finished run leaves its line in .lock; the next run's file opens at its end (append
    mode), and announcing must still leave one line, its own."""
    (tmp_path / ".lock").write_text("pid 1 on gone-host since 2026-01-01 00:00:00\n")
    lock = RunLock(tmp_path)
    lock.announce()
    lines = (tmp_path / ".lock").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pid {os.getpid()} on "), lines
    lock.release()


def test_a_refused_process_lets_go_of_the_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usbpo_cli.runs import lock as lock_module

    opened = []

    def tracked_open(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        opened.append(open(*args, **kwargs))
        return opened[-1]

    holder = RunLock(tmp_path)
    monkeypatch.setattr(lock_module, "open", tracked_open, raising=False)
    with pytest.raises(UsageError):
        RunLock(tmp_path)
    assert len(opened) == 1 and opened[0].closed
    holder.release()
