"""Speed benchmark at the paper preset for Hopper-v4, all figures from one process and one run.

Prints: the machine's fp32 matmul GFLOP/s; ms per SAC update and its ratio to the FLOP floor;
ms per ensemble training epoch at 10k/50k/100k stored transitions; ms per 100k-state model
rollout step; steady-state env steps/s of the whole loop for MBPO and USB-PO, early (5k stored
transitions) and late (50k stored, rollout length 15), and USB-PO's wall-time ratio to MBPO;
peak memory; and mbrl-lib's MBPO (`../shared/anchors/mbrl_lib/run.sh paper`) measured in the same
run, with the ratio ours/theirs. The last line is that ratio (or ours / FLOP floor without it).

usage: python benchmarks/speed.py [--quick] [--device cpu|cuda] [--no-anchor]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from baselines.mbpo import MBPOAgent
from usbpo_cli.buffers import Batch
from usbpo_cli.config import PAPER_TASKS, DynaConfig, USBPOConfig
from usbpo_cli.dyna import fit_settings
from usbpo_cli.ensemble import GaussianEnsemble, fit_ensemble
from usbpo_cli.runlog import CsvLogger
from usbpo_cli.sac import SAC, make_adam
from usbpo_cli.usbpo import USBPOAgent

ENV = "Hopper-v4"
OBS, ACT = 11, 3
ANCHOR = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "mbrl_lib" / "run.sh"
BLOCK = 250  # env steps between model trainings: one steady-state block of the loop


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


def bench_sac(device: torch.device, repeats: int) -> float:
    sac = SAC(OBS, ACT, -torch.ones(ACT), torch.ones(ACT), device=device)
    n = 256
    batch = Batch(
        *(
            t.to(device)
            for t in (
                torch.randn(n, OBS),
                torch.rand(n, ACT) * 2 - 1,
                torch.randn(n),
                torch.randn(n, OBS),
                torch.zeros(n),
            )
        )
    )
    return timed(lambda: sac.update(batch), repeats, device)


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
    from usbpo_cli.termination import termination_fn

    done_fn, _ = termination_fn(ENV)

    def step() -> None:
        with torch.no_grad():
            act = sac.act(obs)
            _, next_obs = model.sample_step(obs, act)
            done_fn(obs, act, next_obs)

    return timed(step, 3, device)


def bench_loop(
    agent_cls,
    config: DynaConfig,
    stored: int,
    device: torch.device,
    block: int,
    warmup_epochs: int | None = None,
) -> dict[str, float]:
    """Env steps/s of one steady block: a model training (warm-started), a rollout, and `block`
    env steps with G SAC updates each, on a real buffer pre-filled with `stored` random-policy
    Hopper transitions."""
    config = dataclasses.replace(config, initial_steps=0, eval_episodes=0)
    agent = agent_cls(ENV, config, seed=0, total_steps=stored + block, device=device)
    env, obs = agent.env, agent.env.reset(seed=0)[0]
    for _ in range(stored):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.real_buffer.add(
            torch.as_tensor(obs),
            torch.as_tensor(action),
            float(reward),
            torch.as_tensor(next_obs),
            float(terminated),
        )
        obs = env.reset()[0] if terminated or truncated else next_obs
    # Warm-up: the first training starts from scratch, later ones are warm-started.
    agent.config = dataclasses.replace(config, model_max_epochs=warmup_epochs)
    agent.train_model(0)
    agent.config = config
    agent.update_policy(10)
    agent.total_steps = block  # the buffer was sized for the pre-fill; now time one block
    agent.timers.pop()
    with tempfile.TemporaryDirectory() as folder:
        logger = CsvLogger(Path(folder) / "progress.csv")
        start = time.perf_counter()
        agent.train(logger)
        seconds = time.perf_counter() - start
        logger.close()
    return {"steps_per_s": block / seconds, "seconds": seconds}


def run_anchor(loop_steps: int) -> dict[str, float] | None:
    if not ANCHOR.exists():
        return None
    result = subprocess.run(
        ["bash", str(ANCHOR), "paper", str(loop_steps)], capture_output=True, text=True
    )
    if result.returncode != 0:
        print(f"mbrl-lib anchor failed: {result.stderr.strip()[-300:]}")
        return None
    steps = re.search(r"steady env steps/s: ([0-9.]+)", result.stdout)
    sac = re.search(r"ms per SAC update: ([0-9.]+)", result.stdout)
    return {
        "steps_per_s": float(steps.group(1)) if steps else float("nan"),
        "sac_ms": float(sac.group(1)) if sac else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute: smaller blocks")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-anchor", action="store_true", help="skip mbrl-lib")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    figures: dict[str, float] = {}
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")

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

    for stored in (10_000,) if args.quick else (10_000, 50_000, 100_000):
        seconds = bench_ensemble_epoch(device, stored)
        figures[f"ensemble_epoch_ms_{stored}"] = seconds * 1e3
        print(f"ensemble training epoch at {stored // 1000}k transitions: {seconds * 1e3:.0f} ms")

    states = 100_000
    seconds = bench_rollout_step(device, states)
    figures["rollout_step_ms"] = seconds * 1e3
    print(f"model rollout step, {states // 1000}k states: {seconds * 1e3:.0f} ms")

    hopper = {k: v for k, v in PAPER_TASKS["Hopper"].items()}
    block = 25 if args.quick else BLOCK
    stages = {"early": (5_000, hopper["rollout_schedule"])}
    if not args.quick:
        stages["late"] = (50_000, (0, 0, 15, 15))
    for stage, (stored, schedule) in stages.items():
        for name, cls, config_cls in (
            ("MBPO", MBPOAgent, DynaConfig),
            ("USB-PO", USBPOAgent, USBPOConfig),
        ):
            config = dataclasses.replace(config_cls(), **{**hopper, "rollout_schedule": schedule})
            result = bench_loop(
                cls, config, stored, device, block, warmup_epochs=10 if args.quick else None
            )
            figures[f"loop_{stage}_{name}"] = result["steps_per_s"]
            print(
                f"whole loop {stage} ({stored // 1000}k stored, schedule {schedule}) {name}: "
                f"{result['steps_per_s']:.2f} env steps/s ({result['seconds']:.0f} s "
                f"for {block} steps)"
            )
        ratio = figures[f"loop_{stage}_MBPO"] / figures[f"loop_{stage}_USB-PO"]
        figures[f"usbpo_over_mbpo_walltime_{stage}"] = ratio
        print(f"USB-PO / MBPO wall time ({stage}): {ratio:.2f}")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["peak_rss_mb"] = peak_mb
    print(f"peak memory (max RSS): {peak_mb:.0f} MB")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")

    anchor = None if (args.no_anchor or args.quick) else run_anchor(500)
    ours = figures["loop_early_MBPO"]
    if args.json:
        args.json.write_text(json.dumps({**figures, "anchor": anchor}, indent=2) + "\n")
    if anchor:
        print(
            f"mbrl-lib MBPO: {anchor['steps_per_s']:.2f} env steps/s, "
            f"{anchor['sac_ms']:.1f} ms per SAC update"
        )
        print(f"whole loop, early, ours (MBPO) / mbrl-lib: {ours / anchor['steps_per_s']:.2f}x")
    else:
        floor_steps = 1.0 / (hopper["updates_per_step"] * floor_s)
        print(f"whole loop, early, ours (MBPO) / SAC FLOP floor: {ours / floor_steps:.2f}")


if __name__ == "__main__":
    main()
