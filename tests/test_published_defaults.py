"""Every algorithm's default hyperparameters against the published values.

The table below is written from the sources, not read from the code: the USB-PO paper and
MBPO's hyperparameter table (DESIGN.md "Paper hyperparameters", "Ensemble", "USB-PO"), PPO's
MuJoCo settings (Schulman et al. 2017, Table 3; the ppo2 / CleanRL `ppo_continuous_action`
defaults), ALM's `cfgs/agent/alm.yaml` in the authors' repository, TD3's paper (Fujimoto et
al. 2018, Sec. 6), CMLO's and PDML's papers. A default that drifts from its source (a typo,
an edit meant for a preset) changes every run that does not override it, and nothing else
in the suite would notice: the algorithm tests pass their settings explicitly.

Per-task values (G, rollout schedule, target entropy, CMLO's alpha and interval) are checked
where the presets apply them, in tests/test_config.py and tests/test_cmlo*.py.
"""

from __future__ import annotations

import pytest

from baselines.alm import ALMConfig
from baselines.cmlo import CMLOConfig
from baselines.model_free import SACConfig, TD3Config
from baselines.pdml import PDMLConfig
from baselines.ppo import NORMALISER_EPS, PPOConfig
from usbpo_cli.agents.dyna import DynaConfig
from usbpo_cli.agents.usbpo import USBPOConfig

# (config class, field, published value, where it is published)
PUBLISHED = [
    # PPO: Schulman et al. 2017 Table 3 (MuJoCo), ppo2's mujoco defaults, CleanRL's script.
    (PPOConfig, "ppo_num_envs", 1, "one env, as the paper's MuJoCo runs"),
    (PPOConfig, "ppo_num_steps", 2048, "PPO Table 3: horizon T = 2048"),
    (PPOConfig, "ppo_lr", 3e-4, "PPO Table 3: Adam stepsize 3e-4"),
    (PPOConfig, "ppo_epochs", 10, "PPO Table 3: 10 epochs"),
    (PPOConfig, "ppo_num_minibatches", 32, "PPO Table 3: minibatch 64 of 2048 rows"),
    (PPOConfig, "gamma", 0.99, "PPO Table 3: discount 0.99"),
    (PPOConfig, "ppo_gae_lambda", 0.95, "PPO Table 3: GAE lambda 0.95"),
    (PPOConfig, "ppo_clip", 0.2, "PPO Sec. 6.1: epsilon = 0.2"),
    (PPOConfig, "ppo_clip_value_loss", True, "ppo2: clipped value loss"),
    (PPOConfig, "ppo_value_coef", 0.5, "ppo2 / CleanRL: vf_coef 0.5"),
    (PPOConfig, "ppo_entropy_coef", 0.0, "ppo2 mujoco / CleanRL: ent_coef 0"),
    (PPOConfig, "ppo_anneal_lr", True, "ppo2 / CleanRL: linear learning-rate annealing"),
    (PPOConfig, "ppo_max_grad_norm", 0.5, "ppo2 / CleanRL: max_grad_norm 0.5"),
    (PPOConfig, "hidden_size", 64, "PPO Sec. 6.1: two hidden layers of 64 tanh units"),
    (PPOConfig, "ppo_obs_clip", 10.0, "gymnasium NormalizeObservation + clip(-10, 10)"),
    (PPOConfig, "ppo_reward_clip", 10.0, "gymnasium NormalizeReward + clip(-10, 10)"),
    (PPOConfig, "epoch_length", 1000, "DESIGN: one evaluation every 1000 env steps"),
    (PPOConfig, "eval_episodes", 5, "DESIGN: 5 deterministic episodes per evaluation"),
    # ALM: the authors' cfgs/agent/alm.yaml.
    (ALMConfig, "initial_steps", 5000, "alm.yaml explore_steps"),
    (ALMConfig, "replay_size", 100_000, "alm.yaml env_buffer_size"),
    (ALMConfig, "batch_size", 512, "alm.yaml batch_size"),
    (ALMConfig, "alm_seq_len", 3, "alm.yaml seq_len"),
    (ALMConfig, "gamma", 0.99, "alm.yaml gamma"),
    (ALMConfig, "tau", 0.005, "alm.yaml tau"),
    (ALMConfig, "alm_classifier_weight", 0.1, "alm.yaml lambda_cost"),
    (ALMConfig, "policy_lr", 1e-4, "alm.yaml lr (every network)"),
    (ALMConfig, "alm_max_grad_norm", 100.0, "alm.yaml max_grad_norm"),
    (ALMConfig, "alm_expl_start", 1.0, "alm.yaml expl_start"),
    (ALMConfig, "alm_expl_end", 0.1, "alm.yaml expl_end"),
    (ALMConfig, "alm_expl_steps", 100_000, "alm.yaml expl_duration"),
    (ALMConfig, "alm_noise_clip", 0.3, "alm.yaml stddev_clip"),
    (ALMConfig, "alm_latent_dim", 50, "alm.yaml latent_dims"),
    (ALMConfig, "hidden_size", 512, "alm.yaml hidden_dims"),
    (ALMConfig, "alm_model_hidden_size", 1024, "alm.yaml model_hidden_dims"),
    (ALMConfig, "updates_per_step", 1, "alm.yaml: one update per env step"),
    (ALMConfig, "eval_episodes", 5, "alm.yaml num_eval_episodes"),
    # SAC and TD3 as model-free baselines.
    (SACConfig, "updates_per_step", 1, "SAC paper: one gradient step per env step"),
    (SACConfig, "hidden_size", 256, "SAC paper Table 1: 256 units, 2 layers"),
    (SACConfig, "policy_lr", 3e-4, "SAC paper Table 1"),
    (SACConfig, "batch_size", 256, "SAC paper Table 1"),
    (SACConfig, "gamma", 0.99, "SAC paper Table 1"),
    (SACConfig, "tau", 0.005, "SAC paper Table 1"),
    (SACConfig, "target_entropy", None, "SAC paper: -dim(A), resolved per task"),
    (SACConfig, "replay_size", 1_000_000, "SAC paper Table 1: replay buffer size 10^6"),
    (TD3Config, "replay_size", 1_000_000, "TD3 author code: ReplayBuffer max_size 1e6"),
    (TD3Config, "updates_per_step", 1, "TD3 paper: one critic update per env step"),
    (TD3Config, "td3_exploration_noise", 0.1, "TD3 paper: N(0, 0.1) exploration"),
    (TD3Config, "td3_policy_noise", 0.2, "TD3 paper: smoothing noise 0.2"),
    (TD3Config, "td3_noise_clip", 0.5, "TD3 paper: clipped to (-0.5, 0.5)"),
    (TD3Config, "td3_policy_delay", 2, "TD3 paper: d = 2"),
    # MBPO's loop and ensemble (USB-PO reuses them unchanged).
    (DynaConfig, "epoch_length", 1000, "MBPO: epoch 1000 steps"),
    (DynaConfig, "initial_steps", 5000, "MBPO: 5000 initial exploration steps"),
    (DynaConfig, "updates_per_step", 20, "MBPO: G = 20 (HalfCheetah's 40 is per task)"),
    (DynaConfig, "model_train_freq", 250, "MBPO: model_train_freq 250"),
    (DynaConfig, "rollout_batch_size", 100_000, "MBPO: rollout_batch_size 100k"),
    (DynaConfig, "rollout_schedule", (20, 150, 1, 15), "MBPO: Hopper's schedule, the default"),
    (DynaConfig, "real_ratio", 0.05, "MBPO: real_ratio 0.05"),
    (DynaConfig, "model_retain_epochs", 1, "MBPO: retain 1 epoch"),
    (DynaConfig, "ensemble_size", 7, "MBPO: 7 members"),
    (DynaConfig, "num_elites", 5, "MBPO: 5 elites"),
    (DynaConfig, "model_hidden_size", 200, "MBPO: hidden 200"),
    (DynaConfig, "model_hidden_layers", 4, "MBPO: 4 hidden layers"),
    (DynaConfig, "model_lr", 1e-3, "MBPO: Adam 1e-3"),
    (DynaConfig, "model_batch_size", 256, "MBPO: batch 256"),
    (DynaConfig, "model_weight_decay", (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), "MBPO's decays"),
    (DynaConfig, "model_holdout_ratio", 0.2, "MBPO: holdout 20%"),
    (DynaConfig, "model_max_holdout", 5000, "MBPO: holdout capped at 5000"),
    (DynaConfig, "model_patience", 5, "MBPO: 5 epochs without a 1% gain"),
    (DynaConfig, "model_max_epochs", None, "MBPO: no epoch cap"),
    (DynaConfig, "model_logvar_penalty", 0.01, "MBPO: 0.01 x the log-variance bounds"),
    (DynaConfig, "model_bootstrap", True, "MBPO's code: a bootstrap resample per member"),
    (DynaConfig, "hidden_size", 256, "MBPO: SAC 256x256"),
    (DynaConfig, "policy_lr", 3e-4, "MBPO: SAC lr 3e-4"),
    (DynaConfig, "batch_size", 256, "MBPO: SAC batch 256"),
    (DynaConfig, "policy", "sac", "MBPO: SAC is the policy optimiser"),
    # USB-PO phase 2 (the paper; DESIGN "USB-PO").
    (USBPOConfig, "phase2_lr", 1e-4, "USB-PO: a separate Adam, lr 1e-4"),
    (USBPOConfig, "phase2_batch_size", 1024, "USB-PO: 1024 (s, a) pairs per step"),
    (USBPOConfig, "phase2_val_size", 1024, "USB-PO: J validated on 1024 real pairs"),
    (USBPOConfig, "phase2_max_steps", 100, "USB-PO: 100 steps in all"),
    (USBPOConfig, "phase2_patience", 10, "USB-PO: 10 steps without improvement"),
    # CMLO and PDML (their papers; per-task alpha and interval are preset values).
    (CMLOConfig, "cmlo_min_interval", 150, "CMLO: at least 150 steps between updates"),
    (CMLOConfig, "cmlo_max_interval", 500, "CMLO: unconditionally after 500"),
    (CMLOConfig, "cmlo_hull_states", 1000, "CMLO: hull of 1000 real states"),
    (CMLOConfig, "cmlo_rollout_every_step", True, "CMLO authors' code: a rollout every step"),
    (CMLOConfig, "cmlo_rollout_batch_size", 400, "CMLO authors' code: 400 start states"),
    (PDMLConfig, "pdml_max_rate", 0.02, "PDML: max_rate 0.02"),
    (PDMLConfig, "pdml_warmup_factor", 0.05, "PDML: warm-up data at 0.05x"),
    # Ours, where the reference differs; documented in the README's fidelity table.
    (PDMLConfig, "pdml_tv_states", 250, "README fidelity table: up to 250 of a segment's states"),
]


@pytest.mark.parametrize(
    ("config_class", "field", "published", "source"),
    PUBLISHED,
    ids=[f"{c.__name__}.{f}" for c, f, _, _ in PUBLISHED],
)
def test_default_is_the_published_value(
    config_class: type, field: str, published: object, source: str
) -> None:
    value = getattr(config_class(), field)
    assert type(value) is type(published), f"{field}: {value!r} is not a {type(published)}"
    assert value == published, f"{config_class.__name__}.{field} = {value!r}; {source}"


def test_ppo_normaliser_epsilon_is_gymnasiums() -> None:
    """gymnasium's RunningMeanStd-based wrappers add 1e-8 to the variance before the square
    root; a 2x change is invisible in learning, so it is pinned here against that constant."""
    assert NORMALISER_EPS == 1e-8
