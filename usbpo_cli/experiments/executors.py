"""Where the runs of a grid execute: local processes (default, no services) or a Ray cluster.

Both call the same `run_one`, so a run is exactly what `usbpo train` would do, and results land
in the same folder layout either way.
"""

from __future__ import annotations

import functools
import multiprocessing
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from usbpo_cli.errors import UsageError
from usbpo_cli.runs.runner import RunSpec
from usbpo_cli.runs.status import StatusReporter
from usbpo_cli.util.cores import usable_cores


@dataclass
class RunOutcome:
    spec: RunSpec
    final_return: float | None
    error: str | None  # one line when the run failed; the grid goes on with the others


def run_one(
    specs: Sequence[RunSpec], threads: int, slowdown: float | None = None
) -> list[RunOutcome]:
    """Train one run, or several seeds of one configuration as one agent, in this process with
    `threads` torch threads (workers must not fight); one outcome per run. `slowdown` prices
    the steps not yet measured in each run's ETA (status.estimate)."""
    import torch

    from usbpo_cli.errors import TrainingDiverged
    from usbpo_cli.runs.runner import run_training

    torch.set_num_threads(threads)
    # A folder with a config.json holds an unfinished run: continue it, or start it over when
    # it left no readable checkpoint (killed before its first): the grid owns the folder.
    unfinished = (Path(specs[0].out) / "config.json").exists()
    # <run>/status.json for each run, read by the grid view
    statuses = [StatusReporter(Path(spec.out), threads, slowdown=slowdown) for spec in specs]
    try:
        summaries = run_training(specs, statuses, resume=unfinished, restart=unfinished)
    except (UsageError, TrainingDiverged) as error:
        for status in statuses:
            if status.started:
                status.write("failed")
        return [RunOutcome(spec, None, str(error)) for spec in specs]
    for spec, status in zip(specs, statuses):
        status.finish(spec.steps)
    return [RunOutcome(spec, summary.final_return, None) for spec, summary in zip(specs, summaries)]


def plan_workers(requested: int, pending: int, threads: int = 0) -> tuple[int, int]:
    """Workers (at most the cores and the pending runs) and torch threads per worker: `threads`
    when given (to leave cores free for other work), else the cores shared out among them."""
    cores = usable_cores()
    if requested < 1:
        raise UsageError(f"--workers must be >= 1, got {requested}")
    if threads < 0:
        raise UsageError(f"--threads must be >= 0, got {threads}")
    workers = max(1, min(requested, cores, pending))
    return workers, threads or max(1, cores // workers)


Done = Callable[[RunOutcome], None]


class LocalExecutor:
    """A pool of fresh (spawned) Python processes on this machine; `slowdown` (this machine's
    factor on the cost model, calibration.py) prices each run's ETA until it is measured."""

    def __init__(self, workers: int, threads: int = 0, slowdown: float | None = None) -> None:
        self.requested, self.threads, self.slowdown = workers, threads, slowdown

    def run(self, units: Sequence[Sequence[RunSpec]], on_done: Done) -> list[RunOutcome]:
        """Train each unit (a run, or seeds trained as one agent) in its own process."""
        workers, threads = plan_workers(self.requested, len(units), self.threads)
        train = functools.partial(run_one, threads=threads, slowdown=self.slowdown)
        outcomes = []
        if workers == 1:  # no pool needed; keeps tracebacks and profiling simple
            for unit in units:
                for outcome in train(unit):
                    outcomes.append(outcome)
                    on_done(outcome)
            return outcomes
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(train, unit) for unit in units]
            for future in as_completed(futures):
                for outcome in future.result():
                    outcomes.append(outcome)
                    on_done(outcome)
        return outcomes


class RayExecutor:
    """Ray tasks: a local Ray instance when no address is given, else the cluster at `address`.

    Workers on other machines must see the same output folder (a shared filesystem), as with any
    cluster job that writes files.
    """

    def __init__(self, workers: int, address: str | None, threads: int = 0) -> None:
        self.requested, self.address, self.threads = workers, address, threads

    def run(self, units: Sequence[Sequence[RunSpec]], on_done: Done) -> list[RunOutcome]:
        """Train each unit (a run, or seeds trained as one agent) as one Ray task."""
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'usbpo[ray]'") from None
        workers, threads = plan_workers(self.requested, len(units), self.threads)
        started_here = not ray.is_initialized()
        if started_here:
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    ray.init(
                        num_cpus=workers * threads, include_dashboard=False, log_to_driver=False
                    )
            except ImportError as error:  # ray:// needs Ray's client extra (grpcio, ...)
                raise UsageError(
                    f"cannot reach Ray at {self.address}: {error}; pip install 'usbpo[ray]' "
                    "installs Ray with its client"
                ) from None
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = self.address or "a local instance"
                raise UsageError(f"cannot start Ray at {where}: {error}") from None
        remote = ray.remote(num_cpus=threads)(run_one)
        try:
            pending = {remote.remote(list(unit), threads): unit for unit in units}
            outcomes = []
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    unit = pending.pop(ref)
                    try:
                        done = ray.get(ref)
                    except Exception as error:  # a worker died: report it, keep the others
                        done = [
                            RunOutcome(spec, None, f"ray worker failed: {error}") for spec in unit
                        ]
                    for outcome in done:
                        outcomes.append(outcome)
                        on_done(outcome)
            return outcomes
        finally:
            if started_here:
                ray.shutdown()


# ray://host:port (Ray client) or host:port (join as a driver); a host name, IPv4 or [IPv6].
_ADDRESS = re.compile(
    r"^(ray://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9_.\-]*[A-Za-z0-9])?):(\d{1,5})$"
)


def check_address(address: str) -> None:
    """Refuse an `--address` that is not ray://host:port, host:port or auto (the cluster
    already running on this machine), before anything is written or started."""
    match = _ADDRESS.match(address.strip())
    if address.strip() == "auto":
        return
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise UsageError(
            f"--address {address!r}: expected ray://HOST:PORT or HOST:PORT (port 1-65535), or auto"
        )


def make_executor(
    kind: str,
    workers: int,
    address: str | None,
    threads: int = 0,
    slowdown: float | None = None,
):
    """The executor for `--executor`; every option is checked here, even for a grid with
    nothing left to run. `slowdown` is this machine's (local executor only: a cluster's
    machines are not this one)."""
    plan_workers(workers, 1, threads)  # refuses --workers < 1 and --threads < 0
    if kind == "local":
        if address is not None:
            raise UsageError("--address only applies to --executor ray")
        return LocalExecutor(workers, threads, slowdown)
    if kind == "ray":
        if address is not None:
            check_address(address)
        return RayExecutor(workers, address, threads)
    raise UsageError(f"unknown executor {kind!r} (choose: local, ray)")
