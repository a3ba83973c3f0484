"""Grids of runs for `compare` and `ablate`: which runs a grid holds, which are already done,
and the named ablation studies of the USB-PO paper.

A run folder is `<out>/<env>/<label>/seed<k>/`; `label` is the algorithm for `compare` and the
variant for `ablate`. Rerunning the same command skips complete runs, so an interrupted grid is
finished by running it again. `<out>/grid.json` (the manifest) says what the grid is; a folder
that holds anything else, or the same grid made with other settings, is refused before anything
is written.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from usbpo_cli.errors import UsageError
from usbpo_cli.runs.checkpoint import newest_checkpoint_step
from usbpo_cli.runs.csvlog import last_env_step
from usbpo_cli.runs.folders import (
    as_json,
    comparable,
    describe_difference,
    first_difference,
    refuse_current_folder,
    with_later_keys,
    write_json_atomic,
)
from usbpo_cli.runs.runner import RunSpec, resolve_run


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
    reference: str | None = None  # the USB-PO variant P(reference > variant) is reported for

    def varied_keys(self) -> set[str]:
        """The settings the study's variants set (and so `--set` may not touch)."""
        return {override_key(o) for v in self.variants for o in v.overrides}


def override_key(pair: str) -> str:
    """The setting a `key=value` override sets, named as the config names it (a dotted key is
    an alias: `cmlo.alpha` sets `cmlo_alpha`)."""
    return pair.split("=", 1)[0].strip().replace(".", "_")


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
            reference=_lr_label("1e-4"),
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
            reference="phase2-both",
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
            reference="usbpo",
        ),
        Study(
            "cmlo-threshold",
            "CMLO with event threshold alpha 1, 3 and 5 (paper Fig. 1)",
            tuple(Variant(f"cmlo-alpha{a}", "cmlo", (f"cmlo_alpha={a}",)) for a in (1, 3, 5)),
            "cmlo-threshold",
        ),
    )
}


def refuse_varied_keys(study: Study, overrides: list[str]) -> None:
    """`ablate --set` may set anything but what the study varies: every variant would run with
    the user's value while its label promised another."""
    varied = study.varied_keys()
    for pair in overrides:
        key = override_key(pair)
        if key in varied:
            labels = ", ".join(v.label for v in study.variants)
            raise UsageError(
                f"--set {pair.strip()}: study {study.name} varies {key} itself ({labels}); "
                f"drop this --set (for one value of {key}, use compare --set)"
            )


# ----------------------------------------------------------------------------- the grid manifest

MANIFEST = "grid.json"
# Recorded in the manifest but not compared on a rerun: an upgrade of usbpo may finish a grid.
MANIFEST_VOLATILE = ("usbpo_version", "created", "command")
# Files or folders that make a folder a run folder (`usbpo train`'s output).
RUN_MARKERS = ("config.json", "progress.csv", "checkpoints", "events.log")


def _package_version() -> str:
    try:
        return metadata.version("usbpo")
    except metadata.PackageNotFoundError:
        return "unknown"


def grid_manifest(
    kind: str,
    envs: list[str],
    variants: list[Variant],
    seeds: int,
    steps: int,
    *,
    preset: str = "paper",
    overrides: list[str] | None = None,
    device: str = "cpu",
    truncate_obs: bool = False,
    study: str | None = None,
    precision: str = "fp32",
    compile: bool = False,
) -> dict[str, Any]:
    """What a grid folder holds, written to `<out>/grid.json` on first use: `kind` compare or
    ablate, the study, envs, algos (compare) or variants with every setting their label stands
    for (ablate), seeds, steps, preset, every `--set`, device, precision, compile, truncate_obs
    and the version."""
    user_set = [_normalised(pair) for pair in overrides or []]
    manifest: dict[str, Any] = {"kind": kind}
    if study is not None:
        manifest["study"] = study
    manifest["envs"] = list(envs)
    if kind == "compare":
        manifest["algos"] = [v.algo for v in variants]
    manifest.update(
        seeds=seeds,
        steps=steps,
        preset=preset,
        set=user_set,
        device=device,
        precision=precision,
        compile=compile,
        truncate_obs=truncate_obs,
    )
    if kind != "compare":  # last: a difference in `set` is named as such, not as the variants'
        manifest["variants"] = [
            {"label": v.label, "algo": v.algo, "set": [*v.overrides, *user_set]} for v in variants
        ]
    manifest.update(
        usbpo_version=_package_version(),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(sys.argv),
    )
    return manifest


def _normalised(pair: str) -> str:
    """`key=value` with the key as the config names it and no stray spaces."""
    if "=" not in pair:
        return pair.strip()  # refused when the grid is validated
    return f"{override_key(pair)}={pair.split('=', 1)[1].strip()}"


def _compared(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as a rerun must match it: envs and algos in any order."""
    kept = {k: v for k, v in with_later_keys(manifest).items() if k not in MANIFEST_VOLATILE}
    for key in ("envs", "algos"):
        if isinstance(kept.get(key), list):
            kept[key] = sorted(kept[key], key=str)
    return kept


def _what(manifest: dict[str, Any]) -> str:
    if manifest.get("kind") == "ablate":
        return f"the ablate study {manifest.get('study')}"
    return f"a {manifest.get('kind')} grid"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """A folder's grid manifest, None when it has none; an unreadable one is refused."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("kind") not in ("compare", "ablate"):
        raise UsageError(f"{path} is unreadable or not a usbpo grid manifest; refusing to use it")
    return data


def _is_run_folder(folder: Path) -> bool:
    return any((folder / marker).exists() for marker in RUN_MARKERS)


def _run_folders(out: Path) -> list[Path]:
    """Every run folder below `out` (hidden folders aside, as `plot` ignores them too)."""
    found = set()
    for marker in RUN_MARKERS:
        for path in out.rglob(marker):
            if not any(part.startswith(".") for part in path.relative_to(out).parts):
                found.add(path.parent)
    return sorted(found)


def check_grid_folder(out: Path, manifest: dict[str, Any], owned: set[Path]) -> None:
    """Refuse, before anything is written, a grid folder that is or holds something else: the
    current folder, a folder inside a run or another grid, a single run, another grid or
    study (or the same one with other settings), a run this grid would not own, or results
    written by something other than a usbpo grid."""
    refuse_current_folder(out)
    for parent in Path(out).resolve().parents:
        if (parent / MANIFEST).is_file():
            try:
                enclosing = read_manifest(parent)
            except UsageError:
                enclosing = None
            if enclosing is not None:
                raise UsageError(
                    f"--out {out} lies inside {_what(enclosing)} in {parent}; "
                    f"choose a folder outside it"
                )
        if (parent / "config.json").is_file() and (
            (parent / "progress.csv").is_file() or (parent / "checkpoints").is_dir()
        ):
            raise UsageError(f"--out {out} lies inside the run folder {parent}; choose another")
    if not out.is_dir():
        return
    marker = next((m for m in RUN_MARKERS if (out / m).exists()), None)
    if marker is not None:
        raise UsageError(
            f"--out {out} holds a single run ({marker} at its top), not a grid; "
            f"choose another --out"
        )
    existing = read_manifest(out)
    if existing is not None:
        if existing.get("kind") != manifest["kind"] or existing.get("study") != manifest.get(
            "study"
        ):
            raise UsageError(
                f"--out {out} holds {_what(existing)}, not {_what(manifest)}; choose another --out"
            )
        found = first_difference(_compared(existing), _compared(as_json(manifest)))
        if found is not None:
            key, was, now = found
            raise UsageError(
                f"--out {out} holds {_what(existing)} made with {key} {was!r}, not {now!r} "
                f"(see {out / MANIFEST}); rerun it as it was made, or choose another --out"
            )
    for folder in _run_folders(out):
        if folder not in owned:
            raise UsageError(
                f"--out {out} holds the run folder {folder}, which this grid would not own; "
                f"choose another --out"
            )
    if existing is None and not any(_is_run_folder(folder) for folder in owned):
        # A new grid writes its manifest before anything else, so its folder is new or empty.
        stray = min(out.iterdir(), default=None)
        if stray is not None:
            raise UsageError(
                f"--out {out} holds {stray.name} but no {MANIFEST}: not a usbpo grid folder; "
                f"give the grid a new or empty folder"
            )


def record_grid(out: Path, manifest: dict[str, Any]) -> str | None:
    """Write `<out>/grid.json` on first use; a note when the grid was made by another usbpo."""
    existing = read_manifest(out) if out.is_dir() else None
    if existing is None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / MANIFEST, manifest)
        return None
    if existing.get("usbpo_version") != manifest["usbpo_version"]:
        return (
            f"note: this grid was started with usbpo {existing.get('usbpo_version')}; "
            f"runs from now on use {manifest['usbpo_version']}"
        )
    return None


# ----------------------------------------------------------------------------- the grid


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
    manifest: dict[str, Any] | None = None,
    precision: str = "fp32",
    compile: bool = False,
) -> list[GridRun]:
    """Every (env, variant, seed) run, validated up front so a typo fails before any training,
    and (given the grid's `manifest`) the folder checked to be this grid's or new."""
    refuse_current_folder(out)
    if seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {seeds}")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is a file, not a folder")
    if not envs or not variants:
        raise UsageError("the grid is empty: give at least one env and one algo")
    planned = []
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
                    precision=precision,
                    compile=compile,
                )
                _, payload = resolve_run(spec)  # raises UsageError on any bad part
                planned.append((env, variant, seed, spec, payload))
    if manifest is not None:
        check_grid_folder(out, manifest, {Path(item[3].out) for item in planned})
    return [
        GridRun(env, variant, seed, spec, run_status(spec, payload))
        for env, variant, seed, spec, payload in planned
    ]


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
        if not isinstance(existing, dict):
            return "partial"  # resuming refuses it with one line
        if comparable(existing) != comparable(as_json(wanted)):
            difference = describe_difference(comparable(existing), comparable(as_json(wanted)))
            raise UsageError(
                f"{folder} holds a run with different settings ({difference}); use another --out"
            )
    except (OSError, ValueError, json.JSONDecodeError):
        return "partial"
    try:
        last_step = last_env_step(progress)
    except (OSError, ValueError, IndexError, UsageError):  # unreadable or torn: resume repairs it
        return "partial"
    return "complete" if last_step >= spec.steps else "partial"


VECTORISE_CHOICES = ("auto", "on", "off")


def plan_units(runs: list[GridRun], vectorise: str) -> tuple[list[list[GridRun]], list[str]]:
    """The grid's runs as units of work, each trained in one process: with `vectorise` on or
    auto, the seeds of one (env, algo or variant) that stand at the same point (all new, or
    resuming from the same env step) become one unit trained as one agent; the others are a
    unit each. Also one note per (env, algo) that could not be vectorised, saying why.
    Units keep the runs' order (seed by seed) by their first run."""
    if vectorise not in VECTORISE_CHOICES:
        raise UsageError(f"--vectorise {vectorise!r}: choose auto, on or off")
    if vectorise == "off":
        return [[run] for run in runs], []
    from usbpo_cli.agents.registry import get_algorithm

    groups: dict[tuple, list[GridRun]] = {}
    notes: dict[tuple[str, str], str] = {}
    for run in runs:
        agent_cls = get_algorithm(run.variant.algo).agent_cls
        if not agent_cls.vectorises:
            key: tuple = ("alone", run.env, run.variant.label, run.seed)
            notes[(run.env, run.variant.label)] = (
                f"{run.variant.label} on {run.env}: one process per seed "
                f"({agent_cls.single_seed_reason})"
            )
        else:
            point = None if run.status == "new" else newest_checkpoint_step(Path(run.spec.out))
            key = (run.env, run.variant.label, run.status == "new", point)
        groups.setdefault(key, []).append(run)
    counts = Counter((run.env, run.variant.label) for run in runs)
    # A unit is made at its first run, so the units keep the runs' order.
    return list(groups.values()), [note for key, note in notes.items() if counts[key] > 1]
