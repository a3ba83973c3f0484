"""How a run's config is resolved: the paper's per-task values, cheaper CPU presets, then the
user's `--set`, with every value that differs from the paper recorded as a deviation in the
run's `config.json`.

The config dataclasses themselves live beside their agents (`agents/`, `baselines/`) and
validate themselves; `--set` parsing is `util/settings.py`. Presets are plain override dicts:
a key applies to every config that has that field and is ignored by the others.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from usbpo_cli.agents.dyna import DynaConfig
from usbpo_cli.errors import UsageError
from usbpo_cli.util.settings import Settings, config_fields

# Paper hyperparameters per task family (MBPO's, reused unchanged by USB-PO).
PAPER_TASKS: dict[str, dict[str, Any]] = {
    "Hopper": {
        "updates_per_step": 20,
        "rollout_schedule": (20, 150, 1, 15),
        "target_entropy": -1.0,
    },
    "Walker2d": {
        "updates_per_step": 20,
        "rollout_schedule": (20, 150, 1, 1),
        "target_entropy": -3.0,
    },
    "HalfCheetah": {
        "updates_per_step": 40,
        "rollout_schedule": (20, 150, 1, 1),
        "target_entropy": -3.0,
    },
    "Ant": {"updates_per_step": 20, "rollout_schedule": (20, 100, 1, 25), "target_entropy": -4.0},
    "Humanoid": {
        "updates_per_step": 20,
        "rollout_schedule": (20, 300, 1, 25),
        "target_entropy": -2.0,
        "model_hidden_size": 400,
        "model_train_freq": 1000,
        "model_retain_epochs": 5,
    },
    "InvertedPendulum": {
        "updates_per_step": 10,
        "rollout_schedule": (1, 15, 1, 1),
        "target_entropy": -0.05,
        "epoch_length": 250,
    },
}

# Per-task values of one algorithm's own settings, from that algorithm's paper and code (CMLO's
# event threshold and compute interval, Ji et al. 2022, the authors' per-task configs); applied
# like the table above, to the configs that have the field.
ALGORITHM_TASKS: dict[str, dict[str, Any]] = {
    "Hopper": {"cmlo_alpha": 1.2, "cmlo_compute_interval": 20},
    "Walker2d": {"cmlo_alpha": 3.0, "cmlo_compute_interval": 20},
    "HalfCheetah": {"cmlo_alpha": 2.0, "cmlo_compute_interval": 50},
    "Ant": {"cmlo_alpha": 2.0, "cmlo_compute_interval": 50},
    "Humanoid": {"cmlo_alpha": 2.5, "cmlo_compute_interval": 50},
}

# Cheaper presets for CPU work. Each deviates from the paper; the deviations are recorded.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu-small": {
        "rollout_batch_size": 20_000,
        "initial_steps": 1000,
        "model_max_epochs": 50,
        "eval_episodes": 3,
    },
    "demo": {
        "rollout_batch_size": 10_000,
        "initial_steps": 500,
        "model_max_epochs": 30,
        "eval_episodes": 3,
        "epoch_length": 250,
    },
    "tiny": {
        "rollout_batch_size": 256,
        "initial_steps": 100,
        "epoch_length": 100,
        "model_train_freq": 50,
        "model_max_epochs": 3,
        "model_hidden_size": 32,
        "hidden_size": 32,
        "updates_per_step": 1,
        "batch_size": 64,
        "eval_episodes": 1,
        "phase2_max_steps": 5,
        "phase2_batch_size": 128,
        "phase2_val_size": 128,
        "ppo_num_envs": 2,
        "ppo_num_steps": 50,
        "ppo_epochs": 2,
        "ppo_num_minibatches": 4,
        "alm_latent_dim": 8,
        "alm_model_hidden_size": 32,
    },
}


def resolve_config(
    config_cls: type, family: str | None, preset: str, overrides: dict[str, Any]
) -> tuple[Settings, dict[str, dict[str, Any]]]:
    """Paper defaults for the task, then the preset, then the user's overrides.

    Returns the config and its deviations from the paper:
    {field: {"paper": x, "used": y, "by": source}}.
    """
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (choose: {', '.join(PRESETS)})")
    names = config_fields(config_cls)
    task = {**PAPER_TASKS.get(family or "", {}), **ALGORITHM_TASKS.get(family or "", {})}
    # The per-task table is MBPO's; a model-free agent takes only its evaluation interval.
    shared = names if issubclass(config_cls, DynaConfig) else {"epoch_length"}
    paper_values = {k: v for k, v in task.items() if k in shared}
    paper = dataclasses.replace(config_cls(), **paper_values)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in PRESETS[preset].items():
        if key in names:
            values[key], sources[key] = value, f"preset {preset}"
    for key, value in overrides.items():
        values[key], sources[key] = value, "--set"
    config = dataclasses.replace(paper, **values)
    config.validate()
    deviations = {
        key: {"paper": getattr(paper, key), "used": getattr(config, key), "by": sources[key]}
        for key in values
        if getattr(paper, key) != getattr(config, key)
    }
    return config, deviations


# Where each per-task setting of a task outside the paper's tables comes from.
TABLE_SOURCES = {k: "MBPO's per-task table" for t in PAPER_TASKS.values() for k in t}
TABLE_SOURCES.update({k: "CMLO's per-task configs" for t in ALGORITHM_TASKS.values() for k in t})
NOT_IN_TABLES = {"target_entropy": "SAC's default, -action_dim"}


def borrowed_defaults(
    config_cls: type, family: str | None, preset: str, overrides: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """For a task without paper values (family None): every per-task setting it uses unchanged
    (not set by the preset or `--set`), its value and where that value is borrowed from, as
    {field: {"used": value, "note": "no paper value; borrowed from X"}}. Empty for paper tasks.
    """
    if family is not None:
        return {}
    names = config_fields(config_cls)
    # As in resolve_config: a model-free agent takes only the evaluation interval per task.
    shared = names if issubclass(config_cls, DynaConfig) else {"epoch_length"}
    chosen = {k for k in PRESETS.get(preset, {}) if k in names} | set(overrides)
    defaults = config_cls()
    borrowed = {}
    for key, source in TABLE_SOURCES.items():
        if key not in names or key not in shared or key in chosen:
            continue
        used = getattr(defaults, key)
        in_algorithm_table = any(key in values for values in ALGORITHM_TASKS.values())
        table = ALGORITHM_TASKS if in_algorithm_table else PAPER_TASKS
        tasks = [name for name, values in table.items() if values.get(key, used) == used]
        if key in NOT_IN_TABLES and not tasks:
            origin = NOT_IN_TABLES[key]
        elif table is ALGORITHM_TASKS:
            also = f"{', '.join(tasks)}, and " if tasks else ""
            origin = f"{also}tasks outside {source}"
        elif tasks:
            origin = f"{', '.join(tasks)} ({source})"
        else:
            origin = f"this algorithm's default (no task in {source} uses it)"
        borrowed[key] = {"used": used, "note": f"no paper value; borrowed from {origin}"}
    return borrowed


def borrowed_summary(env_id: str, borrowed: dict[str, dict[str, Any]]) -> str:
    """One line naming what a task without paper values borrows."""
    parts = [f"{key}={entry['used']!r}" for key, entry in borrowed.items()]
    return (
        f"{env_id} has no paper values; borrowed defaults (sources in config.json, "
        f"no_paper_values): {', '.join(parts)}"
    )
