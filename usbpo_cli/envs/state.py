"""An environment's state for checkpoints: its random generator, the simulator's state (MuJoCo's
integration state, or the `state` array of gymnasium's classic-control tasks such as Pendulum)
and the time-limit counter, so a resumed run steps on exactly where it stopped."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np


def _is_mujoco(base: gym.Env) -> bool:
    """A gymnasium MuJoCo env: its simulator is MuJoCo's model and data."""
    return hasattr(base, "model") and hasattr(base, "data")


def saves_simulator(env: gym.Env) -> bool:
    """Whether `capture_env` holds this env's simulator state (MuJoCo, or a classic-control
    `state`, which exists once the env has been reset). For any other env a resumed run goes
    on from wherever the env was rebuilt, not from where it stopped, and the runner says so."""
    base = env.unwrapped
    return _is_mujoco(base) or hasattr(base, "state")


# MuJoCo's quantities computed from the state (positions of bodies, centres of mass, com-based
# inertias and velocities, forces, sensors): gymnasium's envs read some of them before their
# next step (Ant the torso's position, Humanoid the centre of mass, Reacher the fingertip's),
# and at that moment they are those of the state before the last step's integration, not of
# the current state. So they are saved as they are and put back, where recomputing them
# (mj_forward) would move the first reward after a resume. Every one is sized by the model.
MUJOCO_DERIVED = (
    "xpos", "xquat", "xmat", "xipos", "ximat", "xanchor", "xaxis",
    "geom_xpos", "geom_xmat", "site_xpos", "site_xmat", "cam_xpos", "cam_xmat",
    "light_xpos", "light_xdir", "subtree_com", "cdof", "cinert", "cvel", "cdof_dot", "cacc",
    "cfrc_int", "cfrc_ext", "subtree_linvel", "subtree_angmom", "actuator_length",
    "actuator_velocity", "actuator_force", "ten_length", "ten_velocity", "qfrc_actuator",
    "qfrc_bias", "qfrc_passive", "qfrc_constraint", "qfrc_smooth", "qacc", "qacc_smooth",
    "sensordata", "energy",
)  # fmt: skip


def capture_env(env: gym.Env) -> dict[str, Any]:
    """The state a gymnasium env needs to go on bit-exactly: its random generator, the MuJoCo
    integration state (positions, velocities, warm start, time) or a classic-control task's
    `state`, and the time-limit counter."""
    base = env.unwrapped
    state: dict[str, Any] = {"np_random": base.np_random.bit_generator.state}
    if _is_mujoco(base):
        import mujoco

        kind = mujoco.mjtState.mjSTATE_INTEGRATION
        buffer = np.empty(mujoco.mj_stateSize(base.model, kind))
        mujoco.mj_getState(base.model, base.data, buffer, kind)
        state["mujoco"] = buffer
        state["mujoco_derived"] = {
            name: np.array(getattr(base.data, name), copy=True)
            for name in MUJOCO_DERIVED
            # an empty array (a model without cameras, sites, tendons) has nothing to restore,
            # and pickles through `bytes`, which the checkpoint loader rightly refuses
            if hasattr(base.data, name) and getattr(base.data, name).size
        }
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
        if "mujoco_derived" in state:
            for name, saved in state["mujoco_derived"].items():
                getattr(base.data, name)[...] = saved
        else:  # a checkpoint from before these were saved: recompute them from the state
            mujoco.mj_forward(base.model, base.data)
    if "state" in state:
        base.state = copy.deepcopy(state["state"])
    wrapper = env
    while isinstance(wrapper, gym.Wrapper):
        if isinstance(wrapper, gym.wrappers.TimeLimit) and "elapsed_steps" in state:
            wrapper._elapsed_steps = state["elapsed_steps"]
        wrapper = wrapper.env
