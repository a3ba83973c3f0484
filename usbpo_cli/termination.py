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
        return _never, NEVER_KNOWN
    return _RULES[family]
