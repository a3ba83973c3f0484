"""Tiny runs that must really learn: not a benchmark, a guard against silent breakage.

"Learns" means beating, by a clear margin, two policies that learn nothing, scored in the same
test on the same evaluation episodes: the constant zero action (on InvertedPendulum-v4 it
balances the pole for about 26 steps, by luck of the physics) and uniform random actions (about
6). A run that only matches the zero action has learned nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from usbpo_cli.agents.base import evaluate_episodes
from usbpo_cli.envs.tasks import make_env
from usbpo_cli.runs.runner import RunSpec, run_training

ENV = "InvertedPendulum-v4"
SEED = 0
BASELINE_EPISODES = 20
SMALL = [
    "hidden_size=64",
    "batch_size=128",
    "initial_steps=300",
    "epoch_length=250",
    "eval_episodes=3",
]


def untrained_scores(env_id: str = ENV, seed: int = SEED) -> dict[str, float]:
    """Mean return of the zero action and of uniform random actions, on the evaluation env
    the agents use (seeded `seed + 10_000`)."""
    env = make_env(env_id, seed=seed + 10_000)
    low, high = env.action_space.low, env.action_space.high
    rng = np.random.default_rng(seed)
    policies: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "zero": lambda obs: np.zeros_like(low),
        "random": lambda obs: rng.uniform(low, high).astype(low.dtype),
    }
    scores = {
        name: float(np.mean(evaluate_episodes(env, act, BASELINE_EPISODES)))
        for name, act in policies.items()
    }
    env.close()
    return scores


def assert_learned(final: float, scores: dict[str, float]) -> None:
    """At least twice the better of the two untrained policies, and 25 return above it."""
    best = max(scores.values())
    assert final > 2 * best and final > best + 25, (
        f"final eval return {final:.1f} is not clearly above the untrained policies {scores}"
    )


def test_untrained_baselines_are_what_the_margin_assumes() -> None:
    """The zero action holds the pole a little while; random actions drop it almost at once."""
    scores = untrained_scores()
    assert 10 < scores["zero"] < 60
    assert scores["random"] < scores["zero"]


@pytest.mark.parametrize(("algo", "steps"), [("sac", 3000), ("td3", 4000)])
def test_off_policy_model_free_agents_learn_to_balance_the_pendulum(tmp_path, algo, steps):
    """SAC and TD3 at two updates per env step (TD3 needs 4000 steps to clear the margin)."""
    overrides = SMALL + ["updates_per_step=2"]
    spec = RunSpec(ENV, algo, SEED, steps, tmp_path / algo, preset="tiny", overrides=overrides)
    run_training(spec)
    returns = pd.read_csv(tmp_path / algo / "progress.csv").eval_return_mean
    scores = untrained_scores()
    assert returns.iloc[0] < scores["zero"]  # the untrained actor is no better than doing nothing
    assert_learned(returns.iloc[-4:].mean(), scores)


def test_ppo_learns_to_balance_the_pendulum(tmp_path):
    overrides = ["ppo_num_envs=1", "ppo_num_steps=512", "ppo_epochs=10"]
    overrides += ["ppo_num_minibatches=16", "hidden_size=64", "eval_episodes=3"]
    overrides += ["epoch_length=512"]
    spec = RunSpec(ENV, "ppo", SEED, 5120, tmp_path / "ppo", preset="tiny", overrides=overrides)
    run_training(spec)
    returns = pd.read_csv(tmp_path / "ppo" / "progress.csv").eval_return_mean
    assert_learned(returns.iloc[-3:].mean(), untrained_scores())


def test_usbpo_model_improves_and_policy_learns(tmp_path):
    overrides = SMALL + [
        "updates_per_step=5",
        "rollout_batch_size=1000",
        "model_hidden_size=64",
        "model_max_epochs=20",
    ]
    spec = RunSpec(ENV, "usbpo", SEED, 2500, tmp_path / "usbpo", preset="tiny", overrides=overrides)
    run_training(spec)
    progress = pd.read_csv(tmp_path / "usbpo" / "progress.csv")
    trained = progress.dropna(subset=["model_loss_holdout"])
    assert trained.model_loss_holdout.iloc[-1] < 0.5 * trained.model_loss_holdout.iloc[0]
    assert (trained.phase2_steps.iloc[1:] > 0).all()
    assert_learned(progress.eval_return_mean.iloc[-3:].mean(), untrained_scores())
