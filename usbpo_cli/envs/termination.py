"""Vectorised termination rules, so model rollouts end exactly where the real task would.

Each rule is transcribed from the installed gymnasium source (v4 and v5 agree for every
family) and reads only ``next_obs``. Observation indices assume gymnasium's default
``exclude_current_positions_from_observation=True``, which is what ``make_env`` builds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from gymnasium.envs.registration import parse_env_id
from gymnasium.error import Error as GymError

from usbpo_cli.errors import UsageError

TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

SUPPORTED_VERSIONS = ("v4", "v5")
TRUNCATABLE_FAMILIES = ("Ant", "Humanoid")
NEVER_KNOWN = "never terminates (no known rule)"


def _hopper(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Hopper: obs[0]=z, obs[1]=angle; gymnasium also bounds state_vector()[2:] = obs[1:]."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (
        (z > 0.7)
        & (z < math.inf)
        & (angle > -0.2)
        & (angle < 0.2)
        & (next_obs[..., 1:].abs() < 100.0).all(dim=-1)
    )
    return ~healthy


def _walker2d(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Walker2d: obs[0]=z, obs[1]=angle, both open intervals."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def _ant(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Ant: obs[0]=z in a closed interval, and the state must be finite.

    gymnasium checks qpos/qvel for finiteness; we check the whole row, which agrees on real
    data (contact forces are finite whenever the state is) and also stops model rollouts
    that have produced NaN anywhere.
    """
    z = next_obs[..., 0]
    healthy = torch.isfinite(next_obs).all(dim=-1) & (z >= 0.2) & (z <= 1.0)
    return ~healthy


def _humanoid(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Humanoid: obs[0]=z (qpos[2]), open interval."""
    z = next_obs[..., 0]
    return ~((z > 1.0) & (z < 2.0))


def _inverted_pendulum(
    obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor
) -> torch.Tensor:
    """InvertedPendulum: obs[1]=pole angle; gymnasium terminates on non-finite obs too."""
    healthy = torch.isfinite(next_obs).all(dim=-1) & (next_obs[..., 1].abs() <= 0.2)
    return ~healthy


def _never(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """No termination: an all-False mask on the caller's device."""
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


_RULES: dict[str, tuple[TerminationFn, str]] = {
    "Hopper": (_hopper, "terminates unless z>0.7, |angle|<0.2, |state[1:]|<100"),
    "Walker2d": (_walker2d, "terminates unless 0.8<z<2, -1<angle<1"),
    "HalfCheetah": (_never, "never terminates"),
    "Ant": (_ant, "terminates unless 0.2<=z<=1 and the state is finite"),
    "Humanoid": (_humanoid, "terminates unless 1<z<2"),
    "InvertedPendulum": (
        _inverted_pendulum,
        "terminates unless the obs is finite and |angle|<=0.2",
    ),
}


def env_family(env_id: str) -> str | None:
    """Return the rule family of ``env_id`` ("Hopper", ...) or None for any other task.

    A known family at another version (e.g. Hopper-v3) is an error rather than None, so it
    cannot silently get a never-terminate rule.
    """
    try:
        namespace, name, version = parse_env_id(env_id)
    except GymError:
        return None
    if namespace is not None or name not in _RULES:
        return None
    if f"v{version}" not in SUPPORTED_VERSIONS:
        versions = " or ".join(f"{name}-{v}" for v in SUPPORTED_VERSIONS)
        raise UsageError(f"{env_id} is not supported: use {versions}")
    return name


def check_truncate_obs(env_id: str, family: str | None, truncate_obs: bool) -> None:
    """MBPO's truncated observations exist only for Ant and Humanoid."""
    if truncate_obs and family not in TRUNCATABLE_FAMILIES:
        allowed = ", ".join(TRUNCATABLE_FAMILIES)
        raise UsageError(f"truncate_obs applies only to {allowed} (v4/v5), not {env_id}")


def termination_fn(env_id: str, truncate_obs: bool = False) -> tuple[TerminationFn, str]:
    """Return the batched termination function of ``env_id`` and a description of its rule.

    Truncation keeps the leading qpos[2:] dims, so the same rule serves both layouts.
    """
    family = env_family(env_id)
    check_truncate_obs(env_id, family, truncate_obs)
    if family is None:
        other = _other_task(env_id)
        if other is not None:
            return TASK_RULES[other](env_id)
        return LearnedTermination(), LEARNED
    return _RULES[family]


# --- tasks outside the six families -------------------------------------------------------------
#
# A task whose gymnasium env can terminate must never get a never-terminate rule: a known task
# gets its rule here (read from its source, or built from values read off its environment); any
# other task gets a rule learned from the run's own real terminal transitions.


def _pendulum(env_id: str) -> tuple[TerminationFn, str]:
    """Pendulum's step() returns terminated=False always; only the time limit ends an episode."""
    return _never, (
        "never terminates: Pendulum's step() has no terminal condition (terminated is always "
        "False; episodes end at the time limit)"
    )


def _mountain_car_continuous(env_id: str) -> tuple[TerminationFn, str]:
    """MountainCarContinuous ends at the goal: position >= goal_position and velocity >=
    goal_velocity (obs = [position, velocity]); both thresholds are read from the env."""
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        goal_position = float(env.unwrapped.goal_position)  # type: ignore[attr-defined]
        goal_velocity = float(env.unwrapped.goal_velocity)  # type: ignore[attr-defined]
    finally:
        env.close()

    def rule(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return (next_obs[..., 0] >= goal_position) & (next_obs[..., 1] >= goal_velocity)

    return rule, (
        f"terminates when position >= {goal_position:g} and velocity >= {goal_velocity:g} "
        "(read from the environment: goal_position, goal_velocity)"
    )


# gymnasium task name (any version) -> builder of (rule, description).
TASK_RULES: dict[str, Callable[[str], tuple[TerminationFn, str]]] = {
    "Pendulum": _pendulum,
    "MountainCarContinuous": _mountain_car_continuous,
}
# The ids `usbpo envs` lists next to the six families (one per entry above).
OTHER_TASK_IDS = ("Pendulum-v1", "MountainCarContinuous-v0")

LEARNED = (
    "learned from the run's real terminal transitions: a state beyond the range of every "
    "non-terminal one, on a dimension where real episodes terminated (never terminates until "
    "a real episode does)"
)


def _other_task(env_id: str) -> str | None:
    try:
        namespace, name, _ = parse_env_id(env_id)
    except GymError:
        return None
    return name if namespace is None and name in TASK_RULES else None


class LearnedTermination:
    """The termination rule of a task without a known one, learned from real transitions.

    Bound to the agent's real replay buffer (`bind`), it refits whenever the buffer changed:
    with no real terminal transition yet, nothing terminates; otherwise it picks, greedily, the
    fewest clauses "obs[d] < t" / "obs[d] > t" that cover the real terminal next states, where
    each threshold lies halfway between the range of all non-terminal next states and the
    nearest terminal one beyond it (so no real non-terminal state is ever called terminal).
    Being a function of the buffer alone, it resumes exactly from a checkpoint.
    """

    def __init__(self) -> None:
        self.buffer = None
        self._seen = -1
        self.clauses: list[tuple[int, bool, float]] = []  # (dim, upper, threshold)
        self.uncovered = 0  # real terminal states no clause covers (inside the non-terminal range)

    def bind(self, buffer) -> None:
        self.buffer, self._seen = buffer, -1

    def fit(self, next_obs: torch.Tensor, done: torch.Tensor) -> None:
        terminal = done > 0.5
        self.clauses, self.uncovered = [], 0
        if not bool(terminal.any()):
            return
        ends, rest = next_obs[terminal].double(), next_obs[~terminal].double()
        if rest.shape[0] == 0:
            self.uncovered = int(ends.shape[0])
            return
        low, high = rest.min(dim=0).values, rest.max(dim=0).values
        below, above = ends < low, ends > high  # (terminal states, dims): beyond the range
        left = torch.ones(ends.shape[0], dtype=torch.bool)
        while bool(left.any()):
            counts = torch.stack([(below & left[:, None]).sum(0), (above & left[:, None]).sum(0)])
            best = int(counts.argmax())
            side, dim = divmod(best, ends.shape[1])
            if int(counts[side, dim]) == 0:
                break
            hits = (above if side else below)[:, dim] & left
            if side:
                threshold = 0.5 * (float(high[dim]) + float(ends[hits, dim].min()))
            else:
                threshold = 0.5 * (float(low[dim]) + float(ends[hits, dim].max()))
            self.clauses.append((dim, bool(side), threshold))
            left &= ~hits
        self.uncovered = int(left.sum())

    def _refresh(self) -> None:
        buffer = self.buffer
        if buffer is None or buffer.total_added == self._seen:
            return
        size = len(buffer)
        self.fit(buffer.next_obs[:size].cpu(), buffer.done[:size].cpu())
        self._seen = buffer.total_added

    def __call__(
        self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor
    ) -> torch.Tensor:
        self._refresh()
        done = _never(obs, act, next_obs)
        for dim, upper, threshold in self.clauses:
            value = next_obs[..., dim]
            done = done | (value > threshold if upper else value < threshold)
        return done


def bind_learned_rule(agent: object) -> None:
    """Point an agent's learned termination rule (if it has one) at its real replay buffer."""
    rule = getattr(agent, "termination", None)
    if isinstance(rule, LearnedTermination):
        rule.bind(agent.real_buffer)  # type: ignore[attr-defined]
