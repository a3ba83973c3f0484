"""Mutation testing for the maths modules: plant one small bug at a time, run the tests that
should notice, and count the bugs that no test caught.

    python tests/mutation.py                       # every module below, 2 workers
    python tests/mutation.py --modules usbpo,dyna  # some of them
    python tests/mutation.py --list                # the mutants, without running anything

Why our own script and not mutmut or cosmic-ray: the suite needs torch, gymnasium and MuJoCo,
whose import costs seconds, and a mutant must be judged by the few test files that target its
module. Here a parent process imports the heavy libraries once and forks one child per mutant;
the child writes the mutated module into a private copy of the repository (bytecode caching
off, so no stale .pyc can stand in for the mutant), runs the module's tests with pytest in
process, stopping at the first failure, and exits. A mutant is killed when its tests fail,
error, or run past the time limit; it survives when they pass.

The mutations are the bugs the issue names: an arithmetic operator swapped (+ -, * /), a unary
minus or `not` dropped, a comparison moved across its boundary or turned round (< <= > >=,
== !=), `and`/`or` swapped, a number changed (n -> n + 1, x -> 2x, 0.0 -> 1.0), True/False
swapped, min/max-style pairs swapped (min max, amin amax, argmin argmax, clamp_min clamp_max,
all any), and a call statement deleted (a dropped `restore`, `backward`, `copy_`). Docstrings,
type annotations, error messages, argument defaults (callers pass the configured values) and
`dim=`/`axis=` arguments (-1 and 1 coincide on 2-D tensors) are left alone.

Mutants judged equivalent (the program cannot behave differently where it is used) are listed
by hand in `tests/mutation_equivalent.txt`, one per line as `module | mutation | code  # why`
(the code without its comment, as `--list` prints it; `#2` after the mutation names the second
identical mutation of the same code); the score is
killed / (all - equivalent). Results go to `benchmarks/mutation/<module>.json`; the summary
table is printed at the end and kept in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The seed-axis tests that check a module's maths for S seeds at once (by node id: the file's
# vectorised-grid test is slow and is about run folders, not maths).
_SEEDS = "test_seed_axis.py::"
_SEED_UPDATE = [
    _SEEDS + "test_three_seeds_as_one_update_exactly_as_three_lone_optimisers",
    _SEEDS + "test_a_seeds_checkpoint_moves_between_a_group_and_a_lone_run",
    _SEEDS + "test_a_seeds_optimiser_moments_are_shaped_as_its_saved_parameters",
    _SEEDS + "test_an_update_returns_one_number_per_seed_and_loss",
]
_SEED_FIT = _SEEDS + "test_three_seeds_fit_as_three_lone_ensembles"
_SEED_ROLLOUT = (
    _SEEDS + "test_rollouts_of_three_seeds_follow_each_seeds_policy_model_and_termination"
)
_SEED_PHASE2 = _SEEDS + "test_phase2_stops_each_seed_on_its_own_and_keeps_each_seeds_best_snapshot"
_SEED_BUFFERS = _SEEDS + "test_seed_buffers_draw_each_seeds_indices_from_its_own_generator"

# test_resume's runs in this process (its kill-and-resume runs, in subprocesses, are too slow to
# repeat per mutant; they run in the suite)
_RESUME_IN_PROCESS = [
    "test_resume.py::" + name
    for name in (
        "test_resume_from_a_folder_with_config_but_no_checkpoint",
        "test_torn_newest_checkpoint_falls_back_to_the_previous",
        "test_lost_or_torn_last_csv_row_is_restored_from_the_checkpoint",
        "test_keep_checkpoints_1_keeps_one_file",
        "test_resume_with_no_run_there",
        "test_foreign_checkpoint_is_refused_untouched",
        "test_refused_resume_leaves_the_lock_file_as_it_was",
        "test_nan_critic_loss_once_rolls_back_and_completes",
        "test_nan_forever_stops_after_max_rollbacks",
        "test_nan_model_loss_once_triggers_the_model_check",
        "test_one_seeds_divergence_gives_it_a_fresh_stream_and_replays_the_others_exactly",
        "test_a_rollback_tells_of_the_checkpoint_it_had_to_skip",
    )
]

# module name -> (source file, test files (or node ids) that must notice a bug in it)
MODULES: dict[str, tuple[str, list[str]]] = {
    "wasserstein": ("usbpo_cli/models/wasserstein.py", ["test_wasserstein.py", "test_phase2.py"]),
    "usbpo": (
        "usbpo_cli/agents/usbpo.py",
        ["test_phase2.py", "test_agent_state.py", "test_published_defaults.py", _SEED_PHASE2],
    ),
    "dyna": (
        "usbpo_cli/agents/dyna.py",
        [
            "test_dyna.py",
            "test_dyna_loop.py",
            "test_phase2.py",
            "test_agent_state.py",
            "test_published_defaults.py",
            _SEED_ROLLOUT,
            _SEED_PHASE2,
            _SEED_FIT,
        ],
    ),
    "ensemble": (
        "usbpo_cli/models/ensemble.py",
        [
            "test_ensemble.py",
            "test_pdml.py",
            _SEED_FIT,
            _SEEDS + "test_two_seeds_minibatch_loss_and_gradients_as_two_lone_ensembles",
            _SEEDS + "test_a_seed_that_has_stopped_leaves_phase_1s_minibatches",
            _SEED_ROLLOUT,
            _SEED_PHASE2,
        ],
    ),
    "sac": (
        "usbpo_cli/agents/sac.py",
        [
            "test_sac.py",
            "test_sac_mutants.py",
            "test_hand_gradients.py",
            "test_agent_state.py",
            *_SEED_UPDATE,
        ],
    ),
    "td3": (
        "usbpo_cli/agents/td3.py",
        ["test_td3_actor.py", "test_td3.py", "test_published_defaults.py", *_SEED_UPDATE],
    ),
    "termination": (
        "usbpo_cli/envs/termination.py",
        ["test_termination_clauses.py", "test_envs.py", "test_cli_trust.py"],
    ),
    "distributions": ("usbpo_cli/models/distributions.py", ["test_distributions.py"]),
    "buffers": (
        "usbpo_cli/agents/buffers.py",
        ["test_buffers.py", "test_buffer_wrap.py", _SEED_BUFFERS],
    ),
    "cmlo": (
        "baselines/cmlo.py",
        [
            "test_cmlo_agent.py",
            "test_cmlo_mutants.py",
            "test_cmlo.py",
            "test_published_defaults.py",
        ],
    ),
    "pdml": (
        "baselines/pdml.py",
        [
            "test_pdml_agent.py",
            "test_pdml_mutants.py",
            "test_pdml.py",
            "test_agent_state.py",
            "test_published_defaults.py",
        ],
    ),
    "alm": (
        "baselines/alm.py",
        [
            "test_published_defaults.py",
            "test_alm_objectives.py",
            "test_alm_networks.py",
            "test_alm.py",
            "test_precision.py",
        ],
    ),
    # The shared layers under every agent: the batched networks and the hand-written backward,
    # Adam's direct step, one seed's slice of S seeds' state, and the private-kernel fallbacks.
    "nets": (
        "usbpo_cli/models/nets.py",
        [
            "test_nets.py",
            "test_hand_gradients.py",
            "test_sac.py",
            "test_sac_mutants.py",
            "test_td3_actor.py",
            "test_ensemble.py",
            "test_agent_state.py",
            *_SEED_UPDATE,
            _SEED_FIT,
        ],
    ),
    "optim": (
        "usbpo_cli/models/optim.py",
        ["test_torch_private.py", "test_hand_gradients.py", "test_sac.py", *_SEED_UPDATE],
    ),
    "seed_axis": (
        "usbpo_cli/models/seed_axis.py",
        ["test_seed_state.py", "test_agent_state.py", *_SEED_UPDATE, _SEED_PHASE2, _SEED_FIT],
    ),
    "torch_private": (
        "usbpo_cli/util/torch_private.py",
        ["test_torch_private.py", "test_hand_gradients.py", "test_sac.py"],
    ),
    # The loop every off-policy agent runs: act, step, store, learn, evaluate.
    "offpolicy": (
        "usbpo_cli/agents/offpolicy.py",
        [
            "test_offpolicy_loop.py",
            "test_config.py",
            "test_published_defaults.py",
            "test_agent_state.py",
            "test_dyna_loop.py",
            "test_td3.py",
            "test_precision.py::test_a_bf16_run_says_so_and_does_not_resume_as_fp32",
            *_SEED_UPDATE,
            _SEED_ROLLOUT,
        ],
    ),
    # The run layer: what a run folder may hold, its CSV and its checkpoints (the in-process
    # CLI tests; test_resume.py's kill-and-resume runs are too slow to repeat per mutant).
    "folders": (
        "usbpo_cli/runs/folders.py",
        ["test_run_folders.py", "test_grid_trust.py", "test_cli_trust.py"],
    ),
    "csvlog": (
        "usbpo_cli/runs/csvlog.py",
        ["test_csvlog.py", "test_aggregate.py", "test_grid_trust.py", "test_cli_trust.py"],
    ),
    "checkpoint": (
        "usbpo_cli/runs/checkpoint.py",
        ["test_checkpoint_files.py", "test_cli_trust.py", "test_grid_trust.py"],
    ),
    # One run from its spec to its last row: validation, config.json, resume, rollback.
    "runner": (
        "usbpo_cli/runs/runner.py",
        [
            "test_runner.py",
            "test_run_folders.py",
            "test_cli_trust.py",
            "test_grid_trust.py",
            *_RESUME_IN_PROCESS,
            "test_env_state.py",
            "test_hostile.py",
            # the checks resolve_run makes before anything is written, tested with the flags
            "test_precision.py::test_cli_refuses_bf16_on_a_cpu_without_it_before_writing_anything",
            "test_allocator.py::test_a_bad_choice_is_refused_before_a_run_writes_anything",
            "test_compile.py::test_cli_refuses_compile_where_it_cannot_build_before_writing_anything",
        ],
    ),
    # Which runs a grid holds and what each is labelled (compare and ablate).
    "grids": (
        "usbpo_cli/experiments/grids.py",
        ["test_grid_plan.py", "test_grid_trust.py", "test_cli_trust.py"],
    ),
    # What `compare` and `summary` report: the CSVs read back and the statistics across seeds.
    "aggregate": (
        "usbpo_cli/experiments/aggregate.py",
        ["test_aggregate.py", "test_grid_trust.py", "test_plot_trust.py", "test_plots.py"],
    ),
    # How a run's settings are resolved and recorded: the paper's per-task tables, the presets,
    # `--set` parsing and the deviations written to config.json (a run must not be labelled
    # with a setting it did not use).
    "config": (
        "usbpo_cli/runs/config.py",
        ["test_config.py", "test_published_defaults.py", "test_cli_trust.py", "test_cmlo.py"],
    ),
    "settings": (
        "usbpo_cli/util/settings.py",
        ["test_config.py", "test_published_defaults.py", "test_cli_trust.py", "test_hostile.py"],
    ),
    # What every agent shares: the evaluation protocol, the rows, the order in which a row is
    # checked, checkpointed and written; and the environment state a checkpoint carries.
    "base": (
        "usbpo_cli/agents/base.py",
        [
            "test_agent_base.py",
            "test_offpolicy_loop.py",
            "test_agent_state.py",
            "test_config.py",
            "test_published_defaults.py",
            "test_precision.py",
        ],
    ),
    "env_state": ("usbpo_cli/envs/state.py", ["test_env_state.py", "test_agent_base.py"]),
    # How a task is built and checked: ids, spaces, MBPO's truncated observations, seeding.
    "tasks": (
        "usbpo_cli/envs/tasks.py",
        ["test_tasks.py", "test_envs.py", "test_hostile.py", "test_env_state.py"],
    ),
    # Where products may run in bf16, and the refusal on a CPU that would only emulate it.
    "precision": ("usbpo_cli/util/precision.py", ["test_precision.py"]),
    # What `plot` draws: each figure's data read from the CSVs, and the refusal of a figure that
    # lacks its runs (a figure must not draw what its runs do not hold).
    # (The user's three commands as typed train and compare in subprocesses first: 20 s per
    # mutant for what test_plot_cli_says_which_grid_and_writes_there checks in process.)
    "plots": (
        "usbpo_cli/experiments/plots.py",
        [
            "test_plot_trust.py",
            "test_plots.py",
            "--deselect=tests/test_plot_trust.py::test_the_users_three_commands_as_typed",
        ],
    ),
    # What `compare` and `ablate` show while a grid runs, and where its runs execute (the grid
    # tests that train in spawned workers or Ray take minutes; the local tiny grid stands in).
    "gridview": ("usbpo_cli/experiments/gridview.py", ["test_cli_trust.py"]),
    "executors": (
        "usbpo_cli/experiments/executors.py",
        [
            "test_executors.py",
            "test_cli_trust.py",
            "test_experiments.py::test_workers_and_threads_are_sized_for_the_cores_the_process_may_use",
            "test_experiments.py::test_bad_grid_input_is_one_line_and_creates_nothing",
            "test_experiments.py::test_compare_runs_a_tiny_grid[local]",
        ],
    ),
    # The cost model, a running run's ETA, its status file and a grid's ETA.
    "status": ("usbpo_cli/runs/status.py", ["test_cost_model.py", "test_cli_trust.py"]),
    # The small pieces around a run: its lock, the machine's timing, malloc, the compile
    # check, the algorithm registry and the model-free agent.
    "lock": ("usbpo_cli/runs/lock.py", ["test_lock.py", "test_runner.py"]),
    "calibration": (
        "usbpo_cli/runs/calibration.py",
        [
            "test_cost_model.py::test_calibration_times_the_reference_update_on_hoppers_shapes",
            "test_cli_trust.py::test_calibration_is_the_median_update_over_the_reference_and_leaves_the_run_alone",
        ],
    ),
    "allocator": ("usbpo_cli/util/allocator.py", ["test_allocator.py", "test_agent_base.py"]),
    "compiler": ("usbpo_cli/util/compiler.py", ["test_compile.py"]),
    "registry": ("usbpo_cli/agents/registry.py", ["test_registry.py"]),
    "model_free": (
        "baselines/model_free.py",
        ["test_published_defaults.py", "test_td3.py", "test_offpolicy_loop.py"],
    ),
    # The commands: options, refusals, what each prints and writes (the CLI test files).
    "app": (
        "usbpo_cli/app.py",
        ["test_hostile.py", "test_grid_trust.py", "test_cli_trust.py", "test_cli.py"],
    ),
    "ppo": (
        "baselines/ppo.py",
        [
            "test_published_defaults.py",
            "test_ppo_advantages.py",
            "test_ppo_update.py",
            "test_ppo.py",
        ],
    ),
}

SWAP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
SWAP_COMPARE = {
    ast.Lt: (ast.LtE, ast.Gt),
    ast.LtE: (ast.Lt, ast.GtE),
    ast.Gt: (ast.GtE, ast.Lt),
    ast.GtE: (ast.Gt, ast.LtE),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
}
SWAP_NAMES = {
    "min": "max",
    "max": "min",
    "amin": "amax",
    "amax": "amin",
    "argmin": "argmax",
    "argmax": "argmin",
    "clamp_min": "clamp_max",
    "clamp_max": "clamp_min",
    "minimum": "maximum",
    "maximum": "minimum",
    "all": "any",
    "any": "all",
}
OP_TEXT = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
}


@dataclass
class Mutant:
    module: str
    index: int  # position among the module's mutants, stable for a given source
    line: int
    mutation: str  # e.g. "< -> <=", "delete call", "1e-4 -> 0.0002"
    source_line: str
    occurrence: int = 0  # earlier mutants with the same mutation on the same code
    status: str = "pending"  # killed, survived, timeout, equivalent
    seconds: float = 0.0
    killed_by: str = ""  # the first test that failed

    @property
    def key(self) -> str:
        """Names the mutant by its code rather than its line number, so the list of
        equivalent mutants survives edits elsewhere in the module."""
        code = self.source_line.split("  #")[0].strip()
        again = f" #{self.occurrence + 1}" if self.occurrence else ""
        return f"{self.module} | {self.mutation}{again} | {code}"


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes never mutated: docstrings, annotations, strings and their contents."""
    skip: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                mark(body[0])
        if isinstance(node, (ast.arg, ast.AnnAssign)):
            mark(node.annotation)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
        if isinstance(node, ast.JoinedStr):
            mark(node)
        if isinstance(node, ast.Raise):
            mark(node.exc)  # error messages and their formatting
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mark(node)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register":
            mark(node)  # registry entries: names and help texts
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for default in node.args.defaults + node.args.kw_defaults:
                mark(default)  # argument defaults: the callers pass the configured values
        if isinstance(node, ast.keyword) and node.arg in ("dim", "axis"):
            mark(node.value)  # dim=-1 vs dim=1 on 2-D tensors: mostly equivalent noise
    return skip


def _sites(tree: ast.AST) -> list[tuple[ast.AST, str, object]]:
    """Every (node, description, replacement spec) the operators above can mutate."""
    skip = _skipped_nodes(tree)
    sites: list[tuple[ast.AST, str, object]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in SWAP_BINOP:
            new = SWAP_BINOP[type(node.op)]
            sites.append((node, f"{OP_TEXT[type(node.op)]} -> {OP_TEXT[new]}", new))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
            sites.append(
                (node, "drop unary " + ("-" if isinstance(node.op, ast.USub) else "not"), None)
            )
        elif isinstance(node, ast.Compare):
            for position, op in enumerate(node.ops):
                for new in SWAP_COMPARE.get(type(op), ()):
                    text = f"{OP_TEXT[type(op)]} -> {OP_TEXT[new]}"
                    sites.append(
                        (node, text + (f" (#{position})" if position else ""), (position, new))
                    )
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And
            sites.append((node, "and -> or" if new is ast.Or else "or -> and", new))
        elif isinstance(node, ast.Constant) and not isinstance(node.value, str):
            value = node.value
            if isinstance(value, bool):
                sites.append((node, f"{value} -> {not value}", not value))
            elif isinstance(value, int):
                sites.append((node, f"{value} -> {value + 1}", value + 1))
            elif isinstance(value, float):
                new_value = 1.0 if value == 0.0 else value * 2
                sites.append((node, f"{value!r} -> {new_value!r}", new_value))
        elif isinstance(node, ast.Attribute) and node.attr in SWAP_NAMES:
            sites.append((node, f".{node.attr} -> .{SWAP_NAMES[node.attr]}", SWAP_NAMES[node.attr]))
        elif isinstance(node, ast.Name) and node.id in ("min", "max"):
            sites.append((node, f"{node.id} -> {SWAP_NAMES[node.id]}", SWAP_NAMES[node.id]))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            sites.append((node, "delete call", None))
    return sites


def _apply(node: ast.AST, spec: object) -> None:
    """Mutate `node` in place (on a copy of the tree) as its site says."""
    if isinstance(node, (ast.BinOp, ast.AugAssign, ast.BoolOp)):
        node.op = spec()  # type: ignore[operator]
    elif isinstance(node, ast.Compare):
        position, new = spec  # type: ignore[misc]
        node.ops[position] = new()
    elif isinstance(node, ast.Constant):
        node.value = spec
    elif isinstance(node, ast.Attribute):
        node.attr = spec  # type: ignore[assignment]
    elif isinstance(node, ast.Name):
        node.id = spec  # type: ignore[assignment]


class _Replace(ast.NodeTransformer):
    """Replaces one node: a unary op by its operand, a call statement by `pass`."""

    def __init__(self, target: ast.AST) -> None:
        self.target = target

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        return node.operand if node is self.target else node

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        self.generic_visit(node)
        return ast.Pass() if node is self.target else node


def mutants_of(module: str) -> tuple[list[Mutant], list[str]]:
    """The module's mutants and, aligned, each mutant's full source."""
    path = ROOT / MODULES[module][0]
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    count = len(_sites(tree))
    mutants, sources = [], []
    for index in range(count):
        mutated = copy.deepcopy(tree)
        node, description, spec = _sites(mutated)[index]
        if isinstance(node, (ast.UnaryOp, ast.Expr)):
            mutated = _Replace(node).visit(mutated)
        else:
            _apply(node, spec)
        ast.fix_missing_locations(mutated)
        line = getattr(node, "lineno", 0)
        source = lines[line - 1].strip() if line else ""
        seen = sum(1 for m in mutants if (m.mutation, m.source_line) == (description, source))
        mutants.append(Mutant(module, index, line, description, source, seen))
        sources.append(ast.unparse(mutated))
    return mutants, sources


def _identity(mutant: dict) -> tuple[str, str, int]:
    """A recorded mutant's identity across edits elsewhere in its module: the mutation, the
    code it mutates and which identical mutation of that code it is (not its index or line,
    which shift when a line above is added or removed)."""
    return mutant["mutation"], mutant["source_line"].strip(), mutant.get("occurrence", 0)


def recorded_verdicts(path: Path) -> dict[tuple[str, str, int], dict]:
    """A saved (or partial) run's mutants, by identity."""
    return {_identity(m): m for m in json.loads(path.read_text())["mutants_detail"]}


def carry_verdicts(
    mutants: list[Mutant],
    recorded: dict[tuple[str, str, int], dict],
    statuses: tuple[str, ...],
    selected: Callable[[Mutant], bool] = lambda mutant: True,
) -> None:
    """Give each selected mutant the verdict recorded for it when that verdict is one of
    `statuses`, so that a rerun judges only the mutants it must (every other stays pending)."""
    for m in mutants:
        old = recorded.get(_identity(asdict(m)))
        if selected(m) and old is not None and old["status"] in statuses:
            m.status, m.seconds = old["status"], old["seconds"]
            m.killed_by = old.get("killed_by", "")


def load_equivalent() -> dict[str, str]:
    """`module | mutation | code` -> the reason the mutant cannot change behaviour."""
    path = ROOT / "tests" / "mutation_equivalent.txt"
    reasons = {}
    if path.exists():
        for raw in path.read_text().splitlines():
            if raw.strip() and not raw.startswith("#"):
                key, _, why = raw.partition("  #")
                reasons[key.strip()] = why.strip()
    return reasons


def make_copy(destination: Path) -> None:
    """A private copy of the code and tests, without bytecode or git data. (Only the package,
    baselines, tests and the files the tests read are copied, so no run-output folder can come
    along; a pattern such as "runs" must not be ignored here, it would drop the package's own
    usbpo_cli/runs/.)"""
    if destination.exists():
        shutil.rmtree(destination)
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc")
    destination.mkdir(parents=True)
    for name in ("usbpo_cli", "baselines", "tests", "pyproject.toml", "Makefile", "README.md"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        else:
            shutil.copy2(source, destination / name)


class _KillersFirst:
    """pytest plugin for a mutant's child: runs the tests that killed earlier mutants first
    (most recent first), and writes the id of the first test that fails to `record`.

    A mutant is usually killed by the test that killed its neighbours in the source, so with
    `-x` most killed mutants stop after one test instead of after every test collected before
    it. The order changes which test kills a mutant, never whether it is killed: a mutant that
    survives has run every test either way."""

    def __init__(self, killers: list[str], record: Path) -> None:
        self.rank = {nodeid: k for k, nodeid in enumerate(killers)}
        self.record = record

    def pytest_collection_modifyitems(self, items: list) -> None:
        last = len(self.rank)
        items.sort(key=lambda item: self.rank.get(item.nodeid, last))  # stable: file order

    def pytest_runtest_logreport(self, report) -> None:  # noqa: ANN001 (pytest's TestReport)
        if report.failed and not self.record.exists():
            self.record.write_text(report.nodeid)


def run_child(
    copy_root: Path, relative: str, source: str, tests: list[str], killers: list[str] = ()
) -> None:
    """In the forked child: write the mutant, run the tests (earlier killers first), exit with
    pytest's code; the first failing test's id is left in `copy_root/.killer`."""
    import pytest
    import torch

    torch.set_num_threads(1)
    sys.dont_write_bytecode = True
    # Tests that run `usbpo` in a subprocess must import the mutant too, not the installed
    # package: the copy goes first on the subprocesses' path.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(copy_root), str(copy_root / "tests")])
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    os.chdir(copy_root)
    sys.path[:0] = [str(copy_root), str(copy_root / "tests")]
    (copy_root / relative).write_text(source)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    args = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    plugin = _KillersFirst(list(killers), copy_root / ".killer")
    # an entry starting with "-" is a pytest option (`--deselect=tests/...::slow_test`)
    paths = [t if t.startswith("-") else f"tests/{t}" for t in tests]
    code = pytest.main(args + paths, plugins=[plugin])
    os._exit(int(code))


def judge(
    mutants: list[Mutant],
    sources: list[str],
    tests: list[str],
    jobs: int,
    timeout: float,
    on_judged: Callable[[], None] = lambda: None,
) -> None:
    """Run every pending mutant in forked children, `jobs` at a time, each in its own copy;
    `on_judged` after each verdict (the caller saves progress: a long run cut short keeps
    what it judged)."""
    relative = MODULES[mutants[0].module][0]
    workdir = Path(os.environ.get("MUTATION_WORKDIR", "/tmp/usbpo-mutation"))
    copies = [workdir / f"worker{k}" for k in range(jobs)]
    for path in copies:
        make_copy(path)
    # Tests that read the published curves find them beside the checkout (../shared), as here.
    shared, beside = ROOT.parent / "shared", workdir / "shared"
    if shared.is_dir() and not beside.exists():
        beside.symlink_to(shared)
    original = (ROOT / relative).read_text()
    # The tests must pass on an unmutated copy first: otherwise every mutant would count as
    # killed (a broken copy, a failing test) and the score would mean nothing.
    pid = os.fork()
    if pid == 0:  # child
        try:
            run_child(copies[0], relative, original, tests)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{mutants[0].module}: the tests fail on the unmutated code; fix that first")
    queue = [m for m in mutants if m.status == "pending"]
    running: dict[int, tuple[Mutant, Path, float]] = {}
    free = list(copies)
    killers: list[str] = []  # tests that killed mutants, the most recent first
    while queue or running:
        while queue and free:
            mutant, where = queue.pop(0), free.pop()
            (where / ".killer").unlink(missing_ok=True)
            pid = os.fork()
            if pid == 0:  # child
                try:
                    run_child(where, relative, sources[mutant.index], tests, killers)
                finally:
                    os._exit(3)
            running[pid] = (mutant, where, time.time())
        time.sleep(0.05)
        for pid, (mutant, where, start) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            elapsed = time.time() - start
            if done == 0 and elapsed < timeout:
                continue
            if done == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                mutant.status = "timeout"
            else:
                code = os.waitstatus_to_exitcode(status)
                mutant.status = "survived" if code == 0 else "killed"
                killer = where / ".killer"
                if killer.exists():
                    nodeid = mutant.killed_by = killer.read_text()
                    killers[:] = [nodeid] + [k for k in killers if k != nodeid][:19]
            mutant.seconds = round(elapsed, 1)
            (where / relative).write_text(original)
            del running[pid]
            free.append(where)
            mark = {"killed": ".", "timeout": "T", "survived": "S"}[mutant.status]
            print(mark, end="", flush=True)
            on_judged()
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", default=",".join(MODULES), help="comma-separated names")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--tests", help="comma-separated test files instead of the module's own")
    parser.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="judge again only the mutants that survived the last run (after adding tests); "
        "the others keep their recorded status",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=0,
        help="run only every k-th mutant so that about this many run per module (0: all)",
    )
    parser.add_argument(
        "--lines",
        help="FROM-TO[,FROM-TO]: judge only the mutants on these lines (whole functions that "
        "changed); the others keep their verdict from the last run's <module>.json where their "
        "code is unchanged, and are judged where it has none (one module)",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "mutation"))
    args = parser.parse_args()
    names = [n.strip() for n in args.modules.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)} (choose: {', '.join(MODULES)})")
    spans: list[tuple[int, int]] = []
    if args.lines:
        if len(names) != 1:
            parser.error("--lines needs exactly one module in --modules")
        try:
            spans = [
                (int(a), int(b)) for a, b in (span.split("-") for span in args.lines.split(","))
            ]
        except ValueError:
            parser.error(f"--lines {args.lines!r}: expected FROM-TO[,FROM-TO], e.g. 240-480")
    equivalent = load_equivalent()
    if not args.list:
        # Heavy imports once, in the parent, before forking; nothing of the package itself.
        import gymnasium  # noqa: F401
        import numpy  # noqa: F401
        import pandas  # noqa: F401
        import pytest  # noqa: F401
        import scipy.spatial  # noqa: F401
        import torch  # noqa: F401
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        mutants, sources = mutants_of(name)
        if args.sample and len(mutants) > args.sample:
            stride = len(mutants) / args.sample  # evenly spread, the same picks every time
            picked = {int(k * stride) for k in range(args.sample)}
            mutants = [m for m in mutants if m.index in picked]
        previous = out / f"{name}.json"
        if args.rerun_survivors and previous.exists():
            recorded = recorded_verdicts(previous)
            mutants = [m for m in mutants if _identity(asdict(m)) in recorded]
            carry_verdicts(mutants, recorded, ("killed", "timeout"))
        if spans and previous.exists():  # outside the spans: the last run's verdicts stand
            carry_verdicts(
                mutants,
                recorded_verdicts(previous),
                ("killed", "timeout"),
                lambda m: not any(a <= m.line <= b for a, b in spans),
            )
        partial = out / f"{name}.partial.json"
        if partial.exists():  # a run cut short: keep its verdicts, judge only the rest
            carry_verdicts(mutants, recorded_verdicts(partial), ("killed", "timeout", "survived"))
            print(f"{name}: {sum(m.status != 'pending' for m in mutants)} verdicts from {partial}")
        for mutant in mutants:
            if mutant.key in equivalent:
                mutant.status = "equivalent"
        if not args.sample:  # an entry that names no mutant is stale: its code has changed
            keys = {m.key for m in mutants}
            for key in equivalent:
                if key.startswith(f"{name} | ") and key not in keys:
                    print(f"{name}: stale entry in mutation_equivalent.txt: {key}", flush=True)
        if args.list:
            for m in mutants:
                print(f"{m.line:4d} {m.status:10s} {m.key}")
            continue
        tests = args.tests.split(",") if args.tests else MODULES[name][1]
        missing = [
            t
            for t in tests
            if not t.startswith("-") and not (ROOT / "tests" / t.split("::")[0]).exists()
        ]
        if missing:
            sys.exit(f"{name}: test file(s) missing: {', '.join(missing)}")
        start = time.time()
        print(f"{name}: {len(mutants)} mutants, tests {' '.join(tests)}", flush=True)

        def save_progress(mutants: list[Mutant] = mutants, partial: Path = partial) -> None:
            detail = [asdict(m) for m in mutants]
            module = mutants[0].module if mutants else ""
            partial.write_text(json.dumps({"module": module, "mutants_detail": detail}, indent=1))

        judge(mutants, sources, tests, args.jobs, args.timeout, save_progress)
        counts = {s: sum(m.status == s for m in mutants) for s in ("killed", "timeout")}
        survived = [m for m in mutants if m.status == "survived"]
        eq = sum(m.status == "equivalent" for m in mutants)
        judged = len(mutants) - eq
        score = (counts["killed"] + counts["timeout"]) / judged if judged else 1.0
        row = {
            "module": name,
            "mutants": len(mutants),
            "sampled": bool(args.sample),
            "equivalent": eq,
            "killed": counts["killed"] + counts["timeout"],
            "survived": len(survived),
            "score": round(score, 4),
            "seconds": round(time.time() - start),
        }
        rows.append(row)
        (out / f"{name}.json").write_text(
            json.dumps({**row, "mutants_detail": [asdict(m) for m in mutants]}, indent=1)
        )
        partial.unlink(missing_ok=True)
        for m in survived:
            print(f"  survived (line {m.line}) {m.key}")
        print(f"{name}: score {score:.1%} ({row['killed']}/{judged}), {row['seconds']} s")
    if rows:
        print("\n| module | mutants | equivalent | killed | survived | score |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['module']} | {r['mutants']} | {r['equivalent']} | {r['killed']} | "
                f"{r['survived']} | {r['score']:.1%} |"
            )


if __name__ == "__main__":
    main()
