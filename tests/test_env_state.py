"""An environment's saved state (envs/state.py) against the environment itself: save mid-episode,
step on, load the state into another env of the same task made with another seed, step on with
the same actions, and see the same observations, rewards and episode ends, including the
time-limit cut and the random draws of the resets after it."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from cli_helpers import assert_rollback_reproduces, usbpo, usbpo_inproc
from gymnasium.spaces import Box

from usbpo_cli.envs.state import capture_env, restore_env, saves_simulator
from usbpo_cli.envs.tasks import make_env
from usbpo_cli.runs.checkpoint import load_checkpoint

# MuJoCo tasks, and the two classic-control tasks `usbpo envs` lists (their simulator state is
# a numpy array, not MuJoCo's), each with the steps taken before the save and whether the plan
# after it crosses an episode end. The classic tasks are saved 5 steps before their time limit
# (so the restored counter must cut the episode); the pendulum and the humanoid, which fall
# within a few dozen random actions, after 3 (so they must terminate on time). Ant's and
# Humanoid's rewards read positions MuJoCo derives from the state (the torso's, the centre of
# mass) before their step: a restore must give back those as the saved env had them.
WARMUP = {
    "InvertedPendulum-v4": (3, True),
    "Humanoid-v4": (3, True),
    "Ant-v4": (3, False),
    "Pendulum-v1": (195, True),
    "MountainCarContinuous-v0": (994, True),
}
TASKS = list(WARMUP)


def actions(env_id: str, count: int) -> list[np.ndarray]:
    env = make_env(env_id)
    env.action_space.seed(123)
    return [env.action_space.sample() for _ in range(count)]


def play(env, plan: list[np.ndarray]) -> list[tuple]:
    """Step through `plan`, resetting after each episode end; every step's record."""
    record = []
    for action in plan:
        obs, reward, terminated, truncated, _ = env.step(action)
        record.append((obs.copy(), float(reward), terminated, truncated))
        if terminated or truncated:
            record.append(("reset", env.reset()[0].copy()))
    return record


def resets(record: list[tuple]) -> int:
    return sum(isinstance(step[0], str) for step in record)


def same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b)
    )


@pytest.mark.parametrize("env_id", TASKS)
def test_a_restored_env_goes_on_exactly_as_the_saved_one(env_id: str, tmp_path: Path) -> None:
    warmup, crosses_an_end = WARMUP[env_id]
    plan = actions(env_id, warmup + 40)
    saved_env = make_env(env_id, seed=1)
    saved_env.reset()
    played = play(saved_env, plan[:warmup])
    assert resets(played) == 0, "the warm-up must stay in one episode"
    # through a checkpoint file, read as the run layer reads it (weights_only, allow-list)
    torch.save(capture_env(saved_env), tmp_path / "env.pt")
    state = load_checkpoint(tmp_path / "env.pt")
    expected = play(saved_env, plan[warmup:])
    assert (resets(expected) > 0) == crosses_an_end
    if env_id in ("Pendulum-v1", "MountainCarContinuous-v0"):
        assert expected[4][3] and not expected[4][2], "the time limit cuts the fifth step"

    other = make_env(env_id, seed=2)
    other.reset()
    play(other, plan[:3])
    restore_env(other, state)
    assert same(play(other, plan[warmup:]), expected)


def test_a_checkpoint_without_mujocos_derived_quantities_recomputes_them() -> None:
    """Checkpoints written before the derived quantities were saved hold the state alone:
    restored, MuJoCo recomputes them from it. The observations then go on exactly, and
    Humanoid's first reward (which reads the centre of mass before the step) within 1e-4 of
    the saved env's, not from the rebuilt env's own pose."""
    plan = actions("Humanoid-v4", 8)
    saved_env = make_env("Humanoid-v4", seed=1)
    saved_env.reset()
    play(saved_env, plan[:3])
    state = capture_env(saved_env)
    del state["mujoco_derived"]
    expected = play(saved_env, plan[3:])
    other = make_env("Humanoid-v4", seed=2)
    other.reset()
    play(other, plan[:6])
    restore_env(other, state)
    got = play(other, plan[3:])
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(got, expected))
    assert got[0][1] == pytest.approx(expected[0][1], rel=1e-4)
    assert [step[1] for step in got[1:]] == [step[1] for step in expected[1:]]


@pytest.mark.parametrize("env_id", TASKS)
def test_without_the_saved_state_the_env_does_not_go_on_the_same(env_id: str) -> None:
    """The check above can fail: an env of another seed, not restored, steps differently."""
    plan = actions(env_id, 30)
    first, second = make_env(env_id, seed=1), make_env(env_id, seed=2)
    first.reset(), second.reset()
    assert not same(play(first, plan), play(second, plan))


def test_mujocos_saved_state_is_a_copy_not_a_view_of_the_running_env() -> None:
    env = make_env("Humanoid-v4", seed=0)
    env.reset()
    state = capture_env(env)
    derived = {name: array.copy() for name, array in state["mujoco_derived"].items()}
    env.step(env.action_space.sample())
    assert all(np.array_equal(state["mujoco_derived"][k], v) for k, v in derived.items())
    assert not np.array_equal(env.unwrapped.data.xipos, derived["xipos"])


def test_a_saved_state_is_a_copy_not_a_view_of_the_running_env() -> None:
    env = make_env("Pendulum-v1", seed=0)
    env.reset()
    state = capture_env(env)
    before = np.array(state["state"], copy=True)
    env.step(np.array([1.0], np.float32))
    assert np.array_equal(state["state"], before)
    other = make_env("Pendulum-v1", seed=5)
    other.reset()
    restore_env(other, state)
    other.step(np.array([1.0], np.float32))
    assert np.array_equal(state["state"], before)


# --- a whole run resumed mid-episode ----------------------------------------------------------


def pendulum_args(out: Path, steps: int) -> list[str]:
    """A tiny SAC run on Pendulum-v1 (200-step episodes) with a row every 75 steps, so the
    checkpoint of step 225 falls 25 steps into the second episode."""
    return [
        "train", "--env", "Pendulum-v1", "--algo", "sac", "--preset", "tiny", "--quiet",
        "--set", "epoch_length=75", "--steps", str(steps), "--out", str(out),
    ]  # fmt: skip


def test_a_pendulum_run_resumed_mid_episode_writes_the_rows_of_one_uninterrupted(
    tmp_path: Path,
) -> None:
    finished = tmp_path / "finished"
    done = usbpo(*pendulum_args(finished, 300), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = assert_rollback_reproduces(
        finished, tmp_path, lambda run: pendulum_args(run, 300), last=300, resumed_from=225
    )
    assert "not exact" not in resumed.stderr + resumed.stdout


class Drift(gym.Env):
    """A task whose state is kept where `capture_env` cannot see it (`position`)."""

    observation_space = Box(-np.inf, np.inf, (2,), np.float32)
    action_space = Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.position = float(self.np_random.uniform(-1, 1))
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.array([self.position, 1.0], dtype=np.float32)

    def step(self, action: np.ndarray) -> tuple:
        self.position += 0.1 * float(action[0])
        return self._obs(), -abs(self.position), False, False, {}


def test_a_resume_that_cannot_be_exact_says_so(tmp_path: Path) -> None:
    env_id = "usbpo-test/Drift-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=Drift, max_episode_steps=60)
    for saved in ("Pendulum-v1", "MountainCarContinuous-v0", "Hopper-v4"):
        assert saves_simulator(make_env(saved, seed=0)), saved
    assert not saves_simulator(make_env(env_id, seed=0))
    args = ["train", "--env", env_id, "--algo", "sac", "--preset", "tiny", "--quiet"]
    args += ["--steps", "300", "--out", str(tmp_path / "run")]
    first = usbpo_inproc(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "not exact" not in first.stderr
    (tmp_path / "run" / "checkpoints" / "ckpt-0000000300.pt").unlink()
    resumed = usbpo_inproc(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = (tmp_path / "run" / "events.log").read_text()
    for text in (" ".join(resumed.stderr.split()), events):  # the console may wrap stderr
        assert f"{env_id}'s simulator state is not in its checkpoints" in text
        assert "episode under way at step 200 goes on from a rebuilt env" in text
