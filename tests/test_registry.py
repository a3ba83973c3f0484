"""The algorithm registry (`agents/registry.py`): what pyproject.toml declares is what the
runner finds, in name order; a package of one's own adds an algorithm the same way; and an
entry point that is not what its name says, or none at all, is refused."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from usbpo_cli.agents import registry
from usbpo_cli.agents.registry import Algorithm
from usbpo_cli.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_registry():
    """load_algorithms reads the entry points once per process: read them again here, and
    leave the real ones cached after."""
    registry.load_algorithms.cache_clear()
    yield
    registry.load_algorithms.cache_clear()


def test_the_declared_algorithms_are_the_ones_found(fresh_registry: None) -> None:
    # read from pyproject.toml's own text (tomllib is 3.11+; the package supports 3.10)
    section = (
        (ROOT / "pyproject.toml")
        .read_text()
        .split(f'[project.entry-points."{registry.ENTRY_POINT_GROUP}"]\n')[1]
    )
    declared = dict(re.findall(r'^(\w+) = "([\w.:]+)"$', section.split("\n\n")[0], re.M))
    assert len(declared) == 8, declared
    found = registry.load_algorithms()
    assert list(found) == sorted(declared)  # name order, whatever order they are declared in
    for name, target in declared.items():
        module, attribute = target.split(":")
        assert found[name] is getattr(importlib.import_module(module), attribute)
        assert registry.get_algorithm(name) is found[name] and found[name].name == name
    assert registry.get_algorithm("td3").config_cls.__name__ == "TD3Config"


def test_an_unknown_algo_is_refused_with_the_choices() -> None:
    names = ", ".join(registry.load_algorithms())
    with pytest.raises(UsageError) as refused:
        registry.get_algorithm("dreamer")
    assert str(refused.value) == f"unknown algo 'dreamer' (choose: {names})"


class Entry:
    """An entry point as importlib.metadata gives it: a name, a value, and what it loads."""

    def __init__(self, name: str, loads: object) -> None:
        self.name, self.value, self.loads = name, f"theirs.module:{name.upper()}", loads

    def load(self) -> object:
        return self.loads


def algorithm(name: str) -> Algorithm:
    return Algorithm(name, object, object, f"{name}: someone's own")


def installed(monkeypatch: pytest.MonkeyPatch, entries: list[Entry]) -> None:
    def entry_points(group: str) -> list[Entry]:
        assert group == "usbpo.algorithms"
        return entries

    monkeypatch.setattr(registry.metadata, "entry_points", entry_points)


def test_a_package_of_ones_own_adds_an_algorithm(
    monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    zeta, alpha = algorithm("zeta"), algorithm("alpha")
    installed(monkeypatch, [Entry("zeta", zeta), Entry("alpha", alpha)])
    assert registry.load_algorithms() == {"alpha": alpha, "zeta": zeta}
    assert list(registry.load_algorithms()) == ["alpha", "zeta"]
    assert registry.get_algorithm("zeta") is zeta


@pytest.mark.parametrize(
    "entry",
    [
        Entry("mine", algorithm("yours")),  # named one thing, registers another
        Entry("mine", object()),  # not an Algorithm at all
        Entry("mine", "mine"),
    ],
)
def test_an_entry_point_that_is_not_its_algorithm_is_refused(
    monkeypatch: pytest.MonkeyPatch, fresh_registry: None, entry: Entry
) -> None:
    installed(monkeypatch, [Entry("alpha", algorithm("alpha")), entry])
    with pytest.raises(TypeError) as refused:
        registry.load_algorithms()
    assert str(refused.value) == (
        "entry point mine = theirs.module:MINE is not Algorithm('mine', ...)"
    )


def test_no_algorithm_installed_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    installed(monkeypatch, [])
    with pytest.raises(UsageError, match="no algorithms are installed .*pip install -e \\."):
        registry.load_algorithms()


def test_an_algorithm_cannot_be_changed_once_registered() -> None:
    """The registry is read once per process and shared by every run in it (a grid's runs,
    the tests): an entry one caller could edit would change the next caller's algorithm."""
    import dataclasses

    sac = registry.get_algorithm("sac")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sac.config_cls = object  # type: ignore[misc]
    assert registry.get_algorithm("sac").config_cls.__name__ == "SACConfig"
