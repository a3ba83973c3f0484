"""An environment's state for checkpoints: its random generator, the simulator's state (MuJoCo's
integration state, or the `state` array of gymnasium's classic-control tasks such as Pendulum)
and the time-limit counter, so a resumed run steps on exactly where it stopped."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np


def saves_simulator(env: gym.Env) -> bool:
    """Whether `capture_env` holds this env's simulator state (MuJoCo, or a classic-control
    `state`, which exists once the env has been reset). For any other env a resumed run goes
    on from wherever the env was rebuilt, not from where it stopped, and the runner says so."""
    base = env.unwrapped
    return (hasattr(base, "model") and hasattr(base, "data")) or hasattr(base, "state")


def capture_env(env: gym.Env) -> dict[str, Any]:
    """The state a gymnasium env needs to go on bit-exactly: its random generator, the MuJoCo
    integration state (positions, velocities, warm start, time) or a classic-control task's
    `state`, and the time-limit counter."""
    base = env.unwrapped
    state: dict[str, Any] = {"np_random": base.np_random.bit_generator.state}
    if hasattr(base, "model") and hasattr(base, "data"):
        import mujoco

        kind = mujoco.mjtState.mjSTATE_INTEGRATION
        buffer = np.empty(mujoco.mj_stateSize(base.model, kind))
        mujoco.mj_getState(base.model, base.data, buffer, kind)
        state["mujoco"] = buffer
    elif hasattr(base, "state"):
        state["state"] = copy.deepcopy(base.state)
    wrapper = env
    while isinstance(wrapper, gym.Wrapper):
        if isinstance(wrapper, gym.wrappers.TimeLimit):
            state["elapsed_steps"] = wrapper._elapsed_steps
        wrapper = wrapper.env
    return state


def restore_env(env: gym.Env, state: dict[str, Any]) -> None:
    base = env.unwrapped
    base.np_random.bit_generator.state = state["np_random"]
    if "mujoco" in state:
        import mujoco

        kind = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(base.model, base.data, state["mujoco"], kind)
        mujoco.mj_forward(base.model, base.data)
    if "state" in state:
        base.state = copy.deepcopy(state["state"])
    wrapper = env
    while isinstance(wrapper, gym.Wrapper):
        if isinstance(wrapper, gym.wrappers.TimeLimit) and "elapsed_steps" in state:
            wrapper._elapsed_steps = state["elapsed_steps"]
        wrapper = wrapper.env
