"""What `compare` and `ablate` show while a grid runs: what the grid is (envs, algos or variants,
seeds, steps, folder), one line per running run (its env step, phase and ETA, read from the
`status.json` each run keeps current) and the grid's ETA.

The grid ETA schedules what is left on the workers: each running run takes its own ETA, each
pending run the cost model's estimate, scaled by how the running runs' measured ETAs compare
with the cost model on this machine.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from usbpo_cli.errors import UsageError
from usbpo_cli.runs.status import (
    LONG_RUN_S,
    episode_limit,
    estimate,
    format_duration,
    grid_eta,
    read_status,
)


def grid_folder(grid: list) -> Path:
    """The grid's `--out`: runs live in `<out>/<env>/<label>/seed<k>`."""
    return Path(grid[0].spec.out).parents[2]


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def grid_header(grid: list) -> str:
    """One line: which envs, algos (or study variants), seeds and steps, and where."""
    envs = _unique([run.env for run in grid])
    labels = _unique([run.variant.label for run in grid])
    seeds = sorted({run.seed for run in grid})
    kind = "algos" if all(run.variant.label == run.variant.algo for run in grid) else "variants"
    seed_text = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    spec = grid[0].spec
    return (
        f"grid {grid_folder(grid)}: envs {', '.join(envs)}; {kind} {', '.join(labels)}; "
        f"seeds {seed_text}; {spec.steps} env steps per run; preset {spec.preset}; "
        f"device {spec.device}"
    )


def run_name(spec: Any) -> str:
    return f"{spec.env_id} {Path(spec.out).parent.name} seed{spec.seed}"


_CONFIGS: dict[tuple, dict[str, Any]] = {}


def run_config(spec: Any) -> dict[str, Any] | None:
    """The resolved config of a grid run, as a dict (None if it cannot be resolved)."""
    from usbpo_cli.agents.registry import get_algorithm
    from usbpo_cli.envs.termination import env_family
    from usbpo_cli.runs.config import resolve_config
    from usbpo_cli.util.settings import parse_overrides

    key = (spec.env_id, spec.algo, spec.preset, tuple(spec.overrides))
    if key not in _CONFIGS:
        try:
            config_cls = get_algorithm(spec.algo).config_cls
            overrides = parse_overrides(list(spec.overrides), config_cls)
            config, _ = resolve_config(config_cls, env_family(spec.env_id), spec.preset, overrides)
        except UsageError:
            return None
        _CONFIGS[key] = dataclasses.asdict(config)
    return _CONFIGS[key]


def run_estimate(spec: Any, start: int, threads: int, slowdown: float | None = None) -> float:
    config = run_config(spec)
    if config is None:
        return 0.0
    limit = episode_limit(spec.env_id)
    return estimate(config, spec.steps, start, threads, limit, slowdown)["total"]


def planned_seconds(specs: list, slots: int, threads: int, slowdown: float | None = None) -> float:
    """The cost model's wall seconds for these runs (each from where its status file says it
    stands) on `slots` workers."""
    seconds = [run_estimate(spec, _start_step(spec), threads, slowdown) for spec in specs]
    return grid_eta([], seconds, slots)


def _start_step(spec: Any) -> int:
    status = read_status(Path(spec.out))
    try:
        return int(status["env_step"]) if status else 0
    except (KeyError, TypeError, ValueError):
        return 0


class GridView:
    """The live display of a running grid; `poll` runs on a background thread, `finished` is
    called when a run ends."""

    def __init__(
        self,
        todo: list,
        slots: int,
        threads: int,
        console: Console,
        slowdown: float | None = None,
    ) -> None:
        self.specs = {str(run.spec.out): run.spec for run in todo}
        self.slots, self.threads, self.slowdown = slots, threads, slowdown
        self.starts = {out: _start_step(spec) for out, spec in self.specs.items()}
        self.estimates = {
            out: run_estimate(spec, self.starts[out], threads, slowdown)
            for out, spec in self.specs.items()
        }
        self.status: dict[str, dict[str, Any]] = {}
        self.done: set[str] = set()
        self.tasks: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.began = time.time()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[phase]:<13}"),
            TextColumn("{task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.grid_task = self.progress.add_task(
            "[bold]grid[/]", total=len(todo), count=f"0/{len(todo)} runs", phase="", eta=""
        )
        self._update_grid()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    # --- the estimate before anything runs ------------------------------------------------------
    def planned_seconds(self) -> float:
        return grid_eta([], list(self.estimates.values()), self.slots)

    def long_cpu_grid(self) -> bool:
        on_cpu = all(spec.device == "cpu" for spec in self.specs.values())
        return on_cpu and self.planned_seconds() > LONG_RUN_S

    # --- live --------------------------------------------------------------------------------
    def __enter__(self) -> GridView:
        self.progress.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.poll()
        self.progress.stop()

    def _watch(self) -> None:
        while not self.stop.wait(1.0):
            self.poll()

    def poll(self) -> None:
        with self.lock:
            for out, spec in self.specs.items():
                if out in self.done:
                    continue
                status = read_status(Path(out))
                if not status or status.get("state") != "running":
                    continue
                if float(status.get("updated", 0)) < self.began - 1:  # left by an earlier run
                    continue
                self.status[out] = status
                step = int(status.get("env_step", 0))
                eta = status.get("eta_s")
                eta_text = "" if eta is None else f"eta {format_duration(eta)}"
                if status.get("eta_basis") != "measured" and eta is not None:
                    eta_text = f"eta ~{format_duration(eta)}"
                fields = {
                    "completed": step,
                    "count": f"{step}/{spec.steps} env steps",
                    "phase": str(status.get("phase") or ""),
                    "eta": eta_text,
                }
                if out not in self.tasks:
                    self.tasks[out] = self.progress.add_task(
                        run_name(spec), total=spec.steps, **fields
                    )
                else:
                    self.progress.update(self.tasks[out], **fields)
            self._update_grid()

    def finished(self, spec: Any) -> None:
        with self.lock:
            out = str(spec.out)
            self.done.add(out)
            self.status.pop(out, None)
            if out in self.tasks:
                self.progress.remove_task(self.tasks.pop(out))
            self.progress.advance(self.grid_task)
            self._update_grid()

    def seconds_left(self) -> float:
        """The grid's ETA: running runs by their own ETA, pending ones by the cost model scaled
        by the measured/estimated ratio of the running runs (1 until one is measured)."""
        running, ratios = [], []
        for out, status in self.status.items():
            eta = status.get("eta_s")
            if eta is None:
                continue
            running.append(float(eta))
            if status.get("eta_basis") == "measured":
                step = int(status.get("env_step", 0))
                left = run_estimate(self.specs[out], step, self.threads, self.slowdown)
                if left > 0:
                    ratios.append(float(eta) / left)
        ratio = sum(ratios) / len(ratios) if ratios else 1.0
        pending = [
            self.estimates[out] * ratio
            for out in self.specs
            if out not in self.done and out not in self.status
        ]
        return grid_eta(running, pending, self.slots)

    def _update_grid(self) -> None:
        left = len(self.specs) - len(self.done)
        seconds = self.seconds_left() if left else 0.0
        measured = any(s.get("eta_basis") == "measured" for s in self.status.values())
        mark = "" if measured else "~"
        self.progress.update(
            self.grid_task,
            count=f"{len(self.done)}/{len(self.specs)} runs",
            eta=f"grid eta {mark}{format_duration(seconds)}" if left else "",
        )
