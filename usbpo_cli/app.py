"""The `usbpo` command line. It only parses and dispatches; the work lives in the core modules."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from usbpo_cli.errors import UsageError

try:  # typer >= 0.22 carries its own copy of click, and its Abort lives in typer.exceptions
    from typer import _click as click
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover - older typer uses click itself
    import click  # type: ignore[no-redef]
    from click.exceptions import Abort  # type: ignore[no-redef]


class OneLineErrors(TyperGroup):
    """typer's usage errors (unknown option, missing or bad value) as one `error:` line on
    stderr with exit code 2, like every other input error, instead of a boxed panel."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as error:
            if type(error).__name__ != "NoArgsIsHelpError":  # bare `usbpo`: help was printed
                _usage_error_line(error)
            sys.exit(error.exit_code)
        except Abort:
            err_console.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error_line(error: Any) -> None:
    message = " ".join(error.format_message().split())
    ctx = getattr(error, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    line = Text.assemble(("error:", "bold red"), f" {message}{hint}")
    err_console.print(line, highlight=False, soft_wrap=True)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark model-based RL: USB-PO, MBPO and baselines on gymnasium MuJoCo, as CSV.",
)
console = Console()
err_console = Console(stderr=True)


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("usbpo")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        console.print(f"usbpo {_package_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="print the version and exit",
    ),
) -> None:
    pass


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into one line on stderr and exit code 2."""
    from usbpo_cli.errors import TrainingDiverged

    try:
        yield
    except (UsageError, TrainingDiverged) as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: rows written so far are kept")
        raise typer.Exit(130) from None


PRECISION_OPTION = typer.Option(
    "fp32", help="fp32, or bf16 where the CPU/GPU multiplies bf16 natively (README 'Precision')"
)
COMPILE_OPTION = typer.Option(
    False,
    "--compile",
    help="torch.compile SAC's update (sac, mbpo, usbpo, cmlo, pdml), fusing its elementwise "
    "work; needs a C++ compiler (README 'Compiled update': what it gains where)",
)


@app.command()
def train(
    env: str = typer.Option("Hopper-v4", help="gymnasium task id, e.g. Hopper-v4"),
    algo: str = typer.Option(
        "usbpo", help="algorithm (see `usbpo algos`): usbpo, mbpo, cmlo, pdml, alm, sac, td3, ppo"
    ),
    seed: int = typer.Option(0, help="random seed (same seed, same CSV on CPU)"),
    steps: int = typer.Option(100_000, help="total real env steps, exploration included"),
    out: Path = typer.Option(None, help="run folder (default runs/train/<env>/<algo>/seed<k>)"),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N"),
    precision: str = PRECISION_OPTION,
    compile_: bool = COMPILE_OPTION,
    preset: str = typer.Option("paper", help="paper (default), cpu-small, demo or tiny"),
    set_: list[str] = typer.Option([], "--set", help="override a config field: key=value"),
    truncate_obs: bool = typer.Option(False, help="MBPO's 27/45-dim Ant/Humanoid observations"),
    resume: bool = typer.Option(False, help="continue the run in --out from its last checkpoint"),
    restart: bool = typer.Option(
        False, help="with --resume: start over in --out when no readable checkpoint is left"
    ),
    keep_checkpoints: int = typer.Option(2, help="newest checkpoints kept in the run folder"),
    threads: int = typer.Option(0, help="torch CPU threads (0: torch's default)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Train one agent on one task; writes config.json and progress.csv to the run folder."""
    with user_errors():
        import torch

        from usbpo_cli.runs.runner import RunSpec, prepare_run

        if threads < 0:
            raise UsageError(f"--threads must be >= 0, got {threads}")
        if threads:
            torch.set_num_threads(threads)
        out = out or Path("runs") / "train" / env / algo / f"seed{seed}"
        spec = RunSpec(
            env,
            algo,
            seed,
            steps,
            out,
            device,
            preset,
            list(set_),
            truncate_obs=truncate_obs,
            precision=precision,
            compile=compile_,
        )
        run = prepare_run(  # every input error surfaces here, before the progress bar
            spec,
            resume=resume,
            restart=restart,
            keep_checkpoints=keep_checkpoints,
            notify=lambda message: err_console.print(f"[yellow]{message}[/]", highlight=False),
        )
        eta = _before_training(spec, run.resumed_from or 0, torch.get_num_threads())
        progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<13}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("env steps  eval return {task.fields[last_return]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=err_console,
            disable=quiet,
        )
        with progress:
            task = progress.add_task(
                "train",
                total=steps,
                phase="starting",
                last_return="-",
                eta=eta.text(),
                completed=run.resumed_from or 0,
            )

            def report(step: int, phase: str | None, last_return: float | None) -> None:
                fields = {"phase": phase} if phase else {}
                if last_return is not None:
                    fields["last_return"] = f"{last_return:.1f}"
                eta.update(step)
                progress.update(task, completed=step, eta=eta.text(), **fields)

            summary = run.train(report)
            progress.update(task, phase="done", eta="")  # nothing left to estimate
        console.print(
            f"{algo} on {env}, seed {seed}: {summary.env_steps} env steps in "
            f"{summary.wall_time_s:.0f} s; final eval return {summary.final_return:.1f}, "
            f"best {summary.best_return:.1f}"
        )
        saved = run.checkpointer
        console.print(
            f"checkpoints: {saved.folder} (last {saved.last_bytes / 2**20:.1f} MiB, "
            f"written in {saved.last_seconds:.2f} s)"
        )
        console.print(f"progress: {out / 'progress.csv'}")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _names(text: str, option: str) -> list[str]:
    """A comma-separated list of names with none empty and none twice."""
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or "" in names:
        raise UsageError(f"{option} {text!r}: empty name in the list (give NAME,NAME,...)")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(f"{option} {text!r}: {', '.join(twice)} given more than once")
    return names


def _before_training(spec: Any, start: int, threads: int) -> Any:
    """What a person should know before a run starts: the defaults a task without paper values
    borrows, the pause a `--compile` run makes at its first update, and, for a CPU run the
    cost model puts above two hours, the estimate and the cheaper choices. Returns the run's
    StageEta for the progress bar."""
    import json

    from usbpo_cli.runs.config import borrowed_summary
    from usbpo_cli.runs.status import LONG_RUN_S, episode_limit, estimate, stage_eta

    payload = json.loads((Path(spec.out) / "config.json").read_text())
    borrowed = payload.get("no_paper_values")
    if borrowed:
        line = borrowed_summary(spec.env_id, borrowed)
        err_console.print(line, style="yellow", markup=False, soft_wrap=True)
    if spec.compile:
        err_console.print(
            "--compile: SAC's update is compiled at its first call, after the exploration "
            "steps (once per process: about 15-20 s on 2 cores, seconds when cached)",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
    config = payload["config"]
    limit = episode_limit(spec.env_id)
    slowdown = None
    if spec.device == "cpu":
        slowdown = _slowdown(estimate(config, spec.steps, start, threads, limit)["total"], threads)
    seconds = estimate(config, spec.steps, start, threads, limit, slowdown)["total"]
    if spec.device == "cpu" and seconds > LONG_RUN_S:
        what = f"{spec.algo} on {spec.env_id} ({spec.steps} env steps)"
        _print_long_run(what, seconds, [spec], threads, workers=1, slowdown=slowdown)
    return stage_eta(config, spec.steps, start, threads, spec.env_id, slowdown)


def _slowdown(reference_seconds: float, threads: int) -> float | None:
    """This machine's factor on the cost model (runs/calibration.py), timed only when the
    reference estimate is long enough for the estimate to matter; None otherwise."""
    from usbpo_cli.runs.status import CALIBRATE_ABOVE_S

    if reference_seconds <= CALIBRATE_ABOVE_S:
        return None
    from usbpo_cli.runs.calibration import measure_slowdown

    return measure_slowdown(threads)


def _print_long_run(
    what: str,
    seconds: float,
    specs: list,
    threads: int,
    workers: int,
    slowdown: float | None = None,
) -> None:
    """The estimate of a long CPU run or grid and the cheaper choices, each with its own
    estimate where the cost model gives one (scaled to this machine by `slowdown`), on one
    line."""
    import torch

    from usbpo_cli.runs.status import LONG_RUN_S, format_duration
    from usbpo_cli.util.cores import usable_cores

    workers = max(1, workers)
    small = _preset_estimate(specs, "cpu-small", threads, specs[0].steps, slowdown) / workers
    choices = []
    if small < seconds:  # not offered when it costs more (its earlier start means more updates)
        little = "; little saved: policy updates dominate" if small > 0.9 * seconds else ""
        choices.append(f"--preset cpu-small (about {format_duration(small)}{little})")
    lo, hi = 0, specs[0].steps  # the most steps per run that fit in two hours, by bisection
    while hi - lo > max(1, specs[0].steps // 100):
        mid = (lo + hi) // 2
        fits = _preset_estimate(specs, None, threads, mid, slowdown) / workers <= LONG_RUN_S
        lo, hi = (mid, hi) if fits else (lo, mid)
    if lo > 0:
        choices.append(f"--steps {lo - lo % 1000 if lo >= 10_000 else lo} (fits in 2 h)")
    visible = "a CUDA device is visible" if torch.cuda.is_available() else "none visible here"
    choices.append(f"--device cuda ({visible})")
    cores = usable_cores()
    if len(specs) == 1:
        choices.append(f"seeds side by side: usbpo compare --workers {min(2, cores)}")
    elif workers < min(cores, len(specs)):
        choices.append(f"--workers {min(cores, len(specs))} ({cores} cores here)")
    choices.append("a cluster: --executor ray --address HOST:PORT")
    basis = "cost model timed on this CPU" if slowdown is not None else "cost model"
    err_console.print(
        f"estimate: {what} takes about {format_duration(seconds)} on this CPU ({basis}, "
        f"README 'Time estimates'); cheaper: {'; '.join(choices)}",
        style="yellow",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _print_borrowed(todo: list) -> None:
    """Once per task without paper values (not once per run): the defaults its runs borrow."""
    from usbpo_cli.agents.registry import get_algorithm
    from usbpo_cli.envs.termination import env_family
    from usbpo_cli.runs.config import borrowed_defaults, borrowed_summary
    from usbpo_cli.util.settings import parse_overrides

    borrowed: dict[str, dict] = {}
    for run in todo:
        spec = run.spec
        if env_family(spec.env_id) is not None:
            continue
        config_cls = get_algorithm(spec.algo).config_cls
        overrides = parse_overrides(list(spec.overrides), config_cls)
        entries = borrowed_defaults(config_cls, None, spec.preset, overrides)
        borrowed.setdefault(spec.env_id, {}).update(entries)
    for env_id, entries in borrowed.items():
        if entries:
            err_console.print(
                borrowed_summary(env_id, entries), style="yellow", markup=False, soft_wrap=True
            )


def _preset_estimate(
    specs: list, preset: str | None, threads: int, steps: int, slowdown: float | None = None
) -> float:
    """Seconds the same runs would take at another preset (None: their own) and `steps` env
    steps each; a run that cannot resolve there counts 0."""
    import dataclasses as dc

    from usbpo_cli.agents.registry import get_algorithm
    from usbpo_cli.envs.termination import env_family
    from usbpo_cli.runs.config import resolve_config
    from usbpo_cli.runs.status import episode_limit, estimate
    from usbpo_cli.util.settings import parse_overrides

    total = 0.0
    for spec in specs:
        config_cls = get_algorithm(spec.algo).config_cls
        try:
            overrides = parse_overrides(spec.overrides, config_cls)
            family = env_family(spec.env_id)
            config, _ = resolve_config(config_cls, family, preset or spec.preset, overrides)
        except UsageError:
            continue
        limit = episode_limit(spec.env_id)
        total += estimate(dc.asdict(config), steps, 0, threads, limit, slowdown)["total"]
    return total


@dataclasses.dataclass
class GridExecution:
    """How a grid's runs execute: the options every grid command (compare, ablate) takes."""

    executor: str
    workers: int
    address: str | None
    threads: int
    vectorise: str


def _execute_grid(grid: list, execution: GridExecution) -> None:
    """Run what is not complete yet; unfinished runs continue from their last checkpoint.
    Shows the grid (envs, algos, seeds, steps, folder), each running run's env step and ETA,
    and the grid's ETA. Runs start seed by seed (every env and algo at seed 0, then seed 1,
    ...), so a grid stopped part-way holds comparable seeds of everything rather than all
    seeds of the first algo; with `vectorise`, the seeds of one (env, algo) that can train
    as one agent do, each still in its own run folder."""
    from usbpo_cli.experiments.executors import make_executor, plan_workers
    from usbpo_cli.experiments.grids import plan_units
    from usbpo_cli.experiments.gridview import GridView, grid_header, planned_seconds, run_name
    from usbpo_cli.runs.status import format_duration

    executor, workers, vectorise = execution.executor, execution.workers, execution.vectorise
    todo = [run for run in grid if run.status != "complete"]
    todo.sort(key=lambda run: run.seed)  # stable: env and algo order kept within a seed
    units, notes = plan_units(todo, vectorise)
    skipped = len(grid) - len(todo)
    console.print(grid_header(grid), highlight=False, soft_wrap=True)
    if not todo:
        console.print(f"{len(grid)} runs: {skipped} already complete, {len(todo)} to run")
        return
    slots, threads = plan_workers(workers, len(units), execution.threads)
    if executor != "local":  # a Ray cluster is not capped at this machine's cores
        slots = max(1, min(workers, len(units)))
    slowdown = None  # this machine's factor on the cost model; a cluster's are not this one
    if executor == "local" and all(run.spec.device == "cpu" for run in todo):
        specs = [run.spec for run in todo]
        slowdown = _slowdown(planned_seconds(specs, slots, threads), threads)
    runner = make_executor(executor, workers, execution.address, execution.threads, slowdown)
    view = GridView(todo, slots, threads, err_console, slowdown)
    basis = "cost model timed on this CPU" if slowdown is not None else "cost model"
    console.print(
        f"{len(grid)} runs: {skipped} already complete, {len(todo)} to run on {slots} "
        f"worker(s); estimate about {format_duration(view.planned_seconds())} "
        f"({basis}, README 'Time estimates')",
        highlight=False,
    )
    for unit in units:
        if len(unit) > 1:
            seeds = ", ".join(str(run.seed) for run in unit)
            console.print(
                f"{unit[0].variant.label} on {unit[0].env}: seeds {seeds} train as one agent "
                f"(--vectorise {vectorise}), each in its own run folder",
                highlight=False,
            )
    for note in notes:
        console.print(note, highlight=False)
    for run in todo:
        if run.status == "partial":
            console.print(f"continuing unfinished {run.spec.out}", highlight=False)
    _print_borrowed(todo)
    if view.long_cpu_grid():
        what = f"this grid ({len(todo)} runs on {slots} worker(s))"
        specs = [run.spec for run in todo]
        _print_long_run(what, view.planned_seconds(), specs, threads, slots, slowdown)
    failures = []
    with view:

        def on_done(outcome) -> None:
            view.finished(outcome.spec)
            name = run_name(outcome.spec)
            if outcome.error:
                failures.append(f"{name}: {outcome.error}")
                view.progress.console.print(
                    f"[red]failed[/] {name}: {outcome.error}", highlight=False
                )
            else:
                view.progress.console.print(
                    f"done {name}: final eval return {outcome.final_return:.1f}", highlight=False
                )

        runner.run([[run.spec for run in unit] for unit in units], on_done)
    if failures:
        raise UsageError(f"{len(failures)} run(s) failed; first: {failures[0]}")


def _start_grid(out: Path, manifest: dict, execution: GridExecution) -> None:
    """Once every input is known good: write the grid's manifest (first use only)."""
    from usbpo_cli.experiments.executors import make_executor
    from usbpo_cli.experiments.grids import VECTORISE_CHOICES, record_grid

    if execution.vectorise not in VECTORISE_CHOICES:
        raise UsageError(f"--vectorise {execution.vectorise!r}: choose auto, on or off")
    # Validates the options; nothing is written yet.
    make_executor(execution.executor, execution.workers, execution.address, execution.threads)
    note = record_grid(out, manifest)
    if note:
        err_console.print(f"[yellow]{note}[/]", highlight=False)


def _spread(mean: float, std: float, n: int) -> str:
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f} (n=1)"


def _interval(iqm: float, low: float, high: float, n: int) -> str:
    return f"{iqm:.1f} [{low:.1f}, {high:.1f}]" if n > 1 else f"{iqm:.1f} (n=1)"


def _report_grid(out: Path, grid: list, reference: str | None = "usbpo") -> None:
    """Write results.csv and summary.csv for the grid and print one table per env."""
    from usbpo_cli.experiments import aggregate

    labels = {(run.env, run.variant.label) for run in grid}
    summary, auc = aggregate.write_grid_report(out, labels, reference)
    headers = ["algo", "seeds", "final mean ± std", "final IQM [95% CI]", "AUC mean ± std"]
    headers += ["AUC IQM [95% CI]"] + ([f"P({reference} > algo)"] if reference else [])
    for env in sorted(summary["env"].unique()):
        table = Table(*headers, title=f"{env}", title_justify="left")
        for _, row in summary[summary["env"] == env].iterrows():
            n, a = int(row["n_seeds"]), auc.loc[(env, row["algo"])]
            cells = [
                str(row["algo"]),
                str(n),
                _spread(row["final_mean"], row["final_std"], n),
                _interval(row["final_iqm"], row["final_iqm_ci_low"], row["final_iqm_ci_high"], n),
                _spread(a["mean"], a["std"], n),
                _interval(a["iqm"], a["ci_low"], a["ci_high"], n),
            ]
            if reference:
                better = row["p_usbpo_better"]
                cells.append("-" if better != better else f"{better:.2f}")  # NaN: not applicable
            table.add_row(*cells)
        console.print(table)
    console.print(f"results: {out / 'results.csv'}")
    console.print(f"summary: {out / 'summary.csv'}")


# Options every grid command (compare, ablate) takes, declared once.
WORKERS_OPTION = typer.Option(1, help="runs at once (capped at the CPU cores)")
THREADS_OPTION = typer.Option(
    0, help="torch threads per run (0: the CPU cores shared out among the workers)"
)
VECTORISE_OPTION = typer.Option(
    "auto",
    help="auto/on: the seeds of one (env, algo) that can train as one agent do (off-policy "
    "algos; the others one process per seed); off: one process per seed",
)
EXECUTOR_OPTION = typer.Option("local", help="local (processes) or ray")
ADDRESS_OPTION = typer.Option(None, help="Ray cluster address (default: start a local Ray)")
DEVICE_OPTION = typer.Option("cpu", help="cpu, cuda or cuda:N")
PRESET_OPTION = typer.Option("paper", help="config preset for every run")
SET_OPTION = typer.Option([], "--set", help="override for every run: key=value")


@app.command()
def compare(
    envs: str = typer.Option("Hopper-v4", help="comma-separated task ids"),
    algos: str = typer.Option("usbpo,mbpo,sac", help="comma-separated algorithms"),
    seeds: int = typer.Option(5, help="seeds per (env, algo): 0..N-1"),
    steps: int = typer.Option(100_000, help="env steps per run"),
    out: Path = typer.Option(Path("runs/compare"), help="grid folder"),
    workers: int = WORKERS_OPTION,
    threads: int = THREADS_OPTION,
    vectorise: str = VECTORISE_OPTION,
    executor: str = EXECUTOR_OPTION,
    address: str = ADDRESS_OPTION,
    device: str = DEVICE_OPTION,
    precision: str = PRECISION_OPTION,
    compile_: bool = COMPILE_OPTION,
    preset: str = PRESET_OPTION,
    set_: list[str] = SET_OPTION,
) -> None:
    """Run (or finish) a grid of env x algo x seed and summarise it; rerun to resume."""
    with user_errors():
        from usbpo_cli.agents.registry import get_algorithm
        from usbpo_cli.experiments.grids import Variant, build_grid, grid_manifest

        names = _names(algos, "--algos")
        for name in names:
            get_algorithm(name)
        env_ids, variants = _names(envs, "--envs"), [Variant(n, n) for n in names]
        manifest = grid_manifest(
            "compare",
            env_ids,
            variants,
            seeds,
            steps,
            preset=preset,
            overrides=list(set_),
            device=device,
            precision=precision,
            compile=compile_,
        )
        grid = build_grid(
            env_ids,
            variants,
            seeds,
            steps,
            out,
            device=device,
            preset=preset,
            overrides=list(set_),
            manifest=manifest,
            precision=precision,
            compile=compile_,
        )
        execution = GridExecution(executor, workers, address, threads, vectorise)
        _start_grid(out, manifest, execution)
        _execute_grid(grid, execution)
        _report_grid(out, grid)


@app.command()
def ablate(
    study: str = typer.Option(None, help="study name (see --list)"),
    list_: bool = typer.Option(False, "--list", help="describe the studies and exit"),
    env: str = typer.Option("Hopper-v4", help="comma-separated task ids"),
    seeds: int = typer.Option(3, help="seeds per variant"),
    steps: int = typer.Option(100_000, help="env steps per run"),
    out: Path = typer.Option(None, help="grid folder (default runs/ablate/<study>)"),
    workers: int = WORKERS_OPTION,
    threads: int = THREADS_OPTION,
    vectorise: str = VECTORISE_OPTION,
    executor: str = EXECUTOR_OPTION,
    address: str = ADDRESS_OPTION,
    device: str = DEVICE_OPTION,
    precision: str = PRECISION_OPTION,
    compile_: bool = COMPILE_OPTION,
    preset: str = PRESET_OPTION,
    set_: list[str] = SET_OPTION,
) -> None:
    """Run a named ablation study of the USB-PO paper; rerun to resume."""
    with user_errors():
        from usbpo_cli.experiments.grids import (
            STUDIES,
            build_grid,
            grid_manifest,
            refuse_varied_keys,
        )

        if list_:
            for item in STUDIES.values():
                labels = ", ".join(v.label for v in item.variants)
                console.print(
                    f"[bold]{item.name}[/]: {item.description}\n  variants: {labels}; "
                    f"figure: usbpo plot --figure {item.figure}"
                )
            return
        if study not in STUDIES:
            raise UsageError(f"unknown study {study!r} (choose: {', '.join(STUDIES)})")
        chosen = STUDIES[study]
        refuse_varied_keys(chosen, list(set_))
        out = out or Path("runs") / "ablate" / study
        env_ids, variants = _names(env, "--env"), list(chosen.variants)
        manifest = grid_manifest(
            "ablate",
            env_ids,
            variants,
            seeds,
            steps,
            preset=preset,
            overrides=list(set_),
            device=device,
            study=study,
            precision=precision,
            compile=compile_,
        )
        grid = build_grid(
            env_ids,
            variants,
            seeds,
            steps,
            out,
            device=device,
            preset=preset,
            overrides=list(set_),
            manifest=manifest,
            precision=precision,
            compile=compile_,
        )
        execution = GridExecution(executor, workers, address, threads, vectorise)
        _start_grid(out, manifest, execution)
        if set_:
            for item in manifest["variants"]:
                console.print(f"{item['label']}: {item['algo']} with {', '.join(item['set'])}")
        _execute_grid(grid, execution)
        _report_grid(out, grid, reference=chosen.reference)
        console.print(f"figure: usbpo plot --figure {chosen.figure} --runs {out}")


@app.command()
def plot(
    figure: str = typer.Option(None, help="figure name (see --list)"),
    list_: bool = typer.Option(False, "--list", help="name the figures and exit"),
    runs: Path = typer.Option(
        Path("runs"),
        help="a grid or a folder of grids (CSV only); the most recent grid that qualifies is used",
    ),
    out: Path = typer.Option(
        None, help="output file, .png, .pdf or .svg (default <grid>/<figure>.png)"
    ),
    reference: Path = typer.Option(
        None, help="published curves to overlay (e.g. ../shared/reference)"
    ),
    sac_asymptote: str = typer.Option(
        None, help="dashed SAC line: 'published' (CleanRL, 1M steps) or ENV=RETURN,..."
    ),
) -> None:
    """Draw a paper figure from one grid's progress CSVs (never imports torch)."""
    with user_errors():
        from usbpo_cli.experiments import plots

        if list_:
            for name, description in plots.FIGURES.items():
                console.print(f"[bold]{name:<16}[/] {description}")
            return
        if figure not in plots.FIGURES:
            raise UsageError(f"unknown figure {figure!r} (choose: {', '.join(plots.FIGURES)})")
        if reference is not None and not reference.is_dir():
            raise UsageError(f"--reference {reference}: not a folder")
        if out is not None:
            plots.check_output(out)
        # One grid only (the most recent that has what the figure needs), never a mix.
        chosen = plots.select_runs(figure, runs)
        target = out or chosen.default_out_folder / f"{figure}.png"
        asymptotes = plots.sac_asymptotes(sac_asymptote, sorted(chosen.runs["env"].unique()))
        notes = list(chosen.notes)
        written = plots.plot_figure(
            figure,
            chosen.runs,
            target,
            reference_dir=reference,
            sac_asymptote=asymptotes,
            manifest=chosen.grid.manifest,
            report=notes.append,
        )
        for note in notes:  # printed once the figure is written: an error stays one line
            err_console.print(note, highlight=False, soft_wrap=True, markup=False)
        console.print(f"figure: {written}", highlight=False, soft_wrap=True)


@app.command()
def envs() -> None:
    """List the supported tasks with their dimensions and termination rule."""
    with user_errors():
        from usbpo_cli.envs.tasks import known_env_ids, task_info
        from usbpo_cli.envs.termination import LEARNED

        table = Table("env", "obs", "act", "termination", title="supported tasks")
        for env_id in known_env_ids():
            info = task_info(env_id)
            table.add_row(env_id, str(info.obs_dim), str(info.act_dim), info.termination)
            if info.family in ("Ant", "Humanoid"):
                short = task_info(env_id, truncate_obs=True)
                table.add_row(
                    f"{env_id} --truncate-obs",
                    str(short.obs_dim),
                    str(short.act_dim),
                    short.termination,
                )
        console.print(table)
        console.print(
            "Pendulum-v1 and MountainCarContinuous-v0 have no paper values: they borrow them "
            "(listed in each run's config.json). Any other gymnasium task with flat Box spaces "
            f"trains too; its termination rule is {LEARNED}.",
            highlight=False,
        )


@app.command()
def config(
    algo: str = typer.Option("usbpo", help="algorithm whose settings to list"),
    env: str = typer.Option(None, help="show the paper values for this task"),
    preset: str = typer.Option("paper", help="preset applied on top of the paper values"),
) -> None:
    """List an algorithm's settings (the names `--set` takes), their values and docs."""
    with user_errors():
        from usbpo_cli.agents.registry import get_algorithm
        from usbpo_cli.envs.tasks import task_info
        from usbpo_cli.runs.config import resolve_config

        algorithm = get_algorithm(algo)
        family = task_info(env).family if env else None
        resolved, deviations = resolve_config(algorithm.config_cls, family, preset, {})
        table = Table("setting", "value", "meaning", title=f"{algo} settings")
        for f in dataclasses.fields(resolved):
            value = repr(getattr(resolved, f.name))
            if f.name in deviations:
                value += f" (paper {deviations[f.name]['paper']!r})"
            table.add_row(f.name, value, f.metadata.get("doc", ""))
        console.print(table)


@app.command()
def algos() -> None:
    """List the available algorithms."""
    from usbpo_cli.agents.registry import load_algorithms

    for name, algorithm in load_algorithms().items():
        console.print(f"[bold]{name:<6}[/] {algorithm.description}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
