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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from usbpo_cli.agents.base import Reporter, RunSummary, no_report
from usbpo_cli.agents.registry import get_algorithm
from usbpo_cli.envs.state import saves_simulator
from usbpo_cli.envs.tasks import task_info
from usbpo_cli.envs.termination import bind_learned_rule
from usbpo_cli.errors import TrainingDiverged, UsageError
from usbpo_cli.runs.checkpoint import Checkpointer
from usbpo_cli.runs.config import borrowed_defaults, resolve_config
from usbpo_cli.runs.csvlog import CsvLogger, reconcile_progress
from usbpo_cli.runs.folders import (
    append_event,
    foreign_entry,
    prepare_run_dir,
    write_json_atomic,
)
from usbpo_cli.runs.lock import RunLock
from usbpo_cli.util.allocator import check_allocator
from usbpo_cli.util.compiler import check_compile
from usbpo_cli.util.precision import check_precision
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
    precision: str = "fp32"
    compile: bool = False  # torch.compile SAC's update (`--compile`)


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
    device = resolve_device(spec.device)
    check_precision(spec.precision, device)
    check_allocator()
    if spec.precision != "fp32" and not algorithm.agent_cls.mixed_precision:
        raise UsageError(f"--precision {spec.precision}: {spec.algo} runs in fp32 only")
    overrides = parse_overrides(spec.overrides, algorithm.config_cls)
    config, deviations = resolve_config(algorithm.config_cls, info.family, spec.preset, overrides)
    if spec.compile:
        policy = config.policy_optimiser() if hasattr(config, "policy_optimiser") else None
        if policy != "sac":
            uses = f"{policy}'s" if policy else "its own"
            raise UsageError(
                f"--compile compiles SAC's update, and {spec.algo} here uses {uses}; "
                f"run it without --compile"
            )
        check_compile(device)
    payload: dict[str, Any] = {
        "algo": spec.algo,
        "env_id": spec.env_id,
        "seed": spec.seed,
        "steps": spec.steps,
        "device": spec.device,
        "precision": spec.precision,
        "compile": spec.compile,
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
    """Validated, locked runs whose folders and config.json exist (and, when resuming, whose
    agent is restored): all that can fail on input is past. One run, or several seeds of one
    configuration trained as one agent (`specs`: one per seed, each with its own folder,
    config.json, progress.csv, checkpoints and lock, exactly as a lone run's)."""

    specs: list[RunSpec]
    agent: Any
    checkpointers: list[Checkpointer]
    locks: list[RunLock]
    notify: Notify = _quiet
    resumed_from: int | None = None

    @property
    def spec(self) -> RunSpec:
        """The first (for a lone run, the only) seed's spec."""
        return self.specs[0]

    @property
    def checkpointer(self) -> Checkpointer:
        return self.checkpointers[0]

    def note(self, message: str, echo: bool = True, seed: int | None = None) -> None:
        """Log `message` in seed `seed`'s events.log (every seed's when None)."""
        specs = self.specs if seed is None else [self.specs[seed]]
        for spec in specs:
            append_event(Path(spec.out), message)
        if echo:
            self.notify(message)

    def train(self, report: Reporter | Sequence[Reporter] = no_report) -> RunSummary:
        """Train to the end, rolling every seed back to its last good checkpoint when one
        diverges (the diverged seed with a fresh random stream; the others replay exactly),
        and stopping after MAX_ROLLBACKS of them. `report`: one per seed, or one for all.
        Returns the first seed's summary (see `summaries` for every seed's)."""
        seeds = len(self.specs)
        reports = list(report) if isinstance(report, Sequence) else [report] * seeds
        loggers = [CsvLogger(Path(spec.out) / "progress.csv") for spec in self.specs]
        checkpoints = [checkpointer.save for checkpointer in self.checkpointers]
        rollbacks = 0
        try:
            while True:
                try:
                    summary = self.agent.train(loggers, reports, checkpoints)
                    self.summaries = [
                        dataclasses.replace(summary, **self.agent.seed_results(s))
                        for s in range(seeds)
                    ]
                    self.note(f"finished at env step {summary.env_steps}", echo=False)
                    return self.summaries[0]
                except TrainingDiverged as error:
                    rollbacks += 1
                    loaded = [checkpointer.load_latest() for checkpointer in self.checkpointers]
                    if rollbacks > MAX_ROLLBACKS or any(state is None for state, _ in loaded):
                        self.note(f"stopped: {error}", seed=error.seed)
                        raise TrainingDiverged(
                            f"{error}; stopped after {rollbacks - 1} rollback(s) to the last "
                            f"good checkpoint (rows so far are kept)",
                            error.seed,
                        ) from None
                    for s, (state, warnings) in enumerate(loaded):
                        for warning in warnings:
                            self.note(warning, seed=s)
                        self.agent.load_state_dict(state["agent"], s)
                    for s in range(seeds) if error.seed is None else [error.seed]:
                        self.agent.reseed(rollbacks, s)
                    self.note(
                        f"warning: {error}; rolled back to env step "
                        f"{self.agent.loops[0].next_step} ({rollbacks}/{MAX_ROLLBACKS})",
                        seed=error.seed,
                    )
        finally:
            for logger in loggers:
                logger.close()
            for lock in self.locks:
                lock.release()


def prepare_run(
    spec: RunSpec | Sequence[RunSpec],
    *,
    resume: bool = False,
    restart: bool = False,
    keep_checkpoints: int = 2,
    notify: Notify = _quiet,
) -> PreparedRun:
    """Validate, guard and lock the run folder(s), then restore the agent from the newest
    readable checkpoint (`resume`) or start it. A `resume` with no readable checkpoint left is
    refused unless `restart`: then the run starts over in its folder, once that folder is seen
    to hold only this run's files (earlier rows and unreadable checkpoints are kept aside).

    Several specs (seeds of one configuration, differing only in seed and folder) become one
    agent training them all; resumed, their checkpoints must stand at the same env step."""
    specs = [spec] if isinstance(spec, RunSpec) else list(spec)
    if restart and not resume:
        raise UsageError(
            "--restart goes with --resume: it starts over only when nothing is left to resume"
        )
    _check_one_configuration(specs)
    if keep_checkpoints < 1:
        raise UsageError(f"--keep-checkpoints must be >= 1, got {keep_checkpoints}")
    resolved = [resolve_run(one) for one in specs]
    config = resolved[0][0]
    locks: list[RunLock] = []
    try:
        checkpointers, states = [], []
        for one, (_, payload) in zip(specs, resolved):
            out = Path(one.out)
            prepare_run_dir(out, payload, resume)
            checkpointer = Checkpointer(
                out, {"algo": one.algo, "env_id": one.env_id}, keep_checkpoints
            )
            locks.append(RunLock(out))
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
            checkpointers.append(checkpointer)
            states.append((state, warnings))
        steps = {state["agent"]["loop"]["next_step"] for state, _ in states if state is not None}
        if len(steps) > 1 or (steps and any(state is None for state, _ in states)):
            raise UsageError(
                "seeds trained together must resume from the same env step; these stand at "
                f"{sorted(steps)}: continue them one at a time"
            )
        first = specs[0]
        agent = get_algorithm(first.algo).agent_cls(
            first.env_id,
            config,
            seed=[one.seed for one in specs],
            total_steps=first.steps,
            device=resolve_device(first.device),
            truncate_obs=first.truncate_obs,
            precision=first.precision,
            compiled=first.compile,
        )
        bind_learned_rule(agent)  # a task without a known termination rule learns one
        run = PreparedRun(specs, agent, checkpointers, locks, notify)
        for s, (_, warnings) in enumerate(states):
            for warning in warnings:
                run.note(f"warning: {warning}", seed=s)
        if steps:
            for s, (state, _) in enumerate(states):
                _restore(run, state, s)
            run.resumed_from = agent.loops[0].next_step
            if not saves_simulator(agent.eval_env):
                run.note(
                    f"warning: {first.env_id}'s simulator state is not in its checkpoints "
                    "(neither MuJoCo nor a classic-control task): the episode under way at step "
                    f"{run.resumed_from} goes on from a rebuilt env, so this resume is not exact"
                )
        else:
            agent.begin()
            for s, (_, payload) in enumerate(resolved):
                _start_over(run, s, resume, payload)
        for lock in locks:
            lock.announce()
        return run
    except BaseException:
        for lock in locks:
            lock.release()
        raise


def _check_one_configuration(specs: list[RunSpec]) -> None:
    """Seeds trained as one agent must share everything but their seed and folder."""
    if not specs:
        raise UsageError("no run to prepare")
    shared = [dataclasses.replace(one, seed=0, out=Path(".")) for one in specs]
    if any(one != shared[0] for one in shared[1:]):
        raise UsageError("seeds trained together must share env, algo, steps and settings")
    if len({one.seed for one in specs}) != len(specs):
        raise UsageError("seeds trained together must differ")
    if len(specs) > 1 and not get_algorithm(specs[0].algo).agent_cls.vectorises:
        raise UsageError(f"{specs[0].algo} trains one seed per process")


def _start_over(run: PreparedRun, seed: int, resume: bool, payload: dict[str, Any]) -> None:
    """A seed with nothing to resume from: its folder's config.json and first checkpoint."""
    out = Path(run.specs[seed].out)
    if resume:  # --restart: nothing readable to resume from
        run.note("--restart: no readable checkpoint; starting this run over", seed=seed)
        _set_aside_checkpoints(run, seed)
    if (out / "progress.csv").exists():  # progress without any checkpoint: keep it aside
        kept = out / f"progress.unresumable-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        os.replace(out / "progress.csv", kept)
        run.note(f"no checkpoint to resume from; earlier rows kept in {kept.name}", seed=seed)
    write_json_atomic(out / "config.json", payload)
    run.checkpointers[seed].save({"agent": run.agent.state_dict(seed), "row": None}, 0)


def _check_only_run_files(out: Path) -> None:
    """`--restart` starts over only in a folder with nothing but run files in it."""
    foreign = foreign_entry(out)
    if foreign is not None:
        raise UsageError(
            f"--restart: {out} also holds {foreign.relative_to(out)}, which is not this run's; "
            f"move it away or choose another --out"
        )


def _set_aside_checkpoints(run: PreparedRun, seed: int = 0) -> None:
    """Unreadable checkpoints go to `checkpoints/unreadable-<time>/`: kept, never resumed from."""
    folder = run.checkpointers[seed].folder
    torn = sorted(folder.glob("ckpt-*")) if folder.is_dir() else []
    if not torn:
        return
    aside = folder / f"unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir(exist_ok=True)
    for path in torn:
        os.replace(path, aside / path.name)
    run.note(
        f"{len(torn)} unreadable checkpoint file(s) kept in checkpoints/{aside.name}", seed=seed
    )


def _restore(run: PreparedRun, state: dict, seed: int = 0) -> None:
    """Load a checkpoint's state into seed `seed` of the agent and make its progress.csv
    agree with it."""
    run.agent.load_state_dict(state["agent"], seed)
    expected = state["agent"]["loop"]["rows"]
    progress = Path(run.specs[seed].out) / "progress.csv"
    have, notes = reconcile_progress(progress, expected)
    for message in notes:
        run.note(message, seed=seed)
    if have == expected - 1 and state["row"] is not None:
        logger = CsvLogger(progress)  # the row the kill kept from the CSV, from the checkpoint
        logger.write(state["row"])
        logger.close()
    elif have != expected:
        raise UsageError(
            f"{progress} has {have} rows but the checkpoint has {expected}; "
            f"restore the file or start a new run"
        )
    run.note(f"resumed from env step {run.agent.loops[seed].next_step}", seed=seed)


def run_training(
    spec: RunSpec | Sequence[RunSpec],
    report: Reporter | Sequence[Reporter] = no_report,
    resume: bool = False,
    restart: bool = False,
) -> list[RunSummary]:
    """Train one run, or several seeds of one configuration as one agent; every seed's
    summary."""
    run = prepare_run(spec, resume=resume, restart=restart)
    run.train(report)
    return run.summaries
