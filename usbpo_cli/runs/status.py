"""Time a person can plan by: a cost model that estimates a run before it starts, an ETA measured
on the current stage of a running run, a small status file each grid run keeps up to date, and a
grid ETA from those.

The cost model (README, "Time estimates") adds up, per run, the per-operation costs measured on
the reference machine (2 CPU cores, 2 torch threads, torch 2.13 CPU; benchmarks/RESULTS.md):
env steps, G policy updates per learning step, and for model-based algos each model training
(phase-1 epochs over the real data so far, USB-PO's phase-2 steps, the rollout), plus the
evaluations, scaled for a long CPU run by this machine's measured slowdown (calibration.py).
It is a planning figure, not a promise: once a run learns, its ETA is measured.

This module never imports torch.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# --- the cost model: seconds per operation on the reference machine (RESULTS.md) -----------------
ENV_STEP_S = 0.5e-3  # one real env step with the policy's action (IP15k run: 7 s / 15k steps)
EVAL_STEP_S = 0.3e-3  # one evaluation env step (deterministic action)
SAC_UPDATE_S = 5.0e-3  # one SAC update, 256x256 networks, batch 256 (4.3 ms bare, 5.0 in the loop)
SAC_UPDATE_BARE_S = 4.3e-3  # the same update alone, Hopper's shapes: what calibration.py times
MODEL_ROW_EPOCH_S = 42e-6  # one phase-1 epoch over one real transition, 7 x 4 x 200 ensemble
MODEL_EPOCHS = 17  # typical phase-1 epochs per training (RESULTS: 12-21)
PHASE2_STEP_S = 0.055  # one USB-PO phase-2 step on 1024 pairs
PHASE2_STEPS = 75  # typical phase-2 steps per training (RESULTS: 74 of at most 100)
ROLLOUT_STATE_STEP_S = 2.8e-6  # one model and policy step of one rollout state (278 ms / 100k)
ALM_FACTOR = 2.0  # an ALM update also trains encoder, latent model and classifier
PPO_STEP_S = 1.5e-3  # PPO per env step: the env, tiny networks, 10 epochs per 2048 steps
ONE_THREAD_FACTOR = 1.5  # one torch thread instead of two (RESULTS: 1.46-1.54x)
LONG_RUN_S = 2 * 3600  # a CPU run above this gets the cheaper choices printed first
# Above this reference estimate, a CPU run or grid times this machine first (calibration.py):
# a few policy updates cost a fraction of a second, against a run of minutes or more.
CALIBRATE_ABOVE_S = 10 * 60

STATUS_FILE = "status.json"


def _policy_update_s(config: dict[str, Any]) -> float:
    """One policy update: SAC_UPDATE_S scaled by the networks' width squared and the batch."""
    scale = (config.get("hidden_size", 256) / 256) ** 2 * config.get("batch_size", 256) / 256
    seconds = SAC_UPDATE_S * max(0.05, scale)
    return seconds * ALM_FACTOR if "alm_latent_dim" in config else seconds


def _rollout_length(config: dict[str, Any], step: int) -> int:
    """MBPO's linear rollout-length schedule (as dyna.DynaAgent.rollout_length_at)."""
    min_epoch, max_epoch, min_len, max_len = config["rollout_schedule"]
    epoch = max(0, step - config["initial_steps"]) // config["epoch_length"]
    if epoch <= min_epoch or max_epoch == min_epoch:
        return int(min_len)
    return int(
        min_len + min(1.0, (epoch - min_epoch) / (max_epoch - min_epoch)) * (max_len - min_len)
    )


def _model_seconds(config: dict[str, Any], start: int, steps: int) -> float:
    """Model trainings (phase 1, phase 2 for USB-PO) and rollouts from `start` to `steps`."""
    initial = config["initial_steps"]
    cmlo = "cmlo_alpha" in config
    # CMLO retrains on its event trigger, between cmlo_min_interval and cmlo_max_interval steps.
    every = (
        (config["cmlo_min_interval"] + config["cmlo_max_interval"]) // 2
        if cmlo
        else config["model_train_freq"]
    )
    width = (config.get("model_hidden_size", 200) / 200) ** 2
    epochs = min(MODEL_EPOCHS, config.get("model_max_epochs") or MODEL_EPOCHS)
    phase2 = 0.0
    if "phase2_max_steps" in config:
        steps2 = min(PHASE2_STEPS, config["phase2_max_steps"])
        phase2 = steps2 * PHASE2_STEP_S * config["phase2_batch_size"] / 1024 * width
    seconds = 0.0
    first = initial + max(0, math.ceil((start - initial) / every)) * every
    for step in range(max(first, initial), steps, every):
        rows = min(step, config.get("replay_size", step))
        seconds += epochs * rows * MODEL_ROW_EPOCH_S * width
        seconds += phase2 if step > initial else 0.0  # phase 2 is skipped on the first training
        if not (cmlo and config.get("cmlo_rollout_every_step")):
            states = config["rollout_batch_size"] * _rollout_length(config, step)
            seconds += states * ROLLOUT_STATE_STEP_S
    if cmlo and config.get("cmlo_rollout_every_step"):
        for step in range(max(start, initial), steps, config["epoch_length"]):
            span = min(config["epoch_length"], steps - step)
            states = config["cmlo_rollout_batch_size"] * _rollout_length(config, step) * span
            seconds += states * ROLLOUT_STATE_STEP_S
    return seconds


def estimate(
    config: dict[str, Any],
    steps: int,
    start: int = 0,
    threads: int = 2,
    episode_steps: int = 1000,
    slowdown: float | None = None,
) -> dict[str, float]:
    """Estimated wall seconds from env step `start` to `steps`: the random exploration part,
    the learning part, and their total. `config` is the resolved config as config.json holds
    it; `episode_steps` is the task's time limit (for evaluations). `slowdown` is this
    machine's seconds per reference-machine second at `threads` threads, as
    calibration.measure_slowdown times it; None prices the reference CPU (2 cores, with
    ONE_THREAD_FACTOR for one thread)."""
    if slowdown is not None:
        factor = slowdown
    else:
        factor = ONE_THREAD_FACTOR if threads == 1 else 1.0
    epoch = max(1, int(config.get("epoch_length", 1000)))
    evals = max(0, steps // epoch - start // epoch) + 1
    eval_s = evals * config.get("eval_episodes", 5) * episode_steps * EVAL_STEP_S
    if "ppo_num_steps" in config:  # on-policy: no random phase
        learning = (steps - start) * PPO_STEP_S + eval_s
        return {"random": 0.0, "learning": learning * factor, "total": learning * factor}
    initial = min(steps, config.get("initial_steps", 0))
    random_s = max(0, initial - start) * ENV_STEP_S
    learning_steps = max(0, steps - max(start, initial))
    learning = learning_steps * (
        ENV_STEP_S + config.get("updates_per_step", 1) * _policy_update_s(config)
    )
    if "model_train_freq" in config:
        learning += _model_seconds(config, max(start, initial), steps)
    random_s, learning = random_s * factor, (learning + eval_s) * factor
    return {"random": random_s, "learning": learning, "total": random_s + learning}


def episode_limit(env_id: str) -> int:
    """The task's time limit in env steps (1000 when gymnasium does not say)."""
    try:
        import gymnasium as gym

        return int(gym.spec(env_id).max_episode_steps or 1000)
    except Exception:  # an unknown id: the estimate is only a planning figure
        return 1000


def format_duration(seconds: float | None) -> str:
    """`2 h 05 min` (from 90 min on), `65 min`, `40 s`; `?` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# --- a running run's ETA -------------------------------------------------------------------------


class StageEta:
    """ETA of a run from the measured cost per env step of its current stage.

    The random-exploration stage is cheap (env steps only) and learning is expensive, so the
    rate across both would mislead. In the learning stage the ETA is the moving average of wall
    time per env step over the last `window` learning steps (at least `window // 2` of them
    measured), times the steps left; before that, and during random exploration, the learning
    steps left are priced by the cost model (`learning_step_s`).
    """

    def __init__(
        self,
        total: int,
        initial_steps: int,
        learning_step_s: float,
        window: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.initial = total, initial_steps
        self.learning_step_s, self.window, self.clock = learning_step_s, max(2, window), clock
        self.samples: deque[tuple[int, float]] = deque()
        self.learning = False

    def update(self, step: int, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        learning = step >= self.initial
        if learning != self.learning:
            self.samples.clear()
            self.learning = learning
        if self.samples and step < self.samples[-1][0]:  # a rollback: start measuring again
            self.samples.clear()
        self.samples.append((step, now))
        while len(self.samples) > 2 and self.samples[1][0] <= step - self.window:
            self.samples.popleft()

    def rate(self) -> float | None:
        """Measured seconds per env step in the current stage, None if too few steps yet."""
        if len(self.samples) < 2:
            return None
        (first_step, first_t), (last_step, last_t) = self.samples[0], self.samples[-1]
        needed = self.window // 2 if self.learning else min(50, self.window // 2)
        if last_step - first_step < needed:
            return None
        return (last_t - first_t) / (last_step - first_step)

    def seconds_left(self) -> tuple[float | None, str]:
        """(seconds, basis): basis is "measured" once the learning stage's own cost is known,
        else "estimate" (the cost model prices the learning steps still ahead)."""
        if not self.samples:
            return None, "estimate"
        step = self.samples[-1][0]
        rate = self.rate()
        if self.learning:
            if rate is not None:
                return (self.total - step) * rate, "measured"
            return (self.total - step) * self.learning_step_s, "estimate"
        random_left = max(0, min(self.initial, self.total) - step)
        random_s = random_left * (rate if rate is not None else 0.0)
        learning_left = max(0, self.total - max(step, self.initial))
        return random_s + learning_left * self.learning_step_s, "estimate"

    def text(self) -> str:
        seconds, basis = self.seconds_left()
        if seconds is None:
            return "eta ?"
        if basis == "measured":
            return f"eta {format_duration(seconds)}"
        return f"eta ~{format_duration(seconds)} (estimate)"


def eta_window(config: dict[str, Any]) -> int:
    """Learning steps the moving average spans: two model trainings (CMLO: two of its longest
    intervals), or 500 steps for model-free algos."""
    if "cmlo_max_interval" in config:
        return 2 * int(config["cmlo_max_interval"])
    if "model_train_freq" in config:
        return 2 * int(config["model_train_freq"])
    return 500


def stage_eta(
    config: dict[str, Any],
    steps: int,
    start: int,
    threads: int,
    env_id: str,
    slowdown: float | None = None,
) -> StageEta:
    """A StageEta for a run with this config, its learning steps priced by the cost model
    (scaled by `slowdown`, as in `estimate`)."""
    parts = estimate(config, steps, start, threads, episode_limit(env_id), slowdown)
    learning_steps = max(1, steps - max(start, config.get("initial_steps", 0)))
    initial = config.get("initial_steps", 0) if "ppo_num_steps" not in config else 0
    return StageEta(steps, initial, parts["learning"] / learning_steps, eta_window(config))


# --- status files: how a grid run tells the grid where it is -------------------------------------


def write_status(out: Path, status: dict[str, Any]) -> None:
    """`<run>/status.json`, replaced atomically (a reader never sees half of it)."""
    path = Path(out) / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(status) + "\n")
        os.replace(tmp, path)
    except OSError:  # progress display only: never fail a run for it
        tmp.unlink(missing_ok=True)


def read_status(out: Path) -> dict[str, Any] | None:
    try:
        status = json.loads((Path(out) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


class StatusReporter:
    """A run's `report` callback that keeps `<run>/status.json` current (at most every
    `every` seconds): env step, steps, phase, ETA and its basis. The run's config is read from
    its config.json on the first report (prepare_run has written it by then). `slowdown`
    scales the cost model's price of the steps not yet measured (see `estimate`)."""

    def __init__(
        self, out: Path, threads: int = 2, every: float = 2.0, slowdown: float | None = None
    ) -> None:
        self.out, self.threads, self.every = Path(out), threads, every
        self.slowdown = slowdown
        self.eta: StageEta | None = None
        self.steps = 0
        self.phase = "starting"
        self.last_write = -math.inf
        self.step = 0
        self.started = False

    def _start(self, step: int) -> None:
        try:
            payload = json.loads((self.out / "config.json").read_text())
            self.steps = int(payload["steps"])
            self.eta = stage_eta(
                payload["config"], self.steps, step, self.threads, payload["env_id"], self.slowdown
            )
        except (OSError, ValueError, KeyError, TypeError):
            self.eta = None

    def __call__(self, step: int, phase: str | None, last_return: float | None) -> None:
        if not self.started:
            self.started = True
            self._start(step)
        self.step, self.phase = step, phase or self.phase
        if self.eta is not None:
            self.eta.update(step)
        now = time.monotonic()
        if now - self.last_write >= self.every:
            self.last_write = now
            self.write("running")

    def write(self, state: str) -> None:
        seconds, basis = self.eta.seconds_left() if self.eta is not None else (None, "estimate")
        if state == "done":
            seconds, basis = 0.0, "measured"
        write_status(
            self.out,
            {
                "state": state,
                "env_step": self.step,
                "steps": self.steps,
                "phase": self.phase,
                "eta_s": seconds,
                "eta_basis": basis,
                "pid": os.getpid(),
                "updated": time.time(),
            },
        )

    def finish(self, steps: int) -> None:
        self.step, self.phase = steps, "done"
        self.write("done")


# --- a grid's ETA --------------------------------------------------------------------------------


def grid_eta(running: Iterable[float], pending: Iterable[float], workers: int) -> float:
    """Wall seconds until a grid finishes: `workers` slots, busy for the running runs' seconds
    left, then each pending run (in order) goes to the slot that frees first."""
    slots = list(running)
    slots += [0.0] * (max(1, workers) - len(slots))  # more running than workers: Ray's choice
    heapq.heapify(slots)
    for seconds in pending:
        heapq.heappush(slots, heapq.heappop(slots) + seconds)
    return max(slots)  # never empty: at least one slot
