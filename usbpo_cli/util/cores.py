"""How many CPU cores this process may use, for sizing workers and torch threads."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: all of them unless it is pinned (`taskset`, a
    container's cpuset), where `os.cpu_count()` would still count the whole machine and size
    workers and threads for cores the process cannot use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
