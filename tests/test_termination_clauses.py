"""Every termination clause of every task, on its own and at each bound, from set MuJoCo states.

Each case starts from a healthy reset state, changes one qpos/qvel entry so that exactly one
clause of gymnasium's rule is violated (or just satisfied), and needs no physics step:
gymnasium judges health from the current state. Expected verdicts are written by hand from
the rules (gymnasium 1.x defaults):

- Hopper: healthy iff z > 0.7, -0.2 < angle < 0.2, all abs(state_vector()[2:]) < 100
- Walker2d: 0.8 < z < 2, -1 < angle < 1
- Ant: 0.2 <= z <= 1 and the state finite
- Humanoid: 1 < z < 2
- InvertedPendulum: abs(pole angle) <= 0.2 and the obs finite
- HalfCheetah: never terminates

Three judges must all give that verdict: gymnasium's health properties (``terminated`` exists
on v4 only, ``is_healthy`` on v4 and v5 of the four falling families), gymnasium's own
``step`` run with the physics switched off (the only place InvertedPendulum's and
HalfCheetah's rules live), and our ``termination_fn`` on the observation, in float64 and
float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch

from usbpo_cli.envs.tasks import MBPOTruncatedObs, make_env
from usbpo_cli.envs.termination import termination_fn

EPS = 1e-3
SEED = 7
VERSIONS = ("v4", "v5")
FALLING = ("Hopper", "Walker2d", "Ant", "Humanoid")
# qpos entries left out of the default observation (x, or x and y), so obs[i - n] = qpos[i].
EXCLUDED = {
    "Hopper": 1,
    "Walker2d": 1,
    "HalfCheetah": 1,
    "Ant": 2,
    "Humanoid": 2,
    "InvertedPendulum": 0,
}


@dataclass(frozen=True)
class Case:
    """One set state: edits ("qpos"|"qvel", index, value) on a healthy base; expected verdict."""

    name: str
    edits: tuple[tuple[str, int, float], ...]
    terminated: bool


def _bound(clause: str, field: str, index: int, bound: float, side: int, closed: bool):
    """Three cases at one bound: EPS outside (on side ``side``), EPS inside, and exactly on it."""
    return [
        Case(f"{clause}-out", ((field, index, bound + side * EPS),), True),
        Case(f"{clause}-in", ((field, index, bound - side * EPS),), False),
        Case(f"{clause}-at", ((field, index, bound),), not closed),
    ]


def _one(name: str, field: str, index: int, value: float, terminated: bool) -> Case:
    return Case(name, ((field, index, value),), terminated)


NAN, INF = float("nan"), float("inf")

CASES: dict[str, list[Case]] = {
    # qpos = [x, z, angle, thigh, leg, foot]; qvel has 6 entries.
    "Hopper": [
        *_bound("z_low", "qpos", 1, 0.7, -1, closed=False),
        _one("z_no_upper", "qpos", 1, 1e3, False),
        *_bound("angle_low", "qpos", 2, -0.2, -1, closed=False),
        *_bound("angle_high", "qpos", 2, 0.2, +1, closed=False),
        *(
            case
            for joint in (3, 4, 5)
            for case in (
                _bound(f"state_q{joint}_high", "qpos", joint, 100.0, +1, closed=False)
                + _bound(f"state_q{joint}_low", "qpos", joint, -100.0, -1, closed=False)
            )
        ),
        _one("state_qvel_nan", "qvel", 3, NAN, True),
    ],
    # qpos = [x, z, angle, 6 joints]; no state-range clause.
    "Walker2d": [
        *_bound("z_low", "qpos", 1, 0.8, -1, closed=False),
        *_bound("z_high", "qpos", 1, 2.0, +1, closed=False),
        *_bound("angle_low", "qpos", 2, -1.0, -1, closed=False),
        *_bound("angle_high", "qpos", 2, 1.0, +1, closed=False),
        _one("joint_unbounded", "qpos", 3, 150.0, False),
    ],
    # qpos = [x, y, z, quaternion(4), 8 joints]; qvel has 14 entries.
    "Ant": [
        *_bound("z_low", "qpos", 2, 0.2, -1, closed=True),
        *_bound("z_high", "qpos", 2, 1.0, +1, closed=True),
        _one("finite_qvel_nan", "qvel", 0, NAN, True),
        _one("finite_qvel_inf", "qvel", 6, INF, True),
        _one("finite_qvel_neginf", "qvel", 13, -INF, True),
        _one("finite_joint_nan", "qpos", 7, NAN, True),
        _one("finite_large_ok", "qvel", 6, 1e6, False),
    ],
    # qpos = [x, y, z, quaternion(4), 17 joints]; no finiteness clause.
    "Humanoid": [
        *_bound("z_low", "qpos", 2, 1.0, -1, closed=False),
        *_bound("z_high", "qpos", 2, 2.0, +1, closed=False),
        _one("no_finite_clause", "qvel", 6, NAN, False),
    ],
    # qpos = [cart, pole angle]; obs = qpos + qvel.
    "InvertedPendulum": [
        *_bound("angle_low", "qpos", 1, -0.2, -1, closed=True),
        *_bound("angle_high", "qpos", 1, 0.2, +1, closed=True),
        _one("finite_qvel_nan", "qvel", 0, NAN, True),
        _one("finite_qvel_inf", "qvel", 1, INF, True),
        _one("finite_qpos_neginf", "qpos", 0, -INF, True),
        _one("cart_unbounded", "qpos", 0, 100.0, False),
    ],
    # qpos = [rootx, rootz, rooty, 6 joints].
    "HalfCheetah": [
        _one("never_z", "qpos", 1, -10.0, False),
        _one("never_angle", "qpos", 2, 3.0, False),
        _one("never_state", "qpos", 3, 200.0, False),
        _one("never_velocity", "qvel", 0, 1e3, False),
        _one("never_nan", "qvel", 4, NAN, False),
    ],
}

PARAMS = [
    pytest.param(
        f"{family}-{v}", truncate, case, id=f"{family}-{v}{'-trunc' * truncate}-{case.name}"
    )
    for family, cases in CASES.items()
    for v in VERSIONS
    for truncate in ((False, True) if family in ("Ant", "Humanoid") else (False,))
    for case in cases
]


@pytest.fixture(scope="module")
def envs() -> Iterator[dict[tuple[str, bool], gym.Env]]:
    """One env per (id, truncate), built lazily through make_env and closed at the end."""
    made: dict[tuple[str, bool], gym.Env] = {}
    yield made
    for env in made.values():
        env.close()


def _env(envs: dict[tuple[str, bool], gym.Env], env_id: str, truncate: bool) -> gym.Env:
    if (env_id, truncate) not in envs:
        envs[(env_id, truncate)] = make_env(env_id, seed=SEED, truncate_obs=truncate)
    return envs[(env_id, truncate)]


@contextmanager
def _no_physics(base: gym.Env) -> Iterator[None]:
    """Make gymnasium's step judge the current state: do_simulation does nothing meanwhile."""
    base.do_simulation = lambda action, n_frames: None  # type: ignore[attr-defined]
    try:
        with np.errstate(all="ignore"):
            yield
    finally:
        del base.do_simulation  # type: ignore[attr-defined]


def _gym_verdicts(env: gym.Env) -> tuple[dict[str, bool], np.ndarray]:
    """gymnasium's verdicts on the current state, and our obs of it (truncated if asked)."""
    base = env.unwrapped
    cls = type(base)
    qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()  # type: ignore[attr-defined]
    verdicts: dict[str, bool] = {}
    if isinstance(getattr(cls, "terminated", None), property):
        verdicts["terminated"] = bool(base.terminated)  # type: ignore[attr-defined]
    if isinstance(getattr(cls, "is_healthy", None), property):
        verdicts["not is_healthy"] = not base.is_healthy  # type: ignore[attr-defined]
    with _no_physics(base):
        obs = base._get_obs()  # type: ignore[attr-defined]
        step_obs, _, terminated, _, _ = base.step(np.zeros(env.action_space.shape))
    verdicts["step"] = bool(terminated)
    np.testing.assert_array_equal(step_obs, obs)
    np.testing.assert_array_equal(base.data.qpos, qpos)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(base.data.qvel, qvel)  # type: ignore[attr-defined]
    if isinstance(env, MBPOTruncatedObs):
        full = obs
        obs = env.observation(full)
        np.testing.assert_array_equal(obs, full[: obs.shape[0]])
    return verdicts, obs


def _our_verdicts(env_id: str, truncate: bool, obs: np.ndarray) -> dict[str, bool]:
    """Our rule on next_obs = obs as a [1, obs_dim] batch, in float64 and float32."""
    fn, _ = termination_fn(env_id, truncate)
    out = {}
    for dtype in (torch.float64, torch.float32):
        next_obs = torch.as_tensor(obs, dtype=dtype).reshape(1, -1)
        zeros = torch.zeros_like(next_obs)
        mask = fn(zeros, torch.zeros(1, 1, dtype=dtype), next_obs)
        assert mask.dtype == torch.bool and mask.shape == (1,)
        out[f"ours {dtype}"] = bool(mask[0])
    return out


def _set(env: gym.Env, edits: tuple[tuple[str, int, float], ...]) -> None:
    """Reset to the seeded healthy state, then apply the edits with set_state (no step)."""
    env.reset(seed=SEED)
    base = env.unwrapped
    qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()  # type: ignore[attr-defined]
    for field, index, value in edits:
        (qpos if field == "qpos" else qvel)[index] = value
    base.set_state(qpos, qvel)  # type: ignore[attr-defined]
    for field, index, value in edits:
        stored = (base.data.qpos if field == "qpos" else base.data.qvel)[index]  # type: ignore[attr-defined]
        np.testing.assert_array_equal(stored, value)  # MuJoCo kept the state as set


@pytest.mark.parametrize(("env_id", "truncate", "case"), PARAMS)
def test_clause_verdict(envs, env_id: str, truncate: bool, case: Case) -> None:
    """The clause named in the test id, violated by EPS (-out), met by EPS (-in), or on the
    bound (-at: terminated for open intervals, healthy for closed ones); the base state must
    be healthy, so the one edited entry decides. All of gymnasium's judges and ours agree."""
    family = env_id.split("-")[0]
    env = _env(envs, env_id, truncate)
    _set(env, ())
    base_verdicts, _ = _gym_verdicts(env)
    assert not any(base_verdicts.values()), f"base state not healthy: {base_verdicts}"
    if family in FALLING:
        assert "not is_healthy" in base_verdicts
        assert ("terminated" in base_verdicts) == env_id.endswith("-v4")

    _set(env, case.edits)
    verdicts, obs = _gym_verdicts(env)
    for field, index, value in case.edits:
        if field == "qpos" and index >= EXCLUDED[family] and np.isfinite(value):
            assert obs[index - EXCLUDED[family]] == value  # the edited entry is in the obs
    verdicts |= _our_verdicts(env_id, truncate, obs)
    expected = {judge: case.terminated for judge in verdicts}
    assert verdicts == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_hopper_velocity_state_clause_is_hidden_by_the_clip(envs, version: str) -> None:
    """Hopper's abs(state) < 100 clause on a joint velocity: gymnasium reads the raw qvel and
    terminates at 100 + EPS, but the obs clips qvel to +-10, so no obs-based rule can see it
    (the limit the README documents): ours stays healthy. Just inside, both are healthy."""
    env_id = f"Hopper-{version}"
    env = _env(envs, env_id, False)
    for value, gym_terminated in ((100.0 + EPS, True), (-100.0 - EPS, True), (99.999, False)):
        _set(env, (("qvel", 3, value),))
        verdicts, obs = _gym_verdicts(env)
        assert set(verdicts.values()) == {gym_terminated}
        assert obs[5 + 3] == np.sign(value) * 10.0
        assert not any(_our_verdicts(env_id, False, obs).values())


@pytest.mark.parametrize(
    ("env_id", "z", "terminated"),
    [
        # gymnasium's open healthy range (0.7, inf) excludes z = +inf itself
        ("Hopper-v4", float("inf"), True),
        ("Hopper-v4", 1e30, False),
        ("Walker2d-v4", float("inf"), True),
        ("Humanoid-v4", float("inf"), True),
    ],
)
def test_an_infinite_height_is_outside_the_open_healthy_range(
    env_id: str, z: float, terminated: bool
) -> None:
    """z < max_z with max_z = inf (Hopper) is false for z = inf: a model rollout that predicts
    an infinite height must end, as gymnasium's `min_z < z < max_z` would say."""
    env = make_env(env_id)
    obs, _ = env.reset(seed=0)
    obs = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
    obs[0, 0] = z
    rule, _ = termination_fn(env_id)
    assert bool(rule(obs, torch.zeros(1, 1), obs)[0]) is terminated
    env.close()
