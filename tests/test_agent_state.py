"""Checkpoint state of every off-policy agent, in process and in a second: an agent built from
another seed and loaded with a trained agent's `state_dict` must hold exactly the same state
(networks, optimiser moments, buffers, model, algorithm extras), and then act and update exactly
as the original does. The end-to-end resume tests check the same through the CLI, slowly; this
one names the piece that was not restored."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from usbpo_cli.agents.base import LoopState
from usbpo_cli.agents.registry import get_algorithm
from usbpo_cli.runs.config import resolve_config

ENV = "InvertedPendulum-v4"
CASES = [
    ("sac", []),
    ("td3", []),
    ("mbpo", []),
    ("mbpo", ["policy=td3"]),
    ("usbpo", []),
    ("cmlo", []),
    ("pdml", []),
]


def build(algo: str, overrides: list[str], seed: int):
    entry = get_algorithm(algo)
    pairs = dict(item.split("=") for item in overrides)
    config, _ = resolve_config(entry.config_cls, "InvertedPendulum", "tiny", {})
    for key, value in pairs.items():
        setattr(config, key, value)
    agent = entry.agent_cls(ENV, config, seed=seed, total_steps=1000)
    obs, _ = agent.env.reset(seed=seed)
    agent.loop = LoopState(obs=np.asarray(obs, dtype=np.float32))
    return agent


def exercise(agent, steps: int = 160) -> None:
    """Random real transitions, then the agent's own learning steps (model training, phase 2,
    rollouts, policy updates), so that every piece of state moves away from its initial value."""
    gen = torch.Generator().manual_seed(123)
    for _ in range(steps):
        obs = torch.randn(agent.obs_dim, generator=gen) * 0.1
        act = torch.rand(agent.act_dim, generator=gen) * 6 - 3
        next_obs = obs + torch.randn(agent.obs_dim, generator=gen) * 0.01
        agent.real_buffer.add(obs, act, 1.0, next_obs, 0.0)
        if hasattr(agent, "after_env_step"):
            agent.after_env_step(obs, act, 1.0, next_obs)
    for step in range(100, 103):
        agent.learn(step)
    if hasattr(agent, "model"):
        agent.learn(150)  # a second model training: USB-PO's phase 2 runs, PDML gets a segment


def flatten(state, prefix: str = "") -> dict[str, object]:
    """Every leaf of a nested state dict, by path."""
    leaves: dict[str, object] = {}
    if isinstance(state, dict):
        for key, value in state.items():
            leaves.update(flatten(value, f"{prefix}/{key}"))
    elif isinstance(state, (list, tuple)) and any(
        isinstance(v, (dict, torch.Tensor)) for v in state
    ):
        for index, value in enumerate(state):
            leaves.update(flatten(value, f"{prefix}[{index}]"))
    else:
        leaves[prefix] = state
    return leaves


def assert_same_state(a: dict, b: dict) -> None:
    left, right = flatten(a), flatten(b)
    skip = ("/env/", "/eval_env/", "/loop/")  # env and loop state: the CLI resume tests
    keys = [k for k in left if not k.startswith(skip)]
    assert sorted(keys) == sorted(k for k in right if not k.startswith(skip))
    for key in keys:
        x, y = left[key], right[key]
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), f"{key} differs after loading"
        elif isinstance(x, np.ndarray):
            assert np.array_equal(x, y), f"{key} differs after loading"
        else:
            assert x == y, f"{key} differs after loading: {x!r} vs {y!r}"


@pytest.mark.parametrize(("algo", "overrides"), CASES, ids=lambda c: str(c))
def test_a_loaded_state_dict_restores_every_piece_and_updates_as_the_original(
    algo, overrides
) -> None:
    """After loading, every leaf of the state equals the trained agent's; then, with the same
    random stream (the agent's own generator, part of its state), the next policy updates give
    the same weights (optimiser moments and step counts included)."""
    torch.manual_seed(0)
    trained = build(algo, overrides, seed=0)
    exercise(trained)
    saved = copy.deepcopy(trained.state_dict())  # as a checkpoint file would hold it
    fresh = build(algo, overrides, seed=7)
    before = flatten(fresh.state_dict())
    fresh.load_state_dict(saved)
    assert_same_state(fresh.state_dict(), trained.state_dict())
    leaves = flatten(saved)
    assert any(  # the fresh agent really was different before loading: the test can fail
        isinstance(v, torch.Tensor) and v.shape == before[k].shape and not torch.equal(v, before[k])
        for k, v in leaves.items()
        if k in before and isinstance(before[k], torch.Tensor)
    )
    # no global seeding: each agent draws from its own generator, restored by the load
    for agent in (trained, fresh):
        agent.update_policy(3)
    assert_same_state(fresh.state_dict(), trained.state_dict())
