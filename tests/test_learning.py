"""Tiny runs that must really learn: not a benchmark, a guard against silent breakage."""

import pandas as pd

from usbpo_cli.app import load_algorithms
from usbpo_cli.runner import RunSpec, run_training

SMALL = [
    "hidden_size=64",
    "batch_size=128",
    "initial_steps=300",
    "epoch_length=250",
    "eval_episodes=3",
]


def test_sac_learns_to_balance_the_pendulum(tmp_path):
    load_algorithms()
    spec = RunSpec(
        "InvertedPendulum-v4", "sac", 0, 3000, tmp_path / "sac", preset="tiny", overrides=SMALL
    )
    run_training(spec)
    returns = pd.read_csv(tmp_path / "sac" / "progress.csv").eval_return_mean
    assert returns.iloc[0] < 15  # the untrained policy drops the pole at once
    assert returns.iloc[-4:].mean() > 30


def test_usbpo_model_improves_and_policy_learns(tmp_path):
    load_algorithms()
    overrides = SMALL + ["updates_per_step=4", "rollout_batch_size=2000"]
    spec = RunSpec(
        "InvertedPendulum-v4",
        "usbpo",
        0,
        2000,
        tmp_path / "usbpo",
        preset="tiny",
        overrides=overrides,
    )
    run_training(spec)
    progress = pd.read_csv(tmp_path / "usbpo" / "progress.csv")
    trained = progress.dropna(subset=["model_loss_holdout"])
    assert trained.model_loss_holdout.iloc[-1] < 0.5 * trained.model_loss_holdout.iloc[0]
    assert (trained.phase2_steps.iloc[1:] > 0).all()
    assert progress.eval_return_mean.iloc[-3:].mean() > 2 * progress.eval_return_mean.iloc[0]
