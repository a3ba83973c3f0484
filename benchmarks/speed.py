"""Speed benchmark at the paper preset for Hopper-v4, all figures from one process and one run.

Prints: the machine's fp32 matmul GFLOP/s; ms per SAC update and its ratio to the FLOP floor,
and the same update's matrix products alone (recorded and replayed: the floor this BLAS sets);
ms per ensemble training epoch at 10k/50k/100k stored transitions; ms per 100k-state model
rollout step; steady-state env steps/s of the whole loop for MBPO and USB-PO, early (5k stored
transitions) and late (50k stored, rollout length 15), and USB-PO's wall-time ratio to MBPO;
peak memory; and mbrl-lib's MBPO (`../shared/anchors/mbrl_lib/run.sh paper`) measured in the same
run, with the ratio ours/theirs. The last line is that ratio (or ours / FLOP floor without it).

The loop is timed at three stages: "anchor" (1000 random transitions and one block of the
loop before the timed block, exactly the stage mbrl-lib's anchor times, so the ratio compares
like with like), "early" (5k stored) and "late" (50k stored, rollout length 15).
`--quick` (under a minute) skips the 50k/100k epochs and the early and late stages, composes the
anchor-stage block from its timed parts, and compares with the anchor figure cached by the last
full run.
`--profile` adds torch.profiler tables for a SAC update and an ensemble epoch.

`--grid` (issue 15) runs the grid stage instead: S seeds of Hopper-v4 (paper preset, default 5),
MBPO and USB-PO, early and late stage, as total env steps/s of the grid (a) trained as one agent
(the seed axis), (b) run as S processes at once, each a lone seed, and (c) one lone seed alone;
per-seed peak memory of (a) against (c); and mbrl-lib's single-run rate, measured in the same
run at its anchor stage and at each grid stage (its own initial exploration of the stage's
stored transitions, one untimed block, then the timed one; late, its rollout length set to 15),
so that the grid is divided by mbrl-lib doing the same stage's work. Each configuration runs in
a fresh process of its own (`--grid-worker`), which conditions its agent the anchor's way (the
stored random transitions, then one whole untimed block of the loop) and times the next block.
`--precision bf16` times the grid under bf16 (refused, as `usbpo` refuses it, on a CPU without
native bf16); `--precision fp32,bf16` times both, one after the other, against the same mbrl-lib
figures (the grid stage only: `--scaling` and `--memory` take one precision). `--states DIR`
conditions each (stage, algorithm) once, as S seeds in one agent, saves every seed's state there
(reused when present) and starts every timed configuration from those states instead (lone: seed
0; S processes: seed k each): the late stage's from-scratch training on 50k transitions would
otherwise be repeated for 11 seeds per algorithm and precision. The states are made in the first
precision asked for and timed in each.
`--condition-only` makes them and times nothing (it can run beside other work: nothing
it does is timed); `--algos` limits the grid to MBPO or USB-PO. `--compile on` times the grid
with SAC's update through torch.compile (`usbpo --compile`), `--compile off,on` both, one after
the other, against the same mbrl-lib figures; each process compiles before its timed block.

usage: python benchmarks/speed.py [--quick] [--profile] [--device cpu|cuda] [--no-anchor]
       [--json FILE]
       python benchmarks/speed.py --grid [--seeds 5] [--precision fp32|bf16|fp32,bf16]
       [--compile off|on|off,on] [--stages early,late] [--algos MBPO,USB-PO]
       [--states DIR [--condition-only]]
       [--device cpu|cuda] [--no-anchor] [--json FILE]
       python benchmarks/speed.py --grid --scaling 1,5,20 --device cuda [--stages early]
       (the seed axis alone at each S: benchmarks/gpu_check.sh, for a lent GPU)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from baselines.mbpo import MBPOAgent
from usbpo_cli.agents.base import no_report
from usbpo_cli.agents.buffers import Batch
from usbpo_cli.agents.dyna import DynaConfig, act_in_passes, fit_settings
from usbpo_cli.agents.sac import SAC
from usbpo_cli.agents.usbpo import USBPOAgent, USBPOConfig
from usbpo_cli.errors import UsageError
from usbpo_cli.models.ensemble import GaussianEnsemble, fit_ensemble
from usbpo_cli.models.optim import make_adam
from usbpo_cli.runs.checkpoint import load_checkpoint
from usbpo_cli.runs.config import PAPER_TASKS
from usbpo_cli.runs.csvlog import TIMING_COLUMNS, CsvLogger
from usbpo_cli.util.allocator import keep_freed_memory
from usbpo_cli.util.cores import usable_cores

ENV = "Hopper-v4"
OBS, ACT = 11, 3
ANCHOR = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "mbrl_lib" / "run.sh"
BLOCK = 250  # env steps between model trainings: one steady-state block of the loop
# Cap on the untimed from-scratch model training on the pre-filled data (full, --quick). The
# full mode trains it to convergence: from a half-trained model the timed training would be a
# from-scratch one in disguise (measured: 195 epochs at 50k after a 60-epoch start, against
# 35-50 per training in a real Hopper run), not the warm-started one of a run's steady state.
WARMUP_EPOCHS: dict[bool, int | None] = {False: None, True: 30}
# --quick caps the timed (warm-started) training: steady-state trainings in the paper-preset
# Hopper run of benchmarks/runs/bench-phases took 35-50 epochs.
QUICK_MAX_EPOCHS = 40
# The anchor's last full-mode result, so that --quick (which cannot afford minutes of mbrl-lib)
# can still give the ratio against it; the line it prints says when that figure was measured.
ANCHOR_CACHE = Path.home() / ".cache" / "usbpo-anchors" / "mbrl_lib_paper_result.json"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_gflops(device: torch.device, size: int = 1024) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    seconds = timed(lambda: a @ b, 20, device)
    return 2 * size**3 / seconds / 1e9


def sac_update_flops(obs: int, act: int, hidden: int, batch: int) -> float:
    """FLOPs of one SAC update: critic fwd+bwd (3x fwd), target critic and next-action actor
    forwards, actor loss through the critics (fwd + input-gradient bwd), actor fwd + bwd."""
    critic = (obs + act) * hidden + hidden * hidden + hidden  # MACs per sample, one critic
    actor = obs * hidden + hidden * hidden + hidden * 2 * act
    macs = 3 * 2 * critic + (actor + 2 * critic) + (actor + 2 * 2 * critic + 2 * actor)
    return 2.0 * batch * macs


def random_batch(device: torch.device, n: int = 256) -> Batch:
    """A SAC batch of Hopper's shapes (its values do not matter to the timing)."""
    return Batch(
        torch.randn(n, OBS, device=device),
        torch.rand(n, ACT, device=device) * 2 - 1,
        torch.randn(n, device=device),
        torch.randn(n, OBS, device=device),
        torch.zeros(n, device=device),
    )


def bench_sac(device: torch.device, repeats: int) -> float:
    sac = SAC(OBS, ACT, -torch.ones(ACT), torch.ones(ACT), device=device)
    batch = random_batch(device)
    return timed(lambda: sac.update(batch), repeats, device)


def bench_sac_matmuls(device: torch.device, repeats: int) -> float:
    """Seconds of one SAC update's matrix products alone: every mm/addmm/bmm/baddbmm call of a
    real update is recorded (same shapes and memory layouts) and replayed back to back. What an
    update with zero cost around its GEMMs would take on this machine's BLAS, a floor that,
    unlike the FLOP floor, counts how efficiently these small shapes run."""
    from torch.utils._python_dispatch import TorchDispatchMode

    products = {torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm, torch.ops.aten.baddbmm}
    calls = []

    class RecordProducts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in products:
                calls.append((func, args, kwargs or {}))
            return func(*args, **(kwargs or {}))

    sac = SAC(OBS, ACT, -torch.ones(ACT), torch.ones(ACT), device=device)
    batch = random_batch(device)
    sac.update(batch)  # the first Adam step goes through Optimizer.step: record a later one
    with RecordProducts():
        sac.update(batch)

    def replay() -> None:
        for func, args, kwargs in calls:
            func(*args, **kwargs)

    return timed(replay, repeats, device)


def bench_ensemble_epoch(device: torch.device, stored: int) -> float:
    model = GaussianEnsemble(OBS, ACT).to(device)
    inputs = torch.randn(stored, OBS + ACT, device=device)
    targets = torch.randn(stored, OBS + 1, device=device)
    c = DynaConfig()
    optimizer = make_adam(model.parameters(), c.model_lr)

    def one_epoch() -> None:
        fit_ensemble(model, optimizer, inputs, targets, **{**fit_settings(c), "max_epochs": 1})

    return timed(one_epoch, 2, device)


def bench_rollout_step(device: torch.device, states: int) -> float:
    model = GaussianEnsemble(OBS, ACT).to(device)
    sac = SAC(OBS, ACT, -torch.ones(ACT), torch.ones(ACT), device=device)
    obs = torch.randn(states, OBS, device=device)
    from usbpo_cli.envs.termination import termination_fn

    done_fn, _ = termination_fn(ENV)

    def step() -> None:
        with torch.no_grad():
            act = act_in_passes(sac, obs)
            _, next_obs = model.sample_step(obs, act)
            done_fn(obs, act, next_obs)

    return timed(step, 3, device)


def random_dataset(stored: int) -> list[tuple]:
    """`stored` Hopper transitions under a uniformly random policy (seeded)."""
    from usbpo_cli.envs.tasks import make_env

    env = make_env(ENV, seed=0)
    env.action_space.seed(0)
    obs, rows = env.reset(seed=0)[0], []
    for _ in range(stored):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, float(reward), next_obs, float(terminated)))
        obs = env.reset()[0] if terminated or truncated else next_obs
    return rows


def conditioned_agent(
    agent_cls,
    config: DynaConfig,
    data: list[tuple],
    device: torch.device,
    shared: dict,
    warmup_epochs: int | None,
    whole_block: bool = False,
):
    """An agent in the state a run is in just before a model training in steady state.

    Its real buffer holds `data`. Its model (shared between the agents compared, so both start
    from the same one) has been trained from scratch (for up to `warmup_epochs` epochs; None:
    to convergence) and rolled out, then the agent takes `BLOCK` env steps with its policy and
    no learning, so the timed training is a warm-started one with a block of new data, as every
    training after a run's first is. With `whole_block` it runs one whole untimed block of the
    unchanged loop instead (its first training from scratch to convergence): what mbrl-lib's
    anchor does before the block it times.
    """
    config = dataclasses.replace(config, initial_steps=0, eval_episodes=0)

    def new_agent():
        fresh = agent_cls(ENV, config, seed=0, total_steps=len(data) + 2 * BLOCK, device=device)
        store([fresh.real_buffer], data)
        return fresh

    agent = new_agent()
    if whole_block:
        run_block(agent, BLOCK)
        agent.timers.pop()
        return agent
    if "model" not in shared:  # trained once, by an agent of its own, for all compared agents
        trainer = new_agent()
        trainer.config = dataclasses.replace(config, model_max_epochs=warmup_epochs)
        trainer.train_model_and_roll_out(0)
        shared["model"] = copy.deepcopy(trainer.model.state_dict())
        shared["model_opt"] = copy.deepcopy(trainer.model_opt.state_dict())
        del trainer
    agent.model.load_state_dict(shared["model"])
    agent.model_opt.load_state_dict(shared["model_opt"])
    same_random_stream()
    agent.rollout(0)
    agent.should_train_model = lambda step: False
    agent.learn = lambda step: None
    run_block(agent, BLOCK)
    del agent.should_train_model, agent.learn  # back to the class's methods
    agent.timers.pop()
    return agent


def same_random_stream(seed: int = 1) -> None:
    """Reseed before each compared agent's shared steps, so that MBPO and USB-PO, in the same
    state, draw the same numbers and their phase-1 trainings differ only by floating-point
    round-off (which early stopping can still turn into a different epoch count: hence the
    ratio with phase 1 counted equal)."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def run_block(agent, steps: int) -> tuple[float, dict[str, float]]:
    """Seconds for `steps` env steps of the unchanged loop (every seed of the agent), and the
    first seed's own per-phase seconds."""
    agent.total_steps = steps
    seeds = agent.n_seeds
    agent.loops = [None] * seeds
    with tempfile.TemporaryDirectory() as folder:
        loggers = [CsvLogger(Path(folder) / f"seed{s}.csv") for s in range(seeds)]
        start = time.perf_counter()
        agent.train(loggers, [no_report] * seeds, [None] * seeds)
        seconds = time.perf_counter() - start
        for logger in loggers:
            logger.close()
        rows = [pd.read_csv(Path(folder) / f"seed{s}.csv").iloc[-1] for s in range(seeds)]
    row = rows[0]
    phases = {c[2:]: float(row[c]) for c in TIMING_COLUMNS if c in row and pd.notna(row[c])}
    if "model_epochs" in row and pd.notna(row["model_epochs"]):
        phases["phase1_epochs"] = float(row["model_epochs"])
        # a group's phase 1 runs until its last seed stops, computing only the seeds still
        # training: the longest training sets its length, the sum over seeds its work
        phases["phase1_epochs_max"] = max(float(r["model_epochs"]) for r in rows)
        phases["phase1_epochs_sum"] = sum(float(r["model_epochs"]) for r in rows)
    return seconds, phases


def store(buffers, data: list[tuple]) -> None:  # noqa: ANN001 (ReplayBuffers)
    """Add every transition of `data` to each of `buffers`."""
    for obs, action, reward, next_obs, terminated in data:
        for buffer in buffers:
            buffer.add(
                torch.as_tensor(obs), torch.as_tensor(action), reward, torch.as_tensor(next_obs),
                terminated,
            )  # fmt: skip


def bench_loop(agent, quick: bool) -> dict[str, float]:
    """Steady-state env steps/s of the whole loop.

    Full mode times one whole 250-step block of the unchanged loop: a warm-started model
    training to convergence (phase 1, and phase 2 for USB-PO), a rollout, then 250 env steps
    with G updates each. Quick mode times the same parts separately (the training capped at
    QUICK_MAX_EPOCHS epochs, then a 25-step stretch of the loop) and composes the block:
    250 / (training + rollout + 250 x seconds per loop step).
    """
    same_random_stream(2)
    if not quick:
        seconds, phases = run_block(agent, BLOCK)
        return {"steps_per_s": BLOCK / seconds, "block_s": seconds, **phases}
    agent.config = dataclasses.replace(agent.config, model_max_epochs=QUICK_MAX_EPOCHS)
    start = time.perf_counter()
    agent.train_model_and_roll_out(0)
    model_s = time.perf_counter() - start
    agent.should_train_model = lambda step: False
    stretch = 25
    seconds, _ = run_block(agent, stretch)
    block_s = model_s + BLOCK * seconds / stretch
    return {
        "steps_per_s": BLOCK / block_s,
        "block_s": block_s,
        "model training + rollout": model_s,
        f"{BLOCK} loop steps": BLOCK * seconds / stretch,
    }


def run_anchor(
    loop_steps: int, stored: int = 1_000, schedule: tuple[int, int, int, int] | None = None
) -> dict | None:
    """mbrl-lib's MBPO at the paper settings, in its own venv, timed at a stage: `stored` steps
    of its initial exploration, one untimed block of its loop (its first model training, from
    scratch), then the timed block, as our stages do. `schedule` replaces its rollout schedule
    (min epoch, max epoch, min length, max length, in its own convention). Only the anchor stage
    (1000 stored, its own schedule) is cached for --quick."""
    if not ANCHOR.exists():
        print(f"mbrl-lib anchor not found at {ANCHOR}: no mbrl-lib figure, no ratio to it")
        return None
    overrides = [f"algorithm.initial_exploration_steps={stored}"]
    if schedule is not None:
        overrides.append(f"overrides.rollout_schedule=[{','.join(map(str, schedule))}]")
    result = subprocess.run(
        ["bash", str(ANCHOR), "paper", str(loop_steps), *overrides], capture_output=True, text=True
    )
    if result.returncode != 0:
        print(f"mbrl-lib anchor failed: {result.stderr.strip()[-300:]}")
        return None
    steps = re.search(r"steady env steps/s: ([0-9.]+)", result.stdout)
    sac = re.search(r"ms per SAC update: ([0-9.]+)", result.stdout)
    anchor = {
        "steps_per_s": float(steps.group(1)) if steps else float("nan"),
        "sac_ms": float(sac.group(1)) if sac else float("nan"),
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "stored": stored,
    }
    if stored == 1_000 and schedule is None:
        ANCHOR_CACHE.parent.mkdir(parents=True, exist_ok=True)
        ANCHOR_CACHE.write_text(json.dumps(anchor) + "\n")
    return anchor


def cached_anchor() -> dict | None:
    try:
        return json.loads(ANCHOR_CACHE.read_text())
    except (OSError, ValueError):
        return None


def profile_update(device: torch.device) -> None:
    """Where the time of one SAC update and one ensemble minibatch goes (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    sac = SAC(OBS, ACT, -torch.ones(ACT), torch.ones(ACT), device=device)
    batch = random_batch(device)
    model = GaussianEnsemble(OBS, ACT).to(device)
    inputs = torch.randn(5000, OBS + ACT, device=device)
    targets = torch.randn(5000, OBS + 1, device=device)
    optimizer = make_adam(model.parameters(), 1e-3)
    settings = {**fit_settings(DynaConfig()), "max_epochs": 1}
    for label, fn in (
        ("SAC update x50", lambda: [sac.update(batch) for _ in range(50)]),
        (
            "ensemble epoch, 5k rows",
            lambda: fit_ensemble(model, optimizer, inputs, targets, **settings),
        ),
    ):
        fn()
        activities = [ProfilerActivity.CPU] + (
            [ProfilerActivity.CUDA] if device.type == "cuda" else []
        )
        with profile(activities=activities) as prof:
            fn()
        print(f"--- profile: {label}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


# ------------------------------------------------------------------------------ grid stage
GRID_STAGES = {  # stage: (random transitions stored, rollout schedule)
    "early": (5_000, None),  # the paper's Hopper schedule (length 1 this early)
    "late": (50_000, (0, 0, 15, 15)),
}
# mbrl-lib's rollout schedule at each grid stage, in its convention (x is its epoch + 1, and
# min x = max x divides by zero there): its own Hopper schedule early (also length 1), 15 late.
GRID_ANCHOR_SCHEDULES = {"early": None, "late": (0, 1, 15, 15)}
GRID_ALGOS = {"MBPO": (MBPOAgent, DynaConfig), "USB-PO": (USBPOAgent, USBPOConfig)}


# --grid --smoke: a seconds-long run of the same code at toy sizes (for a test that it works).
SMOKE = {
    "rollout_batch_size": 500,
    "updates_per_step": 2,
    "model_hidden_size": 32,
    "hidden_size": 32,
    "model_max_epochs": 2,
    "phase2_max_steps": 3,
}


MEMORY_ONLY = {"model_max_epochs": 2, "phase2_max_steps": 2}


def state_path(states: Path, stage: str, algo: str, seed: int) -> Path:
    """Where `--states` keeps seed `seed`'s conditioned state for (`stage`, `algo`)."""
    return states / f"{stage}_{algo}_seed{seed}.pt"


def grid_worker(
    algo: str,
    stage: str,
    seeds: int,
    device: torch.device,
    precision: str,
    smoke: bool = False,
    memory_only: bool = False,
    states: Path | None = None,
    first_seed: int = 0,
    condition: bool = False,
    compiled: bool = False,
) -> dict:
    """In a fresh process: one agent of `seeds` seeds (1: a lone run) in the anchor's state at
    `stage`, then one timed block; total env steps/s over its seeds and this process's peak
    memory. Seeds are numbered from `first_seed`. With `states` it loads each seed's state
    from there (written by a `condition` call, which conditions, saves and times nothing)
    instead of conditioning the agent itself. `compiled`: SAC's update through torch.compile,
    compiled before the timed block (its one-off compile time is not timed)."""
    cls, config_cls = GRID_ALGOS[algo]
    stored, schedule = GRID_STAGES[stage]
    # --memory: every buffer, network and rollout at full size, but blocks of one env step
    # and trainings of two epochs (and two phase-2 steps): the peak, not the time
    block = 20 if smoke else 1 if memory_only else BLOCK
    stored = 400 if smoke else stored
    hopper = dict(PAPER_TASKS["Hopper"])
    if schedule is not None:
        hopper["rollout_schedule"] = schedule
    hopper.update(SMOKE if smoke else {})
    hopper.update(MEMORY_ONLY if memory_only else {})
    known = {f.name for f in dataclasses.fields(config_cls)}
    hopper = {k: v for k, v in hopper.items() if k in known}
    config = dataclasses.replace(config_cls(), **hopper, initial_steps=0, eval_episodes=0)
    agent = cls(
        ENV,
        config,
        seed=list(range(first_seed, first_seed + seeds)),
        total_steps=stored + 2 * block,
        device=device,
        precision=precision,
        compiled=compiled,
    )
    if states is not None and not condition:

        def load_states() -> None:
            for index in range(seeds):
                path = state_path(states, stage, algo, first_seed + index)
                agent.load_state_dict(load_checkpoint(path), index)

        load_states()
        if compiled:  # compile with one update, then put back every state it changed
            agent.update_policy(1)
            load_states()
    else:
        store(agent.real_buffers.buffers, random_dataset(stored))
        same_random_stream()
        began = time.perf_counter()
        run_block(agent, block)  # untimed: the first training, from scratch
        if condition:
            assert states is not None
            for index in range(seeds):
                path = state_path(states, stage, algo, first_seed + index)
                torch.save(agent.state_dict(index), path)
            return {"conditioned": seeds, "seconds": time.perf_counter() - began}
    same_random_stream(2)
    seconds, phases = run_block(agent, block)
    epochs = {k: v for k, v in phases.items() if k.startswith("phase1_epochs")}
    return {
        "env_steps_per_s": seeds * block / seconds,
        # each row holds its seed's share of the process's phase times: S shares make the whole
        "phase_s": {k: v * seeds for k, v in phases.items() if k not in epochs},
        **epochs,
        "block": block,
        "block_s": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mb": (
            torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
        ),
    }


def spawn_worker(
    algo: str,
    stage: str,
    seeds: int,
    args: argparse.Namespace,
    threads: int,
    first_seed: int = 0,
    condition: bool = False,
):
    command = [sys.executable, __file__, "--grid-worker", algo, stage, str(seeds)]
    command += ["--device", args.device, "--precision", args.precision, "--threads", str(threads)]
    command += ["--first-seed", str(first_seed)]
    command += ["--smoke"] if args.smoke else []
    command += ["--memory"] if args.memory else []
    command += ["--states", str(args.states)] if args.states else []
    command += ["--condition"] if condition else []
    command += ["--compiled"] if args.compiled else []
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(process: subprocess.Popen) -> dict:
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"grid worker failed: {err.strip()[-500:]}")
    return json.loads(out.strip().splitlines()[-1])


def condition_states(args: argparse.Namespace, threads: int) -> None:
    """`--states DIR`: make sure DIR holds every seed's conditioned state for each stage and
    algorithm (one untimed block of all S seeds as one agent, in the first precision asked
    for), so that every timed configuration starts from the same states and none trains its
    models from scratch again. At the late stage that training (50k transitions, to
    convergence) is most of a configuration's time: the grid's three configurations would
    repeat it for 11 seeds per algorithm and precision, where this does it for S, once."""
    args.states.mkdir(parents=True, exist_ok=True)
    precision = args.precision.split(",")[0]
    for stage in args.stages.split(","):
        for algo in args.algos.split(","):
            record = args.states / f"{stage}_{algo}.json"
            if record.exists():
                made = json.loads(record.read_text())
                if made["seeds"] >= args.seeds and made["smoke"] == args.smoke:
                    print(
                        f"{stage} {algo}: states of {made['seeds']} seeds from {record} "
                        f"(conditioned in {made['precision']}, {made['made']})"
                    )
                    continue
            run = argparse.Namespace(**{**vars(args), "precision": precision, "compiled": False})
            result = collect(spawn_worker(algo, stage, args.seeds, run, threads, condition=True))
            made = {
                "seeds": args.seeds,
                "smoke": args.smoke,
                "precision": precision,
                "made": time.strftime("%Y-%m-%d %H:%M"),
                "minutes": round(result["seconds"] / 60, 1),
            }
            record.write_text(json.dumps(made) + "\n")
            print(
                f"{stage} {algo}: conditioned {args.seeds} seeds as one agent in {precision} "
                f"({made['minutes']} min, untimed) into {args.states}"
            )


def grid_stage(args: argparse.Namespace) -> dict[str, float]:
    """The grid figures (see the module docstring), printed and returned."""
    from usbpo_cli.util.precision import check_precision

    precisions = args.precision.split(",")
    for precision in precisions:
        check_precision(precision, torch.device(args.device))
    compiles = compile_modes(args)
    cores = usable_cores()
    figures: dict[str, float] = {}
    seeds = args.seeds
    print(
        f"grid stage: {seeds} seeds of {ENV}, paper preset, {args.precision}, compile "
        f"{args.compile}, {cores} cores, freed memory kept: {keep_freed_memory()}"
    )
    if args.states:
        condition_states(args, cores)
        if args.condition_only:
            return figures
    # mbrl-lib's single run, first, so that a grid cut short still has its yardsticks: at its
    # anchor stage (1000 stored: the stage of the per-seed ratios of earlier sections) and at
    # each grid stage, conditioned as ours are (the stored transitions of its own initial
    # exploration, one untimed block, then the timed one); the grid is judged against the latter
    stages, algos = args.stages.split(","), args.algos.split(",")
    anchors: dict[str, dict] = {}
    for stage in [] if args.no_anchor or args.smoke else ["anchor", *stages]:
        stored, _ = GRID_STAGES.get(stage, (1_000, None))
        anchor = run_anchor(2 * BLOCK, stored, GRID_ANCHOR_SCHEDULES.get(stage))
        if anchor:
            anchors[stage] = anchor
            figures[f"anchor_{stage}_steps_per_s"] = anchor["steps_per_s"]
            print(
                f"mbrl-lib MBPO, one run at the {stage} stage ({stored} stored; measured in "
                f"this run): {anchor['steps_per_s']:.2f} env steps/s"
            )
    if "anchor" in anchors:  # the key earlier runs wrote
        figures["anchor_steps_per_s"] = anchors["anchor"]["steps_per_s"]
    for precision, compiled, stage, algo in itertools.product(precisions, compiles, stages, algos):
        run = argparse.Namespace(**{**vars(args), "precision": precision, "compiled": compiled})
        lone = collect(spawn_worker(algo, stage, 1, run, cores))
        grouped = collect(spawn_worker(algo, stage, seeds, run, cores))
        began = time.perf_counter()
        per_process = max(1, cores // seeds)
        processes = [spawn_worker(algo, stage, 1, run, per_process, seed) for seed in range(seeds)]
        results = [collect(process) for process in processes]
        wall = time.perf_counter() - began
        # the S processes' grid rate: every seed's timed block, over the span they shared
        # (each process's conditioning block is excluded by taking the slowest timed block)
        parallel = seeds * results[0]["block"] / max(r["block_s"] for r in results)
        # fp32 keeps the keys it always had; other precisions are named in theirs
        key = f"grid_{stage}_{algo}" + ("" if precision == "fp32" else f"_{precision}")
        key += "_compiled" if compiled else ""
        label = f"{precision}{' compiled' if compiled else ''}"
        figures.update(
            {
                f"{key}_vectorised": grouped["env_steps_per_s"],
                f"{key}_processes": parallel,
                f"{key}_single": lone["env_steps_per_s"],
                f"{key}_memory_per_seed_ratio": grouped["peak_rss_mb"]
                / seeds
                / lone["peak_rss_mb"],
            }
        )
        print(
            f"{label} {stage} {algo}: {seeds} seeds as one agent "
            f"{grouped['env_steps_per_s']:.2f} env steps/s; as {seeds} processes {parallel:.2f} "
            f"({wall:.0f} s in all); one seed alone {lone['env_steps_per_s']:.2f}; "
            f"memory per seed as one agent "
            f"{grouped['peak_rss_mb'] / seeds:.0f} MB vs {lone['peak_rss_mb']:.0f} MB alone "
            f"({figures[f'{key}_memory_per_seed_ratio']:.2f}x)"
        )
        for name, result in (
            ("one agent", grouped),
            ("one seed alone", lone),
            ("process 0", results[0]),
        ):
            parts = ", ".join(f"{k} {v:.1f}" for k, v in result["phase_s"].items())
            longest = result.get("phase1_epochs_max", float("nan"))
            summed = result.get("phase1_epochs_sum", float("nan"))
            print(
                f"  {name}: block {result['block_s']:.1f} s = {parts}; "
                f"phase-1 epochs {longest:.0f} (max over seeds), {summed:.0f} (sum)"
            )
            for k, v in result["phase_s"].items():
                figures[f"{key}_{name.replace(' ', '_')}_{k}_s"] = v
        summed = sum(r.get("phase1_epochs_sum", float("nan")) for r in results)
        print(f"  {seeds} processes: phase-1 epochs {summed:.0f} (sum over processes)")
        for where, anchor in (
            ("its anchor stage", anchors.get("anchor")),
            ("this stage", anchors.get(stage)),
        ):
            if not anchor:
                continue
            suffix = "_over_anchor" if where == "its anchor stage" else "_over_anchor_same_stage"
            ratio = figures[f"{key}{suffix}"] = grouped["env_steps_per_s"] / anchor["steps_per_s"]
            best = max(grouped["env_steps_per_s"], parallel) / anchor["steps_per_s"]
            print(
                f"{key}: {ratio:.2f}x mbrl-lib's single-run env steps/s at {where} as one "
                f"agent, {parallel / anchor['steps_per_s']:.2f}x as {seeds} processes "
                f"(best {best:.2f}x)"
            )
    return figures


def compile_modes(args: argparse.Namespace) -> list[bool]:
    """`--compile off|on|off,on` as the modes to time, each checked to work here (refused, as
    `usbpo` refuses it, where torch.compile cannot build kernels)."""
    from usbpo_cli.util.compiler import check_compile

    modes = args.compile.split(",")
    if not modes or set(modes) - {"off", "on"}:
        raise SystemExit(f"--compile {args.compile}: off, on, or off,on")
    if "on" in modes:
        check_compile(torch.device(args.device))
    return [mode == "on" for mode in modes]


def memory_stage(args: argparse.Namespace) -> dict[str, float]:
    """`--grid --memory`: issue 15's memory target alone. Peak resident memory per seed of S
    seeds as one agent against one seed alone, each in a fresh process, at the grid's stages
    (every buffer, network and rollout at the paper preset's size; trainings cut to two epochs
    and blocks to one env step, which change the time, not the peak)."""
    threads = args.threads or usable_cores()
    figures: dict[str, float] = {}
    print(f"memory: {args.seeds} seeds of {ENV} as one agent vs one seed alone, paper preset")
    for stage in args.stages.split(","):
        for algo in args.algos.split(","):
            lone = collect(spawn_worker(algo, stage, 1, args, threads))["peak_rss_mb"]
            grouped = collect(spawn_worker(algo, stage, args.seeds, args, threads))["peak_rss_mb"]
            ratio = grouped / args.seeds / lone
            figures[f"memory_{stage}_{algo}_per_seed_ratio"] = ratio
            print(
                f"{stage} {algo}: {grouped:.0f} MB for {args.seeds} seeds as one agent "
                f"({grouped / args.seeds:.0f} MB per seed), {lone:.0f} MB one seed alone: "
                f"{ratio:.2f}x per seed"
            )
    return figures


def scaling_stage(args: argparse.Namespace) -> dict[str, float]:
    """`--scaling 1,5,20`: the seed axis alone, S seeds trained as one agent for each S (one
    fresh process each), as total env steps/s and per-seed rate against S = 1. The GPU target
    of issue 15: at S = 20 each seed at least half as fast as one seed alone, so the grid runs
    at least 10x the throughput of one seed per process taking turns on the device."""
    from usbpo_cli.util.precision import check_precision

    check_precision(args.precision, torch.device(args.device))
    args.compiled = compile_modes(args) == [True]
    threads = args.threads or usable_cores()
    counts = [int(part) for part in args.scaling.split(",")]
    if not counts or min(counts) < 1 or counts[0] != 1:
        raise SystemExit("--scaling: seed counts starting with 1, e.g. 1,5,20")
    print(
        f"scaling: {ENV}, paper preset, {args.precision}, compile {args.compile}, "
        f"device {args.device}, S = {counts}"
    )
    figures: dict[str, float] = {}
    for stage in args.stages.split(","):
        for algo in args.algos.split(","):
            alone = None
            for seeds in counts:
                result = collect(spawn_worker(algo, stage, seeds, args, threads))
                rate = result["env_steps_per_s"]
                alone = rate if seeds == 1 else alone
                key = f"scaling_{stage}_{algo}_S{seeds}"
                figures[key] = rate
                figures[f"{key}_per_seed_vs_S1"] = rate / seeds / alone
                print(
                    f"{stage} {algo} S={seeds}: {rate:.2f} env steps/s in all, per seed "
                    f"{rate / seeds / alone:.2f}x one seed alone, grid {rate / alone:.1f}x one "
                    f"seed per process in turn; peak memory {result['peak_rss_mb']:.0f} MB "
                    f"(CUDA {result['peak_cuda_mb']:.0f} MB)"
                )
                figures[f"{key}_peak_cuda_mb"] = result["peak_cuda_mb"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute: parts, not blocks")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-anchor", action="store_true", help="skip mbrl-lib")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler tables")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--grid", action="store_true", help="the grid stage only (issue 15)")
    parser.add_argument("--seeds", type=int, default=5, help="--grid: seeds of the grid")
    parser.add_argument("--stages", default="early,late", help="--grid: early, late or both")
    parser.add_argument(
        "--precision",
        default="fp32",
        help="--grid: fp32, bf16, or fp32,bf16 side by side (not with --scaling, --memory)",
    )
    parser.add_argument(
        "--compile",
        default="off",
        help="--grid: SAC's update through torch.compile: off, on, or off,on side by side "
        "(--scaling takes one)",
    )
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--algos", default="MBPO,USB-PO", help="--grid: MBPO, USB-PO or both")
    parser.add_argument("--grid-worker", nargs=3, metavar=("ALGO", "STAGE", "SEEDS"))
    parser.add_argument("--first-seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--condition", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--states",
        type=Path,
        help="--grid: condition each seed once into this folder (reused when there) and "
        "start every timed configuration from those states",
    )
    parser.add_argument(
        "--condition-only", action="store_true", help="--grid --states: condition, time nothing"
    )
    parser.add_argument("--smoke", action="store_true", help="--grid at toy sizes (a test)")
    parser.add_argument(
        "--memory", action="store_true", help="--grid: per-seed peak memory only (minutes)"
    )
    parser.add_argument(
        "--scaling", help="--grid: only the seed axis, at these seed counts (e.g. 1,5,20)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # as an agent of the tool would (usbpo_cli/util/allocator.py; a bad USBPO_KEEP_FREED_MEMORY
    # is refused here, for every mode); mbrl-lib's process is left as it is
    malloc = keep_freed_memory()
    if args.grid_worker:
        algo, stage, seeds = args.grid_worker
        result = grid_worker(
            algo,
            stage,
            int(seeds),
            torch.device(args.device),
            args.precision,
            args.smoke,
            args.memory,
            args.states,
            args.first_seed,
            args.condition,
            args.compiled,
        )
        print(json.dumps(result))
        return
    if args.grid:
        if (args.memory or args.scaling) and "," in args.precision:
            parser.error("--scaling and --memory take one --precision: fp32 or bf16")
        if args.scaling and "," in args.compile:
            parser.error("--scaling takes one --compile: off or on")
        if (args.memory or args.scaling) and args.states:
            parser.error("--states is for the grid figures, not --scaling or --memory")
        if set(args.algos.split(",")) - set(GRID_ALGOS):
            parser.error(f"--algos: a comma-separated list of {', '.join(GRID_ALGOS)}")
        if args.condition_only and not args.states:
            parser.error("--condition-only needs --states DIR")
        if args.memory:
            figures = memory_stage(args)
        else:
            figures = scaling_stage(args) if args.scaling else grid_stage(args)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return
    device = torch.device(args.device)
    torch.manual_seed(0)
    began = time.perf_counter()
    figures: dict[str, float] = {}
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"freed memory kept: {malloc}"
    )

    gflops = matmul_gflops(device)
    figures["matmul_gflops"] = gflops
    print(f"fp32 matmul (1024^3): {gflops:.1f} GFLOP/s")

    sac_s = bench_sac(device, 50 if args.quick else 300)
    floor_s = sac_update_flops(OBS, ACT, 256, 256) / (gflops * 1e9)
    figures.update(sac_update_ms=sac_s * 1e3, sac_floor_ms=floor_s * 1e3)
    print(
        f"SAC update (batch 256, 256x256, twin critics): {sac_s * 1e3:.2f} ms; FLOP floor "
        f"{floor_s * 1e3:.2f} ms; ratio {sac_s / floor_s:.2f}x"
    )
    matmul_s = bench_sac_matmuls(device, 50 if args.quick else 300)
    figures["sac_matmuls_only_ms"] = matmul_s * 1e3
    print(
        f"  its matrix products alone (recorded from an update, replayed): {matmul_s * 1e3:.2f} "
        f"ms = {matmul_s / floor_s:.2f}x the FLOP floor; the rest of the update: "
        f"{(sac_s - matmul_s) * 1e3:.2f} ms"
    )
    if args.profile:
        profile_update(device)

    for stored in (10_000,) if args.quick else (10_000, 50_000, 100_000):
        seconds = bench_ensemble_epoch(device, stored)
        figures[f"ensemble_epoch_ms_{stored}"] = seconds * 1e3
        print(f"ensemble training epoch at {stored // 1000}k transitions: {seconds * 1e3:.0f} ms")

    states = 100_000
    seconds = bench_rollout_step(device, states)
    figures["rollout_step_ms"] = seconds * 1e3
    print(f"model rollout step, {states // 1000}k states: {seconds * 1e3:.0f} ms")

    hopper = dict(PAPER_TASKS["Hopper"])
    # stage: (random transitions stored, rollout schedule, whole untimed block first).
    # "anchor" is mbrl-lib's timed stage: 1000 random steps and one block of the loop before the
    # timed one (--quick conditions it the cheap way instead and keeps only this stage).
    schedule = hopper["rollout_schedule"]
    if args.quick:
        stages = {"anchor": (1_000, schedule, False)}
    else:
        stages = {
            "anchor": (1_000, schedule, True),
            "early": (5_000, schedule, False),
            "late": (50_000, (0, 0, 15, 15), False),
        }
    for stage, (stored, schedule, whole_block) in stages.items():
        data, shared = random_dataset(stored), {}
        if args.quick:
            print(f"(--quick: timed model trainings capped at {QUICK_MAX_EPOCHS} epochs)")
        results: dict[str, dict[str, float]] = {}
        for name, cls, config_cls in (
            ("MBPO", MBPOAgent, DynaConfig),
            ("USB-PO", USBPOAgent, USBPOConfig),
        ):
            config = dataclasses.replace(config_cls(), **{**hopper, "rollout_schedule": schedule})
            agent = conditioned_agent(
                cls, config, data, device, shared, WARMUP_EPOCHS[args.quick], whole_block
            )
            result = results[name] = bench_loop(agent, args.quick)
            figures[f"loop_{stage}_{name}"] = result["steps_per_s"]
            parts = ", ".join(
                f"{k} {v:.1f} s"
                for k, v in result.items()
                if k not in ("steps_per_s", "block_s", "phase1_epochs")
            )
            if "phase1_epochs" in result:
                parts += f"; phase 1 ran {result['phase1_epochs']:.0f} epochs"
            print(
                f"whole loop {stage} ({stored // 1000}k stored, rollout length {schedule[2]}"
                f"{'' if schedule[2] == schedule[3] else '-' + str(schedule[3])}) {name}: "
                f"{result['steps_per_s']:.2f} env steps/s ({result['block_s']:.1f} s per "
                f"{BLOCK}-step block: {parts})"
            )
        ratio = figures[f"loop_{stage}_MBPO"] / figures[f"loop_{stage}_USB-PO"]
        figures[f"usbpo_over_mbpo_walltime_{stage}"] = ratio
        print(f"USB-PO / MBPO wall time ({stage}): {ratio:.2f}")
        if "model_phase2" in results["USB-PO"]:
            # Early stopping's epoch count can differ between the two blocks even from the same
            # state and random stream (bitwise equal sums would need a BLAS that promises them
            # across allocations; the 1% rule turns a last-bit difference into whole epochs),
            # so this ratio charges USB-PO with its phase 2 only, the work it adds to MBPO.
            mbpo_s = results["MBPO"]["block_s"]
            equal = (mbpo_s + results["USB-PO"]["model_phase2"]) / mbpo_s
            figures[f"usbpo_over_mbpo_equal_phase1_{stage}"] = equal
            print(f"USB-PO / MBPO wall time, phase 1 counted as MBPO's ({stage}): {equal:.2f}")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["peak_rss_mb"] = peak_mb
    print(f"peak memory (max RSS): {peak_mb:.0f} MB")
    if device.type == "cuda":
        figures["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        print(f"peak CUDA memory: {figures['peak_cuda_mb']:.0f} MB")

    anchor, anchor_note = None, "measured in this run"
    if not args.no_anchor:
        if args.quick:
            anchor, anchor_note = cached_anchor(), "cached from the last full run"
        else:
            anchor = run_anchor(2 * BLOCK)
    ours = figures["loop_anchor_MBPO"]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**figures, "anchor": anchor}, indent=2) + "\n")
    print(f"benchmark wall time: {time.perf_counter() - began:.0f} s")
    if anchor:
        print(
            f"mbrl-lib MBPO ({anchor_note}, {anchor.get('measured', '?')}): "
            f"{anchor['steps_per_s']:.2f} env steps/s, {anchor['sac_ms']:.1f} ms per SAC update"
        )
        print(
            "whole loop at the anchor's stage, ours (MBPO) / mbrl-lib: "
            f"{ours / anchor['steps_per_s']:.2f}x"
        )
    else:
        floor_steps = 1.0 / (hopper["updates_per_step"] * floor_s)
        print(
            "whole loop at the anchor's stage, ours (MBPO) / SAC FLOP floor: "
            f"{ours / floor_steps:.2f}"
        )


if __name__ == "__main__":
    try:
        main()
    except UsageError as error:  # a bad setting: one line, as the CLI gives it
        print(f"speed.py: {error}", file=sys.stderr)
        raise SystemExit(2) from None
