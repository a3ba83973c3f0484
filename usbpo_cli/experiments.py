"""Grids of runs for `compare` and `ablate`: which runs a grid holds, which are already done,
and the named ablation studies of the USB-PO paper.

A run folder is `<out>/<env>/<label>/seed<k>/`; `label` is the algorithm for `compare` and the
variant for `ablate`. Rerunning the same command skips complete runs, so an interrupted grid is
finished by running it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from usbpo_cli.errors import UsageError
from usbpo_cli.runlog import comparable
from usbpo_cli.runner import RunSpec, resolve_run


@dataclass(frozen=True)
class Variant:
    label: str
    algo: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    variants: tuple[Variant, ...]
    figure: str


def _lr_label(value: str) -> str:
    return f"usbpo-lr{value}"


STUDIES: dict[str, Study] = {
    study.name: study
    for study in (
        Study(
            "phase2-lr",
            "USB-PO with phase-2 learning rates 1e-5, 1e-4 (default) and 1e-3 (paper question 4)",
            tuple(
                Variant(_lr_label(lr), "usbpo", (f"phase2_lr={lr}",))
                for lr in ("1e-5", "1e-4", "1e-3")
            ),
            "phase2-lr",
        ),
        Study(
            "phase2-terms",
            "no phase 2 (= MBPO), phase 2 on model shift only, on model bias only, on both",
            (
                Variant("mbpo", "mbpo"),
                Variant("phase2-shift", "usbpo", ("phase2_terms=shift",)),
                Variant("phase2-bias", "usbpo", ("phase2_terms=bias",)),
                Variant("phase2-both", "usbpo", ("phase2_terms=both",)),
            ),
            "phase2-terms",
        ),
        Study(
            "limit-update",
            "MBPO with a smaller MLE learning rate (1e-3 default, 3e-4, 1e-4): 'just limit the "
            "update magnitude', against USB-PO",
            (
                Variant("mbpo", "mbpo"),
                Variant("mbpo-lr3e-4", "mbpo", ("model_lr=3e-4",)),
                Variant("mbpo-lr1e-4", "mbpo", ("model_lr=1e-4",)),
                Variant("usbpo", "usbpo"),
            ),
            "learning-curves",
        ),
        Study(
            "cmlo-threshold",
            "CMLO with event threshold alpha 1, 3 and 5 (paper Fig. 1)",
            tuple(Variant(f"cmlo-alpha{a}", "cmlo", (f"cmlo_alpha={a}",)) for a in (1, 3, 5)),
            "cmlo-threshold",
        ),
    )
}


@dataclass
class GridRun:
    env: str
    variant: Variant
    seed: int
    spec: RunSpec
    status: str = field(default="new")  # new, partial or complete


def build_grid(
    envs: list[str],
    variants: list[Variant],
    seeds: int,
    steps: int,
    out: Path,
    *,
    device: str = "cpu",
    preset: str = "paper",
    overrides: list[str] | None = None,
) -> list[GridRun]:
    """Every (env, variant, seed) run, validated up front so a typo fails before any training."""
    if seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {seeds}")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is a file, not a folder")
    if not envs or not variants:
        raise UsageError("the grid is empty: give at least one env and one algo")
    grid = []
    for env in envs:
        for variant in variants:
            for seed in range(seeds):
                spec = RunSpec(
                    env,
                    variant.algo,
                    seed,
                    steps,
                    out / env / variant.label / f"seed{seed}",
                    device,
                    preset,
                    [*variant.overrides, *(overrides or [])],
                )
                _, payload = resolve_run(spec)  # raises UsageError on any bad part
                grid.append(GridRun(env, variant, seed, spec, run_status(spec, payload)))
    return grid


def run_status(spec: RunSpec, wanted: dict) -> str:
    """complete: same config (`wanted`, the resolved config.json payload) and every evaluation
    row written; partial: anything else there."""
    folder = Path(spec.out)
    config_path, progress = folder / "config.json", folder / "progress.csv"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file, not a run folder")
    if not folder.exists() or not any(folder.iterdir()):
        return "new"
    try:
        existing = json.loads(config_path.read_text())
        if comparable(existing) != comparable(json.loads(json.dumps(wanted, default=str))):
            raise UsageError(f"{folder} holds a run with different settings; use another --out")
        lines = progress.read_text().strip().splitlines()
        last_step = int(float(lines[-1].split(",")[0])) if len(lines) > 1 else 0
    except (OSError, ValueError, json.JSONDecodeError, IndexError):
        return "partial"
    return "complete" if last_step >= spec.steps else "partial"
