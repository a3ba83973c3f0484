"""The torch termination rules must agree with gymnasium's own `terminated`, step for step."""

from __future__ import annotations

import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch

from usbpo_cli.envs.tasks import (
    SUPPORTED_FAMILIES,
    TaskInfo,
    make_env,
    supported_env_ids,
    task_info,
)
from usbpo_cli.envs.termination import NEVER_KNOWN, termination_fn
from usbpo_cli.errors import UsageError

RANDOM_STEPS = 250
# Hand-built unhealthy states, (qpos index, value): each hits one clause of the rule,
# including upper bounds that random actions rarely reach. (Ant's z<0.2 is not forceable:
# the 0.25-radius torso would sit in the floor and contacts push it back within one step.)
FORCED: dict[str, list[tuple[int, float]]] = {
    "Hopper": [(1, 0.5), (2, 0.5), (2, -0.5), (3, 150.0)],
    "Walker2d": [(1, 0.5), (1, 2.5), (2, 1.5), (2, -1.5)],
    "HalfCheetah": [],
    "Ant": [(2, 1.5), (2, 3.0)],
    "Humanoid": [(2, 0.6), (2, 2.5)],
    "InvertedPendulum": [(1, 0.5), (1, -0.5)],
}
CASES = [(env_id, False) for env_id in supported_env_ids()] + [
    (f"{family}-{v}", True) for family in ("Ant", "Humanoid") for v in ("v4", "v5")
]

Transitions = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[bool]]


def _random_rollout(env: gym.Env, steps: int) -> Transitions:
    """Uniform random actions, resetting after every episode end."""
    obs_l, act_l, next_l, term_l = [], [], [], []
    obs, _ = env.reset()
    for _ in range(steps):
        act = env.action_space.sample()
        next_obs, _, terminated, truncated, _ = env.step(act)
        obs_l.append(obs), act_l.append(act), next_l.append(next_obs), term_l.append(terminated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    return obs_l, act_l, next_l, term_l


def _forced_falls(env: gym.Env, edits: list[tuple[int, float]]) -> Transitions:
    """Put the body in an unhealthy pose with set_state, then take one real step."""
    obs_l, act_l, next_l, term_l = [], [], [], []
    for index, value in edits:
        obs, _ = env.reset()
        base = env.unwrapped
        qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()
        qpos[index] = value
        base.set_state(qpos, qvel)
        act = env.action_space.sample()
        next_obs, _, terminated, _, _ = env.step(act)
        obs_l.append(obs), act_l.append(act), next_l.append(next_obs), term_l.append(terminated)
    return obs_l, act_l, next_l, term_l


def _predict(env_id: str, truncate: bool, data: Transitions) -> np.ndarray:
    """Run the torch rule on the whole batch at once (also checks it is batched)."""
    fn, _ = termination_fn(env_id, truncate)
    obs, act, next_obs = (torch.as_tensor(np.stack(x)) for x in data[:3])
    out = fn(obs, act, next_obs)
    assert out.dtype == torch.bool and out.shape == (len(data[3]),)
    return out.numpy()


@pytest.mark.parametrize(("env_id", "truncate"), CASES)
def test_termination_matches_gymnasium(env_id: str, truncate: bool) -> None:
    """Every step, terminal ones included, must match; falling families must fall."""
    family = env_id.split("-")[0]
    env = make_env(env_id, seed=123, truncate_obs=truncate)
    try:
        rollout = _random_rollout(env, RANDOM_STEPS)
        forced = _forced_falls(env, FORCED[family])
    finally:
        env.close()
    data = tuple(a + b for a, b in zip(rollout, forced, strict=True))
    terminated = np.asarray(data[3], dtype=bool)
    predicted = _predict(env_id, truncate, data)  # type: ignore[arg-type]
    bad = np.flatnonzero(predicted != terminated)
    assert bad.size == 0, f"{env_id}: disagree at steps {bad[:10]}"
    if family == "HalfCheetah":
        assert not terminated.any()
    else:
        assert terminated.any(), "no terminal step observed"
        assert all(forced[3]), "a forced unhealthy state did not terminate"


@pytest.mark.parametrize(
    ("env_id", "dim"),
    [
        ("Ant-v4", 27),
        ("Ant-v5", 27),
        ("Humanoid-v4", 45),
        ("Humanoid-v5", 45),
    ],
)
def test_truncated_obs_is_qpos2_then_qvel(env_id: str, dim: int) -> None:
    """MBPO's obs: exactly qpos[2:] followed by qvel, with a matching observation_space."""
    env = make_env(env_id, seed=0, truncate_obs=True)
    try:
        assert env.observation_space.shape == (dim,)
        obs, _ = env.reset()
        for _ in range(5):
            data = env.unwrapped.data
            assert obs.shape == (dim,) and obs in env.observation_space
            np.testing.assert_array_equal(obs, np.concatenate([data.qpos[2:], data.qvel]))
            obs, *_ = env.step(env.action_space.sample())
    finally:
        env.close()
    info = task_info(env_id, truncate_obs=True)
    assert info.obs_dim == dim and info.truncated_obs


def test_untruncated_dims_and_task_info() -> None:
    """Default observations stay gymnasium's, and task_info reports them."""
    dims = {"Ant-v4": 27, "Ant-v5": 105, "Humanoid-v4": 376, "Humanoid-v5": 348}
    for env_id, dim in dims.items():
        assert task_info(env_id).obs_dim == dim
    assert task_info("Hopper-v5") == TaskInfo(
        env_id="Hopper-v5",
        family="Hopper",
        obs_dim=11,
        act_dim=3,
        termination=termination_fn("Hopper-v5")[1],
        truncated_obs=False,
    )


def test_supported_env_ids() -> None:
    ids = supported_env_ids()
    assert len(ids) == 12 and len(set(ids)) == 12
    assert {i.split("-")[0] for i in ids} == set(SUPPORTED_FAMILIES)
    assert all(termination_fn(i)[1] != NEVER_KNOWN for i in ids)


def test_unknown_env_id_suggests_close_match() -> None:
    with pytest.raises(UsageError, match="did you mean.*Hopper-v") as err:
        make_env("Hoper-v5")
    message = str(err.value)
    assert "\n" not in message and "Walker2d" in message


def test_unknown_env_id_without_match_lists_families() -> None:
    with pytest.raises(UsageError, match="supported families: Hopper") as err:
        make_env("zzzzzz")
    assert "did you mean" not in str(err.value)


@pytest.mark.parametrize("env_id", ["Hopper-v3", "Ant-v2"])
def test_old_mujoco_versions_rejected(env_id: str) -> None:
    """v2/v3 need mujoco-py; never hand them a silent never-terminate rule either."""
    with pytest.raises(UsageError, match="-v4 or .*-v5"):
        make_env(env_id)
    with pytest.raises(UsageError):
        termination_fn(env_id)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v4", "Pendulum-v1"])
def test_truncate_obs_only_for_ant_and_humanoid(env_id: str) -> None:
    with pytest.raises(UsageError, match="truncate_obs"):
        make_env(env_id, truncate_obs=True)
    with pytest.raises(UsageError, match="truncate_obs"):
        termination_fn(env_id, truncate_obs=True)


def test_discrete_action_space_rejected() -> None:
    with pytest.raises(UsageError, match="CartPole-v1 has a Discrete.* action space"):
        make_env("CartPole-v1")


def test_other_box_task_never_terminates() -> None:
    """Any registered Box task works; Pendulum's source has no terminal condition, and its
    rule says so (other tasks learn theirs: tests/test_cli_trust.py)."""
    info = task_info("Pendulum-v1")
    assert (info.family, info.obs_dim, info.act_dim) == (None, 3, 1)
    assert info.termination != NEVER_KNOWN and "no terminal condition" in info.termination
    env = make_env("Pendulum-v1", seed=0)
    try:
        data = _random_rollout(env, 20)
    finally:
        env.close()
    assert not any(data[3])
    assert not _predict("Pendulum-v1", False, data).any()


def test_seed_makes_resets_reproducible() -> None:
    first, second = make_env("Hopper-v5", seed=7), make_env("Hopper-v5", seed=7)
    np.testing.assert_array_equal(first.reset()[0], second.reset()[0])
    np.testing.assert_array_equal(first.action_space.sample(), second.action_space.sample())


def test_make_is_quiet_and_leaves_global_state(capfd: pytest.CaptureFixture[str]) -> None:
    """No v4 deprecation / MuJoCo compiler chatter, and nothing leaks out of make."""
    filters_before = list(warnings.filters)
    handler_before = mujoco.get_mju_user_warning()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for env_id in ("Hopper-v4", "HalfCheetah-v4", "HalfCheetah-v5"):
            make_env(env_id).close()
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr().err == ""
    assert warnings.filters == filters_before
    assert mujoco.get_mju_user_warning() is handler_before


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_rules_are_device_and_dtype_agnostic(dtype: torch.dtype) -> None:
    """Pure tensor ops: same answer in any float dtype, and shape-only on the meta device."""
    next_obs = torch.zeros(4, 11, dtype=dtype)
    next_obs[:, 0] = torch.tensor([1.2, 0.5, 1.2, 1.2], dtype=dtype)  # z
    next_obs[2, 1] = 0.5  # angle
    next_obs[3, 5] = float("nan")
    act = torch.zeros(4, 3, dtype=dtype)
    for env_id in supported_env_ids() + ["Pendulum-v1"]:
        fn, _ = termination_fn(env_id)
        meta = fn(next_obs.to("meta"), act.to("meta"), next_obs.to("meta"))
        assert meta.device.type == "meta" and meta.shape == (4,) and meta.dtype == torch.bool
    hopper, _ = termination_fn("Hopper-v4")
    assert hopper(next_obs, act, next_obs).tolist() == [False, True, True, True]
    ant, _ = termination_fn("Ant-v5")
    assert ant(next_obs * 0.5, act, next_obs * 0.5).tolist() == [False, False, False, True]
    pendulum, _ = termination_fn("InvertedPendulum-v5")
    assert pendulum(next_obs, act, next_obs).tolist() == [False, False, True, True]
