"""Typed hyperparameters, the paper's per-task presets, cheaper CPU presets, and `--set` parsing.

One dataclass per algorithm family; every field carries a one-line doc in its metadata so that
`usbpo config` can print them and `--set key=value` can address them by name. Presets are plain
override dicts applied on top of the paper defaults, and every value that differs from the paper
is recorded as a deviation in the run's `config.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from usbpo_cli.errors import UsageError


def param(default: Any, doc: str) -> Any:
    """A dataclass field with its one-line documentation attached."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata={"doc": doc})


# The policy optimisers every off-policy agent can use (`--set policy=td3`).
POLICIES = ("sac", "td3")


@dataclass
class PolicyConfig:
    """Shared by every off-policy agent: the environment loop, evaluation and the policy
    optimiser (SAC or TD3)."""

    initial_steps: int = param(5000, "env steps taken with uniform random actions before learning")
    epoch_length: int = param(1000, "env steps per epoch; one evaluation row is logged per epoch")
    eval_episodes: int = param(5, "deterministic-policy episodes per evaluation")
    updates_per_step: int = param(20, "policy gradient updates per real env step (G)")
    policy: str = param("sac", "policy optimiser: sac or td3")
    hidden_size: int = param(256, "width of the two hidden layers of actor and critics")
    policy_lr: float = param(3e-4, "Adam learning rate of actor, critics and entropy temperature")
    batch_size: int = param(256, "policy update batch size")
    gamma: float = param(0.99, "discount factor")
    tau: float = param(5e-3, "Polyak rate of the target networks")
    target_entropy: float | None = param(None, "SAC target entropy; None means -action_dim")
    replay_size: int = param(1_000_000, "capacity of the real-transition replay buffer")
    td3_exploration_noise: float = param(
        0.1, "TD3: std of the Gaussian action noise when acting, in units of the action scale"
    )
    td3_policy_noise: float = param(
        0.2, "TD3: std of the target-policy smoothing noise, in units of the action scale"
    )
    td3_noise_clip: float = param(0.5, "TD3: the smoothing noise is clipped to +-this")
    td3_policy_delay: int = param(2, "TD3: critic updates per actor and target update")


@dataclass
class SACConfig(PolicyConfig):
    """Model-free SAC as in its paper: one update per env step, target entropy -action_dim."""

    updates_per_step: int = param(1, "policy gradient updates per real env step")


@dataclass
class TD3Config(PolicyConfig):
    """Model-free TD3 as in its paper: one update per env step; the random initial steps are
    SAC's (5000), so the two model-free baselines start learning at the same point."""

    policy: str = param("td3", "policy optimiser: td3 (the model-free td3 algo trains TD3 only)")
    updates_per_step: int = param(1, "critic updates per real env step")


@dataclass
class DynaConfig(PolicyConfig):
    """MBPO's Dyna-style loop: a probabilistic ensemble, short model rollouts, mixed batches."""

    model_train_freq: int = param(250, "env steps between model trainings (and rollouts)")
    rollout_batch_size: int = param(100_000, "start states per model rollout")
    rollout_schedule: tuple[int, int, int, int] = param(
        (20, 150, 1, 15), "(min_epoch, max_epoch, min_length, max_length), linear in epoch"
    )
    real_ratio: float = param(0.05, "fraction of each policy batch drawn from real data")
    model_retain_epochs: int = param(1, "epochs of rollouts the model buffer holds")
    ensemble_size: int = param(7, "ensemble members (B)")
    num_elites: int = param(5, "members used for rollouts, chosen by holdout MSE")
    model_hidden_size: int = param(200, "width of each of the ensemble's hidden layers")
    model_hidden_layers: int = param(4, "hidden layers per ensemble member")
    model_lr: float = param(1e-3, "Adam learning rate of phase 1 (MLE)")
    model_batch_size: int = param(256, "minibatch size of phase 1")
    model_weight_decay: tuple[float, ...] = param(
        (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), "L2 weight decay per layer, input to output"
    )
    model_holdout_ratio: float = param(0.2, "fraction of real data held out for early stopping")
    model_max_holdout: int = param(5000, "cap on the holdout set size")
    model_patience: int = param(5, "epochs without a >1% holdout gain before phase 1 stops")
    model_max_epochs: int | None = param(None, "cap on phase-1 epochs per training; None = none")
    model_logvar_penalty: float = param(0.01, "weight of the learned log-variance bound penalty")
    model_bootstrap: bool = param(
        True, "each member trains on its own resample with replacement (false: every row)"
    )


@dataclass
class USBPOConfig(DynaConfig):
    """USB-PO: the Dyna loop plus the phase-2 fine-tune on model shift + model bias."""

    phase2_lr: float = param(1e-4, "Adam learning rate of the phase-2 fine-tune")
    phase2_batch_size: int = param(1024, "(s, a) pairs from the model buffer per phase-2 step")
    phase2_val_size: int = param(1024, "real holdout (s, a) pairs used to validate phase 2")
    phase2_max_steps: int = param(100, "phase-2 steps at most per model training")
    phase2_patience: int = param(10, "phase-2 steps without validation gain before stopping")
    phase2_min_improvement: float = param(1e-4, "relative gain in J that counts as improvement")
    phase2_terms: str = param("both", "terms of J: both, shift or bias (ablation)")


@dataclass
class CMLOConfig(DynaConfig):
    """CMLO: the Dyna loop, but the model retrains only when its event trigger fires."""

    cmlo_alpha: float = param(
        2.0, "event threshold: Hopper 1.2, Walker2d 3, HalfCheetah/Ant 2, Humanoid 2.5, others 2"
    )
    cmlo_compute_interval: int = param(
        50, "env steps between additions to the event sum: Hopper/Walker2d 20, others 50"
    )
    cmlo_min_interval: int = param(150, "env steps at least between two model updates")
    cmlo_max_interval: int = param(500, "env steps after which the model retrains regardless")
    cmlo_hull_states: int = param(
        1000, "most recent real states whose 3-D PCA convex hull gives the coverage"
    )
    cmlo_rollout_every_step: bool = param(
        True,
        "roll out cmlo_rollout_batch_size states every env step (authors' code); "
        "false: MBPO's rollout_batch_size every model_train_freq steps",
    )
    cmlo_rollout_batch_size: int = param(
        400, "start states of the rollout taken every env step once a model exists"
    )


@dataclass
class PDMLConfig(DynaConfig):
    """PDML: the Dyna loop with real data weighted by closeness to the current policy."""

    pdml_max_rate: float = param(0.02, "floor on the newest data segment's share of the weight")
    pdml_warmup_factor: float = param(
        0.05, "weight of a warm-up transition relative to one of the oldest policy segment"
    )
    pdml_tv_states: int = param(250, "states per segment on which the TV bound is averaged")


@dataclass
class ALMConfig(PolicyConfig):
    """ALM (Ghugare et al. 2022): encoder, latent model, critic and policy under one lower bound.
    Values from the paper and the authors' code (RajGhugare19/alm, cfgs/agent/alm.yaml)."""

    policy: str = param("alm", "policy optimiser: alm (ALM trains its own latent actor-critic)")
    updates_per_step: int = param(1, "ALM updates (all networks) per real env step")
    hidden_size: int = param(512, "width of the hidden layers of encoder, actor, critic, reward")
    policy_lr: float = param(1e-4, "Adam learning rate of every ALM network")
    batch_size: int = param(512, "sequences (and transitions) per ALM update")
    replay_size: int = param(100_000, "capacity of the real-transition replay buffer")
    alm_latent_dim: int = param(50, "size of the latent state z")
    alm_model_hidden_size: int = param(1024, "width of the latent model's two hidden layers")
    alm_seq_len: int = param(3, "K: real sequence length of the model loss, imagined steps")
    alm_classifier_weight: float = param(0.1, "weight of the classifier reward log C/(1-C)")
    alm_lambda: float = param(0.95, "lambda of the policy's lambda-returns (1: K rewards + Q)")
    alm_expl_start: float = param(1.0, "exploration noise std when learning starts")
    alm_expl_end: float = param(0.1, "exploration noise std after alm_expl_steps")
    alm_expl_steps: int = param(100_000, "env steps over which the std decays linearly")
    alm_noise_clip: float = param(0.3, "clip of the action noise inside updates (not acting)")
    alm_max_grad_norm: float = param(100.0, "gradient-norm clip of each optimiser's step")


@dataclass
class PPOConfig:
    """On-policy PPO, a family of its own: none of the off-policy settings (replay, updates per
    step, initial random steps) apply, so it does not extend PolicyConfig; the evaluation
    settings keep their shared names so presets and the per-task epoch_length reach it."""

    epoch_length: int = param(
        1000, "env steps between evaluations; a row is logged at the first rollout end after each"
    )
    eval_episodes: int = param(5, "deterministic-policy episodes per evaluation")
    hidden_size: int = param(64, "width of the two tanh hidden layers of actor and critic")
    gamma: float = param(0.99, "discount factor")
    ppo_num_envs: int = param(1, "envs stepped together (SyncVectorEnv) to collect each rollout")
    ppo_num_steps: int = param(2048, "env steps per env in each rollout")
    ppo_gae_lambda: float = param(0.95, "GAE lambda")
    ppo_epochs: int = param(10, "passes over each rollout per policy update")
    ppo_num_minibatches: int = param(32, "minibatches per pass")
    ppo_clip: float = param(0.2, "clip range of the probability ratio (and of the value change)")
    ppo_clip_value_loss: bool = param(True, "clip the value change to +-ppo_clip (as ppo2)")
    ppo_value_coef: float = param(0.5, "weight of the value loss in the joint loss")
    ppo_entropy_coef: float = param(0.0, "weight of the entropy bonus in the joint loss")
    ppo_lr: float = param(3e-4, "Adam learning rate (Adam eps 1e-5)")
    ppo_anneal_lr: bool = param(True, "anneal the learning rate linearly to 0 over the run")
    ppo_max_grad_norm: float = param(0.5, "clip of the global gradient norm of each step")
    ppo_obs_clip: float = param(10.0, "normalised observations are clipped to +-this")
    ppo_reward_clip: float = param(10.0, "normalised rewards are clipped to +-this")


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


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls)}


def _parse_value(raw: str, current: Any, name: str, annotation: str) -> Any:
    """Parse `raw` into the type of the field, naming the field in any error."""
    text = raw.strip()
    if text.lower() in ("none", "null") and "None" in annotation:
        return None
    try:
        if "tuple" in annotation:
            parsed = json.loads(text if text.startswith("[") else f"[{text.strip('()')}]")
            number = int if "tuple[int" in annotation else (int, float)
            if not isinstance(parsed, list) or not all(
                isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v)
                for v in parsed
            ):
                raise ValueError
            fixed_length = "..." not in annotation  # variable-length ones are checked by validate
            if fixed_length and current and len(parsed) != len(current):
                raise UsageError(
                    f"--set {name}: expected {len(current)} numbers, got {len(parsed)}"
                )
            return tuple(parsed)
        if annotation.startswith("int"):
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if annotation.startswith("float"):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if annotation.startswith("bool"):
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError
        return text
    except (ValueError, json.JSONDecodeError):
        raise UsageError(f"--set {name}={raw!r}: not a valid {annotation}") from None


def parse_overrides(pairs: list[str], config_cls: type) -> dict[str, Any]:
    """Turn `key=value` strings into typed values, rejecting unknown keys with a suggestion.

    A dotted key is an alias for the field with underscores: `cmlo.alpha=3` sets `cmlo_alpha`
    (and `phase2.lr=1e-5` sets `phase2_lr`), so an algorithm's own settings read as a group.
    """
    import difflib

    fields = config_fields(config_cls)
    defaults = config_cls()
    overrides: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--set {pair!r}: expected key=value")
        given, raw = pair.split("=", 1)
        given = given.strip()
        key = given.replace(".", "_")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"--set {given}: no such setting for this algorithm{hint}")
        annotation = str(fields[key].type)
        overrides[key] = _parse_value(raw, getattr(defaults, key), key, annotation)
    return overrides


def _validate_ppo(config: PPOConfig) -> None:
    positive = ["epoch_length", "hidden_size", "ppo_num_envs", "ppo_num_steps", "ppo_epochs"]
    positive += ["ppo_num_minibatches", "ppo_clip", "ppo_lr", "ppo_max_grad_norm"]
    positive += ["ppo_obs_clip", "ppo_reward_clip"]
    for name in positive:
        if getattr(config, name) <= 0:
            raise UsageError(f"{name} must be positive, got {getattr(config, name)}")
    for name in ("eval_episodes", "ppo_value_coef", "ppo_entropy_coef"):
        if getattr(config, name) < 0:
            raise UsageError(f"{name} must be >= 0, got {getattr(config, name)}")
    if not 0.0 < config.gamma <= 1.0:
        raise UsageError(f"gamma must lie in (0, 1], got {config.gamma}")
    if not 0.0 <= config.ppo_gae_lambda <= 1.0:
        raise UsageError(f"ppo_gae_lambda must lie in [0, 1], got {config.ppo_gae_lambda}")
    rollout = config.ppo_num_envs * config.ppo_num_steps
    if config.ppo_num_minibatches > rollout:
        raise UsageError(
            f"ppo_num_minibatches ({config.ppo_num_minibatches}) cannot exceed the rollout size "
            f"ppo_num_envs * ppo_num_steps ({rollout})"
        )


def validate(config: PolicyConfig | PPOConfig) -> None:
    """Reject values that would crash or silently misbehave deep inside a run."""
    if isinstance(config, PPOConfig):  # on-policy: none of the off-policy checks below apply
        _validate_ppo(config)
        return
    positive = ["epoch_length", "updates_per_step", "hidden_size", "batch_size", "replay_size"]
    if isinstance(config, DynaConfig):
        positive += [
            "model_train_freq",
            "rollout_batch_size",
            "ensemble_size",
            "num_elites",
            "model_hidden_size",
            "model_hidden_layers",
            "model_batch_size",
            "model_retain_epochs",
            "model_patience",
        ]
    if isinstance(config, USBPOConfig):
        positive += ["phase2_batch_size", "phase2_val_size", "phase2_max_steps", "phase2_patience"]
    if isinstance(config, CMLOConfig):
        positive += ["cmlo_compute_interval", "cmlo_max_interval", "cmlo_rollout_batch_size"]
    if isinstance(config, PDMLConfig):
        positive += ["pdml_tv_states"]
    if isinstance(config, ALMConfig):
        positive += ["alm_latent_dim", "alm_model_hidden_size", "alm_seq_len", "alm_expl_steps"]
        positive += ["alm_max_grad_norm"]
    for name in positive:
        if getattr(config, name) <= 0:
            raise UsageError(f"{name} must be positive, got {getattr(config, name)}")
    if config.initial_steps < 0 or config.eval_episodes < 0:
        raise UsageError("initial_steps and eval_episodes must be >= 0")
    if not 0.0 < config.gamma <= 1.0 or not 0.0 < config.tau <= 1.0:
        raise UsageError("gamma and tau must lie in (0, 1]")
    if config.policy not in POLICIES and not isinstance(config, ALMConfig):
        raise UsageError(
            f"policy {config.policy!r} is not available (choose: {', '.join(POLICIES)})"
        )
    for model_free, name in ((SACConfig, "sac"), (TD3Config, "td3")):
        if type(config) is model_free and config.policy != name:
            raise UsageError(
                f"algo {name} trains {name} only: for model-free {config.policy} use "
                f"--algo {config.policy}"
            )
    td3_noise = ("td3_exploration_noise", "td3_policy_noise", "td3_noise_clip")
    for name in td3_noise:
        if getattr(config, name) < 0:
            raise UsageError(f"{name} must be >= 0, got {getattr(config, name)}")
    if config.td3_policy_delay < 1:
        raise UsageError(f"td3_policy_delay must be >= 1, got {config.td3_policy_delay}")
    if isinstance(config, DynaConfig):
        if not 0.0 <= config.real_ratio <= 1.0:
            raise UsageError(f"real_ratio must lie in [0, 1], got {config.real_ratio}")
        if config.num_elites > config.ensemble_size:
            raise UsageError("num_elites cannot exceed ensemble_size")
        if len(config.model_weight_decay) != config.model_hidden_layers + 1:
            raise UsageError(
                f"model_weight_decay needs {config.model_hidden_layers + 1} values "
                f"(one per layer), got {len(config.model_weight_decay)}"
            )
        lo_epoch, hi_epoch, lo_len, hi_len = config.rollout_schedule
        if hi_epoch < lo_epoch or lo_len < 1 or hi_len < 1:
            raise UsageError(
                "rollout_schedule must be (min_epoch<=max_epoch, min_len>=1, max_len>=1)"
            )
        if not 0.0 < config.model_holdout_ratio < 1.0:
            raise UsageError("model_holdout_ratio must lie in (0, 1)")
    if isinstance(config, USBPOConfig) and config.phase2_terms not in ("both", "shift", "bias"):
        raise UsageError(f"phase2_terms must be both, shift or bias, got {config.phase2_terms!r}")
    if isinstance(config, CMLOConfig):
        if config.cmlo_alpha < 0:
            raise UsageError(f"cmlo_alpha must be >= 0, got {config.cmlo_alpha}")
        if not 0 <= config.cmlo_min_interval <= config.cmlo_max_interval:
            raise UsageError("need 0 <= cmlo_min_interval <= cmlo_max_interval")
        if config.cmlo_hull_states < 4:
            raise UsageError(
                f"cmlo_hull_states must be >= 4 (a 3-D hull), got {config.cmlo_hull_states}"
            )
    if isinstance(config, PDMLConfig):
        if not 0.0 <= config.pdml_max_rate < 1.0:
            raise UsageError(f"pdml_max_rate must lie in [0, 1), got {config.pdml_max_rate}")
        if config.pdml_warmup_factor < 0:
            raise UsageError(f"pdml_warmup_factor must be >= 0, got {config.pdml_warmup_factor}")
        if config.policy == "td3" and config.td3_exploration_noise <= 0:
            raise UsageError(
                "pdml with policy td3 needs td3_exploration_noise > 0 (its policy distance "
                "compares the exploration Gaussians)"
            )
    if isinstance(config, ALMConfig):
        _validate_alm(config)


def _validate_alm(config: ALMConfig) -> None:
    if config.policy != "alm":
        raise UsageError(
            f"algo alm trains its own actor-critic: policy must be alm, not {config.policy!r}"
        )
    if config.batch_size < 2:
        raise UsageError("alm needs batch_size >= 2 (half real, half imagined for the classifier)")
    if not 0.0 <= config.alm_lambda <= 1.0:
        raise UsageError(f"alm_lambda must lie in [0, 1], got {config.alm_lambda}")
    for name in ("alm_classifier_weight", "alm_expl_start", "alm_expl_end", "alm_noise_clip"):
        if getattr(config, name) < 0:
            raise UsageError(f"{name} must be >= 0, got {getattr(config, name)}")


def resolve_config(
    config_cls: type, family: str | None, preset: str, overrides: dict[str, Any]
) -> tuple[PolicyConfig | PPOConfig, dict[str, dict[str, Any]]]:
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
    validate(config)
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
            origin = f"the default of {source}"
        borrowed[key] = {"used": used, "note": f"no paper value; borrowed from {origin}"}
    return borrowed


def borrowed_summary(env_id: str, borrowed: dict[str, dict[str, Any]]) -> str:
    """One line naming what a task without paper values borrows."""
    parts = [f"{key}={entry['used']!r}" for key, entry in borrowed.items()]
    return (
        f"{env_id} has no paper values; borrowed defaults (sources in config.json, "
        f"no_paper_values): {', '.join(parts)}"
    )
