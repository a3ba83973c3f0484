"""Running `usbpo` as a real subprocess from tests, and fingerprinting folders."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200", NO_COLOR="1")
    env.pop("FORCE_COLOR", None)
    return env


def usbpo(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`usbpo ARGS`, as `python -m usbpo_cli.app ARGS` in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "usbpo_cli.app", *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root`, files with a content hash."""
    state = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        state[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return state
