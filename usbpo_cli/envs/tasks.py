"""Environment layer: build gymnasium tasks with the checks and options the benchmark needs."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.error import DependencyNotInstalled
from gymnasium.spaces import Box

from usbpo_cli.envs.termination import (
    OTHER_TASK_IDS,
    SUPPORTED_VERSIONS,
    check_truncate_obs,
    env_family,
    termination_fn,
)
from usbpo_cli.errors import UsageError

SUPPORTED_FAMILIES = ("Hopper", "Walker2d", "HalfCheetah", "Ant", "Humanoid", "InvertedPendulum")

# Harmless messages printed on every make of v4 tasks / the HalfCheetah model.
_GYM_NOISE = r".*is out of date\. You should consider upgrading"
_MUJOCO_NOISE = ("compiler attribute 'settotalmass' is deprecated",)


@dataclass(frozen=True)
class TaskInfo:
    """What the rest of the tool needs to know about a task without holding an env open."""

    env_id: str
    family: str | None
    obs_dim: int
    act_dim: int
    termination: str
    truncated_obs: bool


class MBPOTruncatedObs(gym.ObservationWrapper[np.ndarray, np.ndarray, np.ndarray]):
    """Keep only qpos[2:] and qvel: the 27-dim Ant / 45-dim Humanoid obs MBPO was tuned on.

    With the x/y positions excluded (gymnasium's default) those are exactly the leading dims
    of the v4 and v5 observations; contact forces and com terms follow and are dropped.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        base = env.unwrapped
        if not getattr(base, "_exclude_current_positions_from_observation", False):
            raise UsageError("truncate_obs needs exclude_current_positions_from_observation")
        model = base.model  # type: ignore[attr-defined]
        self._size = int(model.nq - 2 + model.nv)
        space = env.observation_space
        assert isinstance(space, Box) and space.shape[0] >= self._size
        self.observation_space = Box(
            low=space.low[: self._size], high=space.high[: self._size], dtype=space.dtype
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Copy, so the truncated obs does not pin the full array in replay buffers."""
        return observation[: self._size].copy()


def supported_env_ids() -> list[str]:
    """Every id whose termination rule is verified: the six families in v4 and v5."""
    return [f"{family}-{v}" for family in SUPPORTED_FAMILIES for v in SUPPORTED_VERSIONS]


def known_env_ids() -> list[str]:
    """The ids with a termination rule of their own: the six families, then the other tasks
    (Pendulum, MountainCarContinuous) whose rule `termination.TASK_RULES` holds."""
    return supported_env_ids() + list(OTHER_TASK_IDS)


def _unknown_id_message(env_id: str) -> str:
    """One line: close matches among the supported ids (if any) plus what is supported."""
    matches = difflib.get_close_matches(env_id, known_env_ids(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(matches)}? " if matches else ""
    families = ", ".join(SUPPORTED_FAMILIES)
    return (
        f"unknown environment '{env_id}': {hint}supported families: {families} "
        f"({'/'.join(SUPPORTED_VERSIONS)}); other gymnasium tasks with Box spaces also work"
    )


@contextmanager
def _quiet_make() -> Iterator[None]:
    """Hide known make-time deprecation chatter; anything else MuJoCo says becomes a warning."""
    previous = mujoco.get_mju_user_warning()

    def forward(message: str) -> None:
        if not message.startswith(_MUJOCO_NOISE):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_GYM_NOISE, category=DeprecationWarning)
        mujoco.set_mju_user_warning(forward)
        try:
            yield
        finally:
            mujoco.set_mju_user_warning(previous)


def _gym_make(env_id: str) -> gym.Env:
    """gym.make with missing optional dependencies reported as a user error."""
    try:
        with _quiet_make():
            return gym.make(env_id)
    except (DependencyNotInstalled, ImportError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot build {env_id}: {first_line}") from exc


def _check_spaces(env: gym.Env, env_id: str) -> None:
    """Dynamics models and Gaussian policies need flat continuous observations and actions."""
    for kind, space in (("observation", env.observation_space), ("action", env.action_space)):
        if not isinstance(space, Box) or len(space.shape) != 1:
            env.close()
            raise UsageError(
                f"{env_id} has a {_describe_space(space)} {kind} space; only flat (1-D) Box "
                "observation and action spaces are supported"
            )


def _describe_space(space: gym.Space) -> str:
    """gymnasium's own one-line form of a space, e.g. Tuple(Discrete(32), Discrete(11), ...)."""
    text = " ".join(str(space).split())
    return text if len(text) <= 80 else text[:76] + "...)"


def _seed(env: gym.Env, seed: int) -> None:
    """gymnasium seeds through reset(seed=...); do it once so later plain resets reproduce."""
    env.reset(seed=seed)
    env.action_space.seed(seed)
    env.observation_space.seed(seed)


def make_env(env_id: str, seed: int | None = None, truncate_obs: bool = False) -> gym.Env:
    """Build a checked gymnasium env, optionally with MBPO's truncated Ant/Humanoid obs."""
    if env_id not in gym.registry:
        raise UsageError(_unknown_id_message(env_id))
    family = env_family(env_id)
    check_truncate_obs(env_id, family, truncate_obs)
    env = _gym_make(env_id)
    _check_spaces(env, env_id)
    if truncate_obs:
        env = MBPOTruncatedObs(env)
    if seed is not None:
        _seed(env, seed)
    return env


def task_info(env_id: str, truncate_obs: bool = False) -> TaskInfo:
    """Describe a task (dims and termination rule); builds the env once and closes it."""
    env = make_env(env_id, truncate_obs=truncate_obs)
    try:
        obs_dim = int(env.observation_space.shape[0])  # type: ignore[index]
        act_dim = int(env.action_space.shape[0])  # type: ignore[index]
    finally:
        env.close()
    _, description = termination_fn(env_id, truncate_obs)
    return TaskInfo(
        env_id=env_id,
        family=env_family(env_id),
        obs_dim=obs_dim,
        act_dim=act_dim,
        termination=description,
        truncated_obs=truncate_obs,
    )
