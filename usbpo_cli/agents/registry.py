"""Algorithm registry: the CLI fills it (core modules never import `baselines/`)."""

from __future__ import annotations

from dataclasses import dataclass

from usbpo_cli.errors import UsageError


@dataclass(frozen=True)
class Algorithm:
    name: str
    agent_cls: type
    config_cls: type
    description: str
    model_based: bool


ALGORITHMS: dict[str, Algorithm] = {}


def register(
    name: str, agent_cls: type, config_cls: type, description: str, model_based: bool
) -> None:
    ALGORITHMS[name] = Algorithm(name, agent_cls, config_cls, description, model_based)


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise UsageError(f"unknown algo {name!r} (choose: {', '.join(sorted(ALGORITHMS))})")
    return ALGORITHMS[name]
