"""The algorithm registry, in the core: every algorithm is an `Algorithm` value beside its agent,
published as an entry point of the group `usbpo.algorithms` (see pyproject.toml), so the
registry is filled by `load_algorithms()` without the CLI, and a package of one's own can add
an algorithm by declaring an entry point in that group.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import metadata

from usbpo_cli.errors import UsageError

ENTRY_POINT_GROUP = "usbpo.algorithms"


@dataclass(frozen=True)
class Algorithm:
    """An algorithm as the runner needs it: its agent class and its config dataclass."""

    name: str
    agent_cls: type
    config_cls: type
    description: str


@cache
def load_algorithms() -> dict[str, Algorithm]:
    """Every installed algorithm, by name (entry points are read and imported once)."""
    found: dict[str, Algorithm] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        algorithm = entry.load()
        if not isinstance(algorithm, Algorithm) or algorithm.name != entry.name:
            raise TypeError(
                f"entry point {entry.name} = {entry.value} is not Algorithm({entry.name!r}, ...)"
            )
        found[entry.name] = algorithm
    if not found:
        raise UsageError(
            f"no algorithms are installed (entry points {ENTRY_POINT_GROUP!r}): "
            "install the package with `pip install -e .`"
        )
    return dict(sorted(found.items()))


def get_algorithm(name: str) -> Algorithm:
    algorithms = load_algorithms()
    if name not in algorithms:
        raise UsageError(f"unknown algo {name!r} (choose: {', '.join(algorithms)})")
    return algorithms[name]
