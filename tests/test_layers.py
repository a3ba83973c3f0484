"""The package's layers, as the README's "How the code is laid out" draws them: a module may
import only from its own layer or the ones below, and no import cycle may form between modules.
Read from the source (every import statement, including those inside functions), so the test
fails the moment an upward import or a cycle is written."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# layer -> the layers it may import (its own included); lowest first.
ALLOWED: dict[str, set[str]] = {
    "errors": {"errors"},
    "util": {"errors", "util"},
    "models": {"errors", "util", "models"},
    "envs": {"errors", "util", "envs"},
    "agents": {"errors", "util", "models", "envs", "agents"},
    "runs": {"errors", "util", "models", "envs", "agents", "runs"},
    "experiments": {"errors", "util", "models", "envs", "agents", "runs", "experiments"},
    "app": {"errors", "util", "models", "envs", "agents", "runs", "experiments", "app"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """usbpo_cli.<layer>.x -> layer; the baselines are algorithms, i.e. the agents layer."""
    parts = module.split(".")
    if parts[0] == "baselines":
        return "agents"
    if parts[0] != "usbpo_cli" or len(parts) == 1:
        return None
    return parts[1]


def package_modules() -> dict[str, Path]:
    files = [*ROOT.glob("usbpo_cli/**/*.py"), *ROOT.glob("baselines/**/*.py")]
    return {module_name(path): path for path in files}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `path` imports (a `from pkg import name` that names a module counts
    as importing that module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def test_every_module_has_a_layer() -> None:
    modules = package_modules()
    unknown = {m for m in modules if m not in ("usbpo_cli",) and layer_of(m) not in ALLOWED}
    assert not unknown, f"modules outside the known layers: {sorted(unknown)}"


def test_no_module_imports_an_upper_layer() -> None:
    modules = package_modules()
    upward = []
    for module, path in modules.items():
        own = layer_of(module)
        if own is None:
            continue
        for target in imports_of(path, modules):
            other = layer_of(target)
            if other is not None and other not in ALLOWED[own]:
                upward.append(f"{module} ({own}) imports {target} ({other})")
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a list of modules, or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    modules = package_modules()
    graph = {module: imports_of(path, modules) - {module} for module, path in modules.items()}
    # a package's own __init__ importing its modules is not a cycle of theirs
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(
    ("graph", "cyclic"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"a2"}, "a2": set(), "b": {"b"}}, True),
    ],
)
def test_cycle_finder_on_small_graphs(graph: dict[str, set[str]], cyclic: bool) -> None:
    assert (find_cycle(graph) is not None) == cyclic


def test_layer_rules_catch_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an agents module importing the runs layer is reported."""
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from usbpo_cli.runs.runner import RunSpec\n")
    modules = {"usbpo_cli.runs.runner": Path("runner.py")}
    targets = imports_of(source, modules)
    assert targets == {"usbpo_cli.runs.runner"}
    assert layer_of("usbpo_cli.runs.runner") not in ALLOWED["agents"]
