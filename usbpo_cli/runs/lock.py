"""The run lock: one process per run folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

from usbpo_cli.errors import UsageError


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
