"""The `usbpo` command line. It only parses and dispatches; the work lives in the core modules."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from usbpo_cli.errors import UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark model-based RL: USB-PO, MBPO and baselines on gymnasium MuJoCo, as CSV.",
)
console = Console()
err_console = Console(stderr=True)


def load_algorithms() -> None:
    """Fill the registry: USB-PO from the core, the baselines from `baselines/`."""
    import baselines  # noqa: F401
    from usbpo_cli.config import USBPOConfig
    from usbpo_cli.registry import register
    from usbpo_cli.usbpo import USBPOAgent

    register(
        "usbpo",
        USBPOAgent,
        USBPOConfig,
        "USB-PO: MBPO + phase-2 fine-tune on model shift + model bias (W2)",
        model_based=True,
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into one line on stderr and exit code 2."""
    from usbpo_cli.runlog import TrainingDiverged

    try:
        yield
    except (UsageError, TrainingDiverged) as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: rows written so far are kept")
        raise typer.Exit(130) from None


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
    preset: str = typer.Option("paper", help="paper (default), cpu-small, demo or tiny"),
    set_: list[str] = typer.Option([], "--set", help="override a config field: key=value"),
    truncate_obs: bool = typer.Option(False, help="MBPO's 27/45-dim Ant/Humanoid observations"),
    resume: bool = typer.Option(False, help="continue the run in --out from its last checkpoint"),
    keep_checkpoints: int = typer.Option(2, help="newest checkpoints kept in the run folder"),
    threads: int = typer.Option(0, help="torch CPU threads (0: torch's default)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Train one agent on one task; writes config.json and progress.csv to the run folder."""
    with user_errors():
        import torch

        from usbpo_cli.runner import RunSpec, prepare_run

        if threads < 0:
            raise UsageError(f"--threads must be >= 0, got {threads}")
        if threads:
            torch.set_num_threads(threads)
        load_algorithms()
        out = out or Path("runs") / "train" / env / algo / f"seed{seed}"
        spec = RunSpec(env, algo, seed, steps, out, device, preset, list(set_), truncate_obs)
        run = prepare_run(  # every input error surfaces here, before the progress bar
            spec,
            resume=resume,
            keep_checkpoints=keep_checkpoints,
            notify=lambda message: err_console.print(f"[yellow]{message}[/]", highlight=False),
        )
        progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<13}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("env steps  eval return {task.fields[last_return]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err_console,
            disable=quiet,
        )
        with progress:
            task = progress.add_task(
                "train",
                total=steps,
                phase="starting",
                last_return="-",
                completed=run.resumed_from or 0,
            )

            def report(step: int, phase: str | None, last_return: float | None) -> None:
                fields = {"phase": phase} if phase else {}
                if last_return is not None:
                    fields["last_return"] = f"{last_return:.1f}"
                progress.update(task, completed=step, **fields)

            summary = run.train(report)
            progress.update(task, phase="done")
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


def _execute_grid(grid: list, executor: str, workers: int, address: str | None) -> None:
    """Run what is not complete yet; unfinished runs continue from their last checkpoint."""
    from usbpo_cli.executors import make_executor

    runner = make_executor(executor, workers, address)
    todo = [run for run in grid if run.status != "complete"]
    skipped = len(grid) - len(todo)
    console.print(f"{len(grid)} runs: {skipped} already complete, {len(todo)} to run")
    if not todo:
        return
    for run in todo:
        if run.status == "partial":
            console.print(f"continuing unfinished {run.spec.out}")
    failures = []
    progress = Progress(
        TextColumn("[bold]grid"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        console=err_console,
    )
    with progress:
        task = progress.add_task("grid", total=len(todo))

        def on_done(outcome) -> None:
            progress.advance(task)
            spec = outcome.spec
            name = f"{spec.env_id} {Path(spec.out).parent.name} seed {spec.seed}"
            if outcome.error:
                failures.append(f"{name}: {outcome.error}")
                progress.console.print(f"[red]failed[/] {name}: {outcome.error}", highlight=False)
            else:
                progress.console.print(
                    f"done {name}: final eval return {outcome.final_return:.1f}", highlight=False
                )

        runner.run([run.spec for run in todo], on_done)
    if failures:
        raise UsageError(f"{len(failures)} run(s) failed; first: {failures[0]}")


def _report_grid(out: Path, grid: list, baseline_of_interest: str = "usbpo") -> None:
    """Write results.csv for the grid and print one table per env."""
    from usbpo_cli import aggregate
    from usbpo_cli.runlog import write_text_atomic

    runs = aggregate.load_runs(out)
    wanted = {(run.env, run.variant.label) for run in grid}
    runs = runs[[pair in wanted for pair in zip(runs["env"], runs["label"])]]
    write_text_atomic(out / "results.csv", aggregate.tidy_results(runs).to_csv(index=False))
    final = aggregate.summary_table(runs, "final")
    auc = aggregate.summary_table(runs, "auc")
    per_seed = aggregate.final_and_auc(runs)
    for env in sorted(final["env"].unique()):
        table = Table(
            "algo",
            "seeds",
            "final mean ± std",
            "final IQM [95% CI]",
            "AUC mean ± std",
            "AUC IQM [95% CI]",
            f"P({baseline_of_interest} > algo)",
            title=f"{env}",
            title_justify="left",
        )
        env_final = final[final["env"] == env].set_index("label")
        env_auc = auc[auc["env"] == env].set_index("label")
        env_seeds = per_seed[per_seed["env"] == env]
        ours = env_seeds[env_seeds["label"] == baseline_of_interest]["final"].to_numpy()
        for label, row in env_final.iterrows():
            a = env_auc.loc[label]
            theirs = env_seeds[env_seeds["label"] == label]["final"].to_numpy()
            p_improve = (
                f"{aggregate.probability_of_improvement(ours, theirs):.2f}"
                if len(ours) and label != baseline_of_interest
                else "-"
            )
            table.add_row(
                str(label),
                str(int(row["n"])),
                f"{row['mean']:.1f} ± {row['std']:.1f}",
                f"{row['iqm']:.1f} [{row['ci_low']:.1f}, {row['ci_high']:.1f}]",
                f"{a['mean']:.1f} ± {a['std']:.1f}",
                f"{a['iqm']:.1f} [{a['ci_low']:.1f}, {a['ci_high']:.1f}]",
                p_improve,
            )
        console.print(table)
    console.print(f"results: {out / 'results.csv'}")


# Options every grid command (compare, ablate) takes, declared once.
WORKERS_OPTION = typer.Option(1, help="runs at once (capped at the CPU cores)")
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
    executor: str = EXECUTOR_OPTION,
    address: str = ADDRESS_OPTION,
    device: str = DEVICE_OPTION,
    preset: str = PRESET_OPTION,
    set_: list[str] = SET_OPTION,
) -> None:
    """Run (or finish) a grid of env x algo x seed and summarise it; rerun to resume."""
    with user_errors():
        from usbpo_cli.experiments import Variant, build_grid
        from usbpo_cli.registry import get_algorithm

        load_algorithms()
        names = _split(algos)
        for name in names:
            get_algorithm(name)
        grid = build_grid(
            _split(envs),
            [Variant(n, n) for n in names],
            seeds,
            steps,
            out,
            device=device,
            preset=preset,
            overrides=list(set_),
        )
        _execute_grid(grid, executor, workers, address)
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
    executor: str = EXECUTOR_OPTION,
    address: str = ADDRESS_OPTION,
    device: str = DEVICE_OPTION,
    preset: str = PRESET_OPTION,
    set_: list[str] = SET_OPTION,
) -> None:
    """Run a named ablation study of the USB-PO paper; rerun to resume."""
    with user_errors():
        from usbpo_cli.experiments import STUDIES, build_grid
        from usbpo_cli.registry import ALGORITHMS

        load_algorithms()
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
        missing = sorted({v.algo for v in chosen.variants} - set(ALGORITHMS))
        if missing:
            raise UsageError(
                f"study {study} needs algorithm(s) not available yet: {', '.join(missing)}"
            )
        out = out or Path("runs") / "ablate" / study
        grid = build_grid(
            _split(env),
            list(chosen.variants),
            seeds,
            steps,
            out,
            device=device,
            preset=preset,
            overrides=list(set_),
        )
        _execute_grid(grid, executor, workers, address)
        _report_grid(out, grid, baseline_of_interest=chosen.variants[-1].label)
        console.print(f"figure: usbpo plot --figure {chosen.figure} --runs {out}")


# SAC after 1M env steps, public CleanRL benchmark (DESIGN.md "Reference numbers").
PUBLISHED_SAC = {
    "HalfCheetah": 9600.0,
    "Walker2d": 3600.0,
    "Hopper": 2300.0,
    "InvertedPendulum": 900.0,
    "Humanoid": 5000.0,
}


def _sac_asymptotes(text: str | None, envs: list[str]) -> dict[str, float] | None:
    if not text:
        return None
    if text == "published":
        found = {
            env: PUBLISHED_SAC[env.split("-v")[0]]
            for env in envs
            if env.split("-v")[0] in PUBLISHED_SAC
        }
        return found or None
    values = {}
    for pair in _split(text):
        env, _, value = pair.partition("=")
        try:
            values[env.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--sac-asymptote {pair!r}: expected ENV=RETURN") from None
    return values


@app.command()
def plot(
    figure: str = typer.Option(None, help="figure name (see --list)"),
    list_: bool = typer.Option(False, "--list", help="name the figures and exit"),
    runs: Path = typer.Option(Path("runs"), help="folder holding run folders (CSV only)"),
    out: Path = typer.Option(None, help="output file; .png (default), .pdf or .svg"),
    reference: Path = typer.Option(
        None, help="published curves to overlay (e.g. ../shared/reference)"
    ),
    sac_asymptote: str = typer.Option(
        None, help="dashed SAC line: 'published' (CleanRL, 1M steps) or ENV=RETURN,..."
    ),
) -> None:
    """Draw a paper figure from progress CSVs (never imports torch)."""
    with user_errors():
        from usbpo_cli import aggregate, plots

        if list_:
            for name, description in plots.FIGURES.items():
                console.print(f"[bold]{name:<16}[/] {description}")
            return
        if figure not in plots.FIGURES:
            raise UsageError(f"unknown figure {figure!r} (choose: {', '.join(plots.FIGURES)})")
        if reference is not None and not reference.is_dir():
            raise UsageError(f"--reference {reference}: not a folder")
        data = aggregate.load_runs(runs)
        target = out or runs / f"{figure}.png"
        asymptotes = _sac_asymptotes(sac_asymptote, sorted(data["env"].unique()))
        written = plots.plot_figure(
            figure, data, target, reference_dir=reference, sac_asymptote=asymptotes
        )
        console.print(f"figure: {written}")


@app.command()
def envs() -> None:
    """List the supported tasks with their dimensions and termination rule."""
    with user_errors():
        from usbpo_cli.envs import supported_env_ids, task_info

        table = Table("env", "obs", "act", "termination", title="supported tasks")
        for env_id in supported_env_ids():
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
        console.print("Any other gymnasium task with Box spaces trains too (never-terminate rule).")


@app.command()
def config(
    algo: str = typer.Option("usbpo", help="algorithm whose settings to list"),
    env: str = typer.Option(None, help="show the paper values for this task"),
    preset: str = typer.Option("paper", help="preset applied on top of the paper values"),
) -> None:
    """List an algorithm's settings (the names `--set` takes), their values and docs."""
    with user_errors():
        from usbpo_cli.config import resolve_config
        from usbpo_cli.envs import task_info
        from usbpo_cli.registry import get_algorithm

        load_algorithms()
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
    from usbpo_cli.registry import ALGORITHMS

    load_algorithms()
    for name, algorithm in sorted(ALGORITHMS.items()):
        console.print(f"[bold]{name:<6}[/] {algorithm.description}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
