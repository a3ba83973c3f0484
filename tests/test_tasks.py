"""How a task is built and checked (envs/tasks.py), on environments made for the test: spaces the
models cannot take are refused (and the env closed), a task that cannot be built says why in
one line, every env made is closed after it is described, MuJoCo's own warnings still reach
the user, and a seed reproduces every random draw the env offers."""

from __future__ import annotations

import dataclasses
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.spaces import Box, Discrete

from usbpo_cli.envs.tasks import (
    MBPOTruncatedObs,
    _describe_space,
    _quiet_make,
    make_env,
    task_info,
)
from usbpo_cli.errors import UsageError

CLOSED: list[str] = []  # the ids of the test envs closed so far


class Made(gym.Env):
    """A task with the spaces a test asks for, noting when it is closed."""

    def __init__(self, name: str, observation: gym.Space, action: gym.Space) -> None:
        self.name, self.observation_space, self.action_space = name, observation, action

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple:
        return self.observation_space.sample(), 0.0, False, False, {}

    def close(self) -> None:
        CLOSED.append(self.name)


class Unbuildable(gym.Env):
    def __init__(self, message: str) -> None:
        raise ImportError(message)


def register(name: str, observation: gym.Space, action: gym.Space) -> str:
    env_id = f"usbpo-test/{name}-v0"
    if env_id not in gym.registry:
        kwargs = {"name": name, "observation": observation, "action": action}
        gym.register(env_id, entry_point=Made, kwargs=kwargs)
    return env_id


FLAT = Box(-1.0, 1.0, (3,), np.float32)


@pytest.mark.parametrize(
    ("name", "observation", "action", "kind", "shown"),
    [
        ("image", Box(0, 255, (4, 4), np.uint8), FLAT, "observation", "Box(0, 255, (4, 4), uint8)"),
        (
            "grid-action",
            FLAT,
            Box(-1.0, 1.0, (2, 2), np.float32),
            "action",
            "Box(-1.0, 1.0, (2, 2)",
        ),
        ("discrete", FLAT, Discrete(3), "action", "Discrete(3)"),
    ],
)
def test_a_space_the_models_cannot_take_is_refused_and_the_env_closed(
    name: str, observation: gym.Space, action: gym.Space, kind: str, shown: str
) -> None:
    env_id = register(name, observation, action)
    with pytest.raises(UsageError) as refused:
        make_env(env_id)
    message = str(refused.value)
    assert message.startswith(f"{env_id} has a {shown}") and f" {kind} space; only flat" in message
    assert CLOSED[-1] == name


def test_a_flat_task_is_described_and_then_closed() -> None:
    env_id = register("flat", FLAT, Box(-1.0, 1.0, (2,), np.float32))
    closed = CLOSED.count("flat")
    info = task_info(env_id)
    assert (info.env_id, info.family, info.obs_dim, info.act_dim) == (env_id, None, 3, 2)
    assert CLOSED.count("flat") == closed + 1
    with pytest.raises(dataclasses.FrozenInstanceError):  # what a run recorded stays as it was
        info.obs_dim = 4  # type: ignore[misc]


def test_a_long_space_is_shown_in_80_characters() -> None:
    class Shown:
        def __init__(self, text: str) -> None:
            self.text = text

        def __str__(self) -> str:
            return self.text

    exactly = "Tuple(" + "x" * 73 + ")"
    assert len(exactly) == 80 and _describe_space(Shown(exactly)) == exactly
    longer = "Tuple(" + "y" * 74 + ")"
    shown = _describe_space(Shown(longer))
    assert shown == longer[:76] + "...)" and len(shown) == 80
    assert _describe_space(Shown("Dict(a:  Box(3,),\n b: Discrete(2))")) == (
        "Dict(a: Box(3,), b: Discrete(2))"
    )


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("needs box2d\ninstall it with pip install gymnasium[box2d]", "needs box2d"),
        ("", "ImportError"),
    ],
)
def test_a_task_that_cannot_be_built_says_why_in_one_line(message: str, shown: str) -> None:
    env_id = f"usbpo-test/Unbuildable{len(message)}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=Unbuildable, kwargs={"message": message})
    with pytest.raises(UsageError) as refused:
        make_env(env_id)
    assert str(refused.value) == f"cannot build {env_id}: {shown}"


def test_an_unknown_id_suggests_at_most_three_tasks() -> None:
    with pytest.raises(UsageError) as refused:
        make_env("Halper-v4")  # close to five ids
    suggested = str(refused.value).split("did you mean ")[1].split("? ")[0].split(", ")
    assert len(suggested) == 3 and all(name in ("Hopper-v4", "Walker2d-v4", "Hopper-v5",
                                                "HalfCheetah-v4", "Walker2d-v5")
                                       for name in suggested)  # fmt: skip


def test_mujocos_own_warnings_reach_the_user_and_its_known_chatter_does_not() -> None:
    before = mujoco.get_mju_user_warning()
    with _quiet_make():
        forward = mujoco.get_mju_user_warning()
        with pytest.warns(RuntimeWarning, match="^MuJoCo: Nan, Inf or huge value in QACC"):
            forward("Nan, Inf or huge value in QACC at DOF 0")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            forward("compiler attribute 'settotalmass' is deprecated; use ...")
    assert mujoco.get_mju_user_warning() is before


def test_a_seed_reproduces_every_random_draw_the_env_offers() -> None:
    first, second = make_env("Hopper-v4", seed=11), make_env("Hopper-v4", seed=11)
    for space in ("observation_space", "action_space"):
        a, b = getattr(first, space), getattr(second, space)
        np.testing.assert_array_equal(a.sample(), b.sample())
    other = make_env("Hopper-v4", seed=12)
    assert not np.array_equal(first.action_space.sample(), other.action_space.sample())


def test_mbpos_truncated_observation_needs_positions_left_out() -> None:
    """The wrapper keeps qpos[2:] and qvel, which are the leading dims only where gymnasium
    left the x/y positions out of the observation: elsewhere it refuses."""
    with pytest.raises(UsageError, match="needs exclude_current_positions_from_observation"):
        MBPOTruncatedObs(make_env("Pendulum-v1"))
    with pytest.raises(UsageError, match="needs exclude_current_positions_from_observation"):
        MBPOTruncatedObs(gym.make("Ant-v4", exclude_current_positions_from_observation=False))
