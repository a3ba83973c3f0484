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
    algo: str = typer.Option("usbpo", help="usbpo, mbpo or sac"),
    seed: int = typer.Option(0, help="random seed (same seed, same CSV on CPU)"),
    steps: int = typer.Option(100_000, help="total real env steps, exploration included"),
    out: Path = typer.Option(None, help="run folder (default runs/train/<env>/<algo>/seed<k>)"),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N"),
    preset: str = typer.Option("paper", help="paper (default), cpu-small, demo or tiny"),
    set_: list[str] = typer.Option([], "--set", help="override a config field: key=value"),
    truncate_obs: bool = typer.Option(False, help="MBPO's 27/45-dim Ant/Humanoid observations"),
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
        run = prepare_run(spec)  # every input error surfaces here, before the progress bar
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
            task = progress.add_task("train", total=steps, phase="starting", last_return="-")

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
        console.print(f"progress: {out / 'progress.csv'}")


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
