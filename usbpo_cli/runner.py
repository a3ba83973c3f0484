"""One training run from a user's request to a run folder: resolve and validate the config, guard
the folder, write `config.json`, train, append `progress.csv`. `train` and `compare` both use it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from usbpo_cli.config import parse_overrides, resolve_config
from usbpo_cli.envs import task_info
from usbpo_cli.errors import UsageError
from usbpo_cli.loop import Reporter, RunSummary, _no_report
from usbpo_cli.registry import get_algorithm
from usbpo_cli.runlog import CsvLogger, prepare_run_dir, write_json_atomic


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
        "versions": _versions(),
        "git_commit": _git_commit(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    return config, payload


@dataclass
class PreparedRun:
    """A validated run whose folder and config.json exist: all that can fail on input is past."""

    spec: RunSpec
    agent: Any

    def train(self, report: Reporter = _no_report) -> RunSummary:
        logger = CsvLogger(Path(self.spec.out) / "progress.csv")
        try:
            return self.agent.train(logger, report)
        finally:
            logger.close()


def prepare_run(spec: RunSpec) -> PreparedRun:
    config, payload = resolve_run(spec)
    out = Path(spec.out)
    prepare_run_dir(out, payload)
    agent = get_algorithm(spec.algo).agent_cls(
        spec.env_id,
        config,
        seed=spec.seed,
        total_steps=spec.steps,
        device=resolve_device(spec.device),
        truncate_obs=spec.truncate_obs,
    )
    write_json_atomic(out / "config.json", payload)
    return PreparedRun(spec, agent)


def run_training(spec: RunSpec, report: Reporter = _no_report) -> RunSummary:
    return prepare_run(spec).train(report)
