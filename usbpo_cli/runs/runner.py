"""One training run from a user's request to a run folder: resolve and validate the config, guard
the folder, write `config.json`, train, append `progress.csv`. `train` and `compare` both use it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from usbpo_cli.agents.base import Reporter, RunSummary, no_report
from usbpo_cli.agents.registry import get_algorithm
from usbpo_cli.envs.tasks import task_info
from usbpo_cli.envs.termination import bind_learned_rule
from usbpo_cli.errors import TrainingDiverged, UsageError
from usbpo_cli.runs.checkpoint import Checkpointer
from usbpo_cli.runs.config import borrowed_defaults, resolve_config
from usbpo_cli.runs.csvlog import CsvLogger, reconcile_progress
from usbpo_cli.runs.folders import append_event, prepare_run_dir, write_json_atomic
from usbpo_cli.runs.lock import RunLock
from usbpo_cli.util.settings import parse_overrides

MAX_STEPS = 1_000_000_000  # --steps above this is a typo, not a run


@dataclass
class RunSpec:
    env_id: str
    algo: str
    seed: int
    steps: int
    out: Path
    device: str = "cpu"
    preset: str = "paper"
    overrides: list[str] = field(default_factory=list)
    truncate_obs: bool = False


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible to torch")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: only cpu and cuda are supported")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(
            f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible"
        )
    return device


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("usbpo", "torch", "gymnasium", "mujoco", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def resolve_run(spec: RunSpec) -> tuple[Any, dict[str, Any]]:
    """Validate everything the user asked for before any file is touched.

    Returns the resolved config object and the full `config.json` payload.
    """
    if spec.steps <= 0:
        raise UsageError(f"--steps must be positive, got {spec.steps}")
    if spec.steps > MAX_STEPS:
        raise UsageError(f"--steps must be at most 1e9 ({MAX_STEPS}), got {spec.steps}")
    if spec.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {spec.seed}")
    algorithm = get_algorithm(spec.algo)
    info = task_info(spec.env_id, spec.truncate_obs)
    resolve_device(spec.device)
    overrides = parse_overrides(spec.overrides, algorithm.config_cls)
    config, deviations = resolve_config(algorithm.config_cls, info.family, spec.preset, overrides)
    payload: dict[str, Any] = {
        "algo": spec.algo,
        "env_id": spec.env_id,
        "seed": spec.seed,
        "steps": spec.steps,
        "device": spec.device,
        "preset": spec.preset,
        "truncate_obs": spec.truncate_obs,
        "task": dataclasses.asdict(info),
        "config": dataclasses.asdict(config),
        "deviations_from_paper": deviations,
        **_no_paper_values(algorithm.config_cls, info.family, spec.preset, overrides),
        "versions": _versions(),
        "git_commit": _git_commit(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    return config, payload


def _no_paper_values(config_cls: type, family: str | None, preset: str, overrides: dict) -> dict:
    """`no_paper_values` for config.json: what a task outside the paper's tables borrows (the
    key is left out for paper tasks, so their config.json stays as it was)."""
    borrowed = borrowed_defaults(config_cls, family, preset, overrides)
    return {"no_paper_values": borrowed} if borrowed else {}


MAX_ROLLBACKS = 3

Notify = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@dataclass
class PreparedRun:
    """A validated, locked run whose folder and config.json exist (and, when resuming, whose
    agent is restored): all that can fail on input is past."""

    spec: RunSpec
    agent: Any
    checkpointer: Checkpointer
    lock: RunLock
    notify: Notify = _quiet
    resumed_from: int | None = None

    def note(self, message: str, echo: bool = True) -> None:
        append_event(Path(self.spec.out), message)
        if echo:
            self.notify(message)

    def _checkpoint(self, state: dict, step: int) -> None:
        self.checkpointer.save(state, step)

    def train(self, report: Reporter = no_report) -> RunSummary:
        """Train to the end, rolling back to the last good checkpoint when training diverges
        (with a fresh random stream), and stopping after MAX_ROLLBACKS of them."""
        logger = CsvLogger(Path(self.spec.out) / "progress.csv")
        rollbacks = 0
        try:
            while True:
                try:
                    summary = self.agent.train(logger, report, self._checkpoint)
                    self.note(f"finished at env step {summary.env_steps}", echo=False)
                    return summary
                except TrainingDiverged as error:
                    rollbacks += 1
                    state, warnings = self.checkpointer.load_latest()
                    if rollbacks > MAX_ROLLBACKS or state is None:
                        self.note(f"stopped: {error}")
                        raise TrainingDiverged(
                            f"{error}; stopped after {rollbacks - 1} rollback(s) to the last "
                            f"good checkpoint (rows so far are kept)"
                        ) from None
                    for warning in warnings:
                        self.note(warning)
                    self.agent.load_state_dict(state["agent"])
                    self.agent.reseed(rollbacks)
                    self.note(
                        f"warning: {error}; rolled back to env step "
                        f"{self.agent.loop.next_step} ({rollbacks}/{MAX_ROLLBACKS})"
                    )
        finally:
            logger.close()
            self.lock.release()


def prepare_run(
    spec: RunSpec,
    *,
    resume: bool = False,
    restart: bool = False,
    keep_checkpoints: int = 2,
    notify: Notify = _quiet,
) -> PreparedRun:
    """Validate, guard and lock the run folder, then restore the agent from the newest readable
    checkpoint (`resume`) or start it. A `resume` with no readable checkpoint left is refused
    unless `restart`: then the run starts over in its folder, once that folder is seen to hold
    only this run's files (earlier rows and unreadable checkpoints are kept aside)."""
    if restart and not resume:
        raise UsageError(
            "--restart goes with --resume: it starts over only when nothing is left to resume"
        )
    config, payload = resolve_run(spec)
    if keep_checkpoints < 1:
        raise UsageError(f"--keep-checkpoints must be >= 1, got {keep_checkpoints}")
    out = Path(spec.out)
    prepare_run_dir(out, payload, resume)
    checkpointer = Checkpointer(out, {"algo": spec.algo, "env_id": spec.env_id}, keep_checkpoints)
    lock = RunLock(out)
    try:
        state, warnings = checkpointer.load_latest() if resume else (None, [])
        if resume and state is None:
            if not restart:
                found = len(list(checkpointer.folder.glob("ckpt-*")))
                what = f"{found} unreadable" if found else "none there"
                raise UsageError(
                    f"--resume: no readable checkpoint in {checkpointer.folder} ({what}); "
                    f"add --restart to start this run over in {out}"
                )
            _check_only_run_files(out)
        agent = get_algorithm(spec.algo).agent_cls(
            spec.env_id,
            config,
            seed=spec.seed,
            total_steps=spec.steps,
            device=resolve_device(spec.device),
            truncate_obs=spec.truncate_obs,
        )
        bind_learned_rule(agent)  # a task without a known termination rule learns one
        run = PreparedRun(spec, agent, checkpointer, lock, notify)
        for warning in warnings:
            run.note(f"warning: {warning}")
        if state is not None:
            _restore(run, state)
        else:
            if resume:  # --restart: nothing readable to resume from
                run.note("--restart: no readable checkpoint; starting this run over")
                _set_aside_checkpoints(run)
            if (out / "progress.csv").exists():  # progress without any checkpoint: keep it aside
                kept = out / f"progress.unresumable-{time.strftime('%Y%m%d-%H%M%S')}.csv"
                os.replace(out / "progress.csv", kept)
                run.note(f"no checkpoint to resume from; earlier rows kept in {kept.name}")
            write_json_atomic(out / "config.json", payload)
            agent.begin()
            checkpointer.save({"agent": agent.state_dict(), "row": None}, 0)
        lock.announce()
        return run
    except BaseException:
        lock.release()
        raise


# What a run folder holds; `--restart` starts over only in a folder with nothing else in it.
RUN_FILES = ("config.json", "progress.csv", "events.log", ".lock", ".write-test", "status.json")
RUN_FILE_PATTERNS = ("progress.unresumable-*.csv", "*.tmp")
CHECKPOINT_PATTERNS = ("ckpt-*.pt", "ckpt-*.pt.tmp", "unreadable-*")


def _check_only_run_files(out: Path) -> None:
    for path in sorted(out.iterdir()):
        if path.name == "checkpoints" and path.is_dir():
            for inner in sorted(path.iterdir()):
                if not any(inner.match(p) for p in CHECKPOINT_PATTERNS):
                    _not_this_runs(out, inner)
        elif not path.is_file() or not (
            path.name in RUN_FILES or any(path.match(p) for p in RUN_FILE_PATTERNS)
        ):
            _not_this_runs(out, path)


def _not_this_runs(out: Path, path: Path) -> None:
    raise UsageError(
        f"--restart: {out} also holds {path.relative_to(out)}, which is not this run's; "
        f"move it away or choose another --out"
    )


def _set_aside_checkpoints(run: PreparedRun) -> None:
    """Unreadable checkpoints go to `checkpoints/unreadable-<time>/`: kept, never resumed from."""
    folder = run.checkpointer.folder
    torn = sorted(folder.glob("ckpt-*")) if folder.is_dir() else []
    if not torn:
        return
    aside = folder / f"unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir(exist_ok=True)
    for path in torn:
        os.replace(path, aside / path.name)
    run.note(f"{len(torn)} unreadable checkpoint file(s) kept in checkpoints/{aside.name}")


def _restore(run: PreparedRun, state: dict) -> None:
    """Load a checkpoint's state into the agent and make progress.csv agree with it."""
    run.agent.load_state_dict(state["agent"])
    expected = state["agent"]["loop"]["rows"]
    progress = Path(run.spec.out) / "progress.csv"
    have, notes = reconcile_progress(progress, expected)
    for message in notes:
        run.note(message)
    if have == expected - 1 and state["row"] is not None:
        logger = CsvLogger(progress)  # the row the kill kept from the CSV, from the checkpoint
        logger.write(state["row"])
        logger.close()
    elif have != expected:
        raise UsageError(
            f"{progress} has {have} rows but the checkpoint has {expected}; "
            f"restore the file or start a new run"
        )
    run.resumed_from = run.agent.loop.next_step
    run.note(f"resumed from env step {run.resumed_from}")


def run_training(
    spec: RunSpec, report: Reporter = no_report, resume: bool = False, restart: bool = False
) -> RunSummary:
    return prepare_run(spec, resume=resume, restart=restart).train(report)
