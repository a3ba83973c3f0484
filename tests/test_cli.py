"""The `usbpo` command line, run as a real subprocess: tiny end-to-end runs of each algorithm,
determinism, one-line errors that touch no files, and the listing commands."""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import cli_env, snapshot, usbpo  # tests/ is on sys.path

from baselines.model_free import SACConfig
from usbpo_cli.agents.dyna import DynaConfig
from usbpo_cli.agents.usbpo import USBPOConfig
from usbpo_cli.envs.tasks import supported_env_ids
from usbpo_cli.runs.config import resolve_config
from usbpo_cli.runs.csvlog import PROGRESS_COLUMNS, TIMING_COLUMNS
from usbpo_cli.runs.folders import comparable

ENV = "InvertedPendulum-v4"
STEPS = 300
TINY = ["--env", ENV, "--preset", "tiny", "--steps", str(STEPS), "--quiet"]
CONFIG_CLASSES = {"usbpo": USBPOConfig, "mbpo": DynaConfig, "sac": SACConfig}
# Filled by the Dyna loop once the model has been trained (USB-PO adds phase2_steps).
MODEL_COLUMNS = ("model_shift", "model_bias", "model_loss_train", "t_model_phase1", "t_rollout")
# Columns SAC has no use for: everything about the model, phase 2 and rollouts.
MODEL_ONLY_COLUMNS = tuple(
    c for c in PROGRESS_COLUMNS if c.startswith(("model_", "phase2", "t_model", "t_rollout"))
) + ("delta", "rollout_length")
VOLATILE_COLUMNS = (*TIMING_COLUMNS, "wall_time_s")


def read_progress(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(run / "progress.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def as_json(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------------------------
# tiny end-to-end runs, each made once per module


@pytest.fixture(scope="module")
def train_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """train_run(algo, seed, copy=0) -> run folder of a finished tiny run (cached)."""
    cache: dict[tuple[str, int, int], Path] = {}
    root = tmp_path_factory.mktemp("runs")

    def get(algo: str, seed: int = 0, copy: int = 0) -> Path:
        key = (algo, seed, copy)
        if key not in cache:
            out = root / f"{algo}-seed{seed}-{copy}"
            args = ["train", "--algo", algo, "--seed", str(seed), *TINY, "--out", str(out)]
            result = usbpo(*args, cwd=root)
            assert result.returncode == 0, result.stderr
            assert "Traceback" not in result.stdout + result.stderr
            assert "final eval return" in result.stdout
            cache[key] = out
        return cache[key]

    return get


@pytest.mark.parametrize("algo", ["usbpo", "mbpo", "sac"])
def test_train_writes_config_json(train_run: Callable[..., Path], algo: str) -> None:
    run = train_run(algo)
    payload = json.loads((run / "config.json").read_text())
    assert payload["algo"] == algo
    assert payload["env_id"] == ENV
    assert (payload["seed"], payload["steps"], payload["preset"]) == (0, STEPS, "tiny")
    assert payload["task"]["obs_dim"] == 4 and payload["task"]["act_dim"] == 1

    config, deviations = resolve_config(CONFIG_CLASSES[algo], "InvertedPendulum", "tiny", {})
    assert payload["config"] == as_json(dataclasses.asdict(config))
    assert payload["config"]["epoch_length"] == 100
    assert payload["config"]["updates_per_step"] == 1
    assert ("phase2_lr" in payload["config"]) == (algo == "usbpo")
    assert ("model_train_freq" in payload["config"]) == (algo != "sac")

    recorded = payload["deviations_from_paper"]
    assert recorded, "preset tiny deviates from the paper"
    assert recorded == as_json(deviations)
    assert recorded["epoch_length"] == {"paper": 250, "used": 100, "by": "preset tiny"}

    versions = payload["versions"]
    assert versions["python"] == platform.python_version()
    for package in ("usbpo", "torch", "gymnasium", "mujoco", "numpy"):
        assert versions[package] not in ("", "not installed"), package


@pytest.mark.parametrize("algo", ["usbpo", "mbpo", "sac"])
def test_train_writes_progress_csv(train_run: Callable[..., Path], algo: str) -> None:
    header, rows = read_progress(train_run(algo))
    assert tuple(header) == PROGRESS_COLUMNS
    # tiny: epoch_length 100, so one row per 100 env steps
    assert [int(r["env_step"]) for r in rows] == [100, 200, 300]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row in rows:
        assert row["eval_return_mean"] != ""
        assert float(row["wall_time_s"]) >= 0.0
        assert row["t_env"] != "" and row["t_eval"] != ""
    first, learned = rows[0], rows[1:]
    # the first row ends exactly at initial_steps (100): nothing has been learned yet
    for column in ("critic_loss", "actor_loss", *MODEL_ONLY_COLUMNS):
        assert first[column] == "", column
    for row in learned:
        assert row["critic_loss"] != "" and row["actor_loss"] != "" and row["alpha"] != ""

    if algo == "sac":
        for row in rows:
            for column in MODEL_ONLY_COLUMNS:
                assert row[column] == "", (row["env_step"], column)
        return
    for row in learned:
        for column in MODEL_COLUMNS:
            assert row[column] != "", (row["env_step"], column)
            float(row[column])
        assert int(float(row["rollout_length"])) >= 1
        # tiny: the model trains every 50 env steps, so twice per 100-step row
        assert float(row["model_trainings"]) == 2.0
    phase2 = [r["phase2_steps"] for r in learned]
    if algo == "usbpo":
        assert all(v != "" for v in phase2)
        assert max(float(v) for v in phase2) > 0
    else:
        assert all(v == "" for v in phase2)


def test_same_seed_same_csv(train_run: Callable[..., Path]) -> None:
    run_a, run_b = train_run("usbpo", 0), train_run("usbpo", 0, copy=1)
    header_a, rows_a = read_progress(run_a)
    header_b, rows_b = read_progress(run_b)
    assert header_a == header_b
    assert len(rows_a) == len(rows_b) == 3

    def stable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k not in VOLATILE_COLUMNS} for r in rows]

    assert stable(rows_a) == stable(rows_b)
    # the comparison covers real numbers, not just empty cells
    assert sum(v != "" for r in stable(rows_a) for v in r.values()) > 40
    config_a = json.loads((run_a / "config.json").read_text())
    config_b = json.loads((run_b / "config.json").read_text())
    assert comparable(config_a) == comparable(config_b)


def test_different_seed_different_results(train_run: Callable[..., Path]) -> None:
    _, rows_0 = read_progress(train_run("usbpo", 0))
    _, rows_1 = read_progress(train_run("usbpo", 1))
    assert [r["env_step"] for r in rows_0] == [r["env_step"] for r in rows_1]
    for column in ("critic_loss", "actor_loss", "model_loss_train"):
        assert [r[column] for r in rows_0[1:]] != [r[column] for r in rows_1[1:]], column
    columns = ("eval_return_mean", "train_return", "critic_loss", "actor_loss", "model_shift")
    assert [[r[c] for c in columns] for r in rows_0] != [[r[c] for c in columns] for r in rows_1]


# ---------------------------------------------------------------------------------------------
# bad input: exit code 2, one line on stderr, no traceback, no file created or changed


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error:"), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


BAD_INPUT = [
    pytest.param(["--env", "Hoper-v4"], ["Hoper-v4", "did you mean Hopper-v4"], id="env-typo"),
    pytest.param(
        ["--algo", "dreamer"], ["unknown algo 'dreamer'", "usbpo", "mbpo", "sac"], id="algo"
    ),
    pytest.param(["--steps", "0"], ["--steps", "0"], id="steps-0"),
    pytest.param(["--steps", "-5"], ["--steps", "-5"], id="steps-neg"),
    pytest.param(["--set", "nosuchkey=1"], ["nosuchkey"], id="set-unknown"),
    pytest.param(["--set", "updates_per_step=abc"], ["updates_per_step", "abc"], id="set-bad"),
    pytest.param(["--preset", "huge"], ["preset", "huge"], id="preset"),
    pytest.param(["--device", "cuda"], ["--device cuda", "CUDA"], id="cuda"),
    pytest.param(["--env", "CartPole-v1"], ["CartPole-v1", "Discrete", "Box"], id="discrete"),
]


@pytest.mark.parametrize(("args", "needles"), BAD_INPUT)
def test_bad_input_one_line_no_files(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    defaults = {"--env": ENV, "--algo": "usbpo", "--preset": "tiny", "--steps": "300"}
    cmd = ["train", "--quiet", *args]
    for flag, value in defaults.items():
        if flag not in args:
            cmd += [flag, value]
    env = cli_env()
    env["CUDA_VISIBLE_DEVICES"] = ""  # so `--device cuda` is unusable on any machine
    # no --out: the default folder runs/train/... would appear under cwd
    result = usbpo(*cmd, cwd=tmp_path, env=env)
    assert_one_line_error(result, *needles)
    assert list(tmp_path.iterdir()) == []


def test_out_is_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "results.txt"
    target.write_text("precious\n")
    before = snapshot(tmp_path)
    result = usbpo("train", *TINY, "--out", str(target), cwd=tmp_path)
    assert_one_line_error(result, "results.txt", "file")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "change", [["--seed", "1"], ["--algo", "mbpo"], ["--set", "batch_size=32"]], ids=str
)
def test_out_holds_a_different_run(
    train_run: Callable[..., Path], tmp_path: Path, change: list[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(train_run("usbpo", 0), run)
    before = snapshot(tmp_path)
    base = ["train", "--algo", "usbpo", "--seed", "0", *TINY, "--out", str(run)]
    if change[0] == "--set":
        cmd = base + change
    else:
        cmd = list(base)
        cmd[cmd.index(change[0]) + 1] = change[1]
    result = usbpo(*cmd, cwd=tmp_path)
    assert_one_line_error(result, "different run")
    assert snapshot(tmp_path) == before


def test_rerun_same_command_into_completed_run(train_run: Callable[..., Path]) -> None:
    # the exact command that made the run folder, into that same folder
    run = train_run("usbpo", 0)
    before = snapshot(run)
    args = ["train", "--algo", "usbpo", "--seed", "0", *TINY, "--out", str(run)]
    result = usbpo(*args, cwd=run.parent)
    assert_one_line_error(result, "progress.csv", str(run))
    assert snapshot(run) == before
    _, rows = read_progress(run)
    assert len(rows) == 3


def test_bad_input_without_quiet_is_one_line(tmp_path: Path) -> None:
    result = usbpo("train", "--env", "Hoper-v4", "--steps", "300", cwd=tmp_path)
    assert_one_line_error(result, "Hopper-v4")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# listing commands


def test_envs_lists_all_supported_ids(tmp_path: Path) -> None:
    result = usbpo("envs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ids = supported_env_ids()
    assert len(ids) == 12
    assert {i.rsplit("-", 1)[1] for i in ids} == {"v4", "v5"}
    first_cells = {line.split("│")[1].strip() for line in result.stdout.splitlines() if "│" in line}
    assert set(ids) <= first_cells
    assert "Humanoid-v4 --truncate-obs" in first_cells


def test_config_lists_usbpo_settings_with_task_values(tmp_path: Path) -> None:
    result = usbpo("config", "--algo", "usbpo", "--env", "Hopper-v4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cells = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.stdout.splitlines()
        if line.count("│") >= 3
    }
    assert cells["phase2_lr"] == "0.0001"
    assert cells["rollout_schedule"] == "(20, 150, 1, 15)"
    assert cells["updates_per_step"] == "20"
    assert cells["target_entropy"] == "-1.0"


def test_algos_lists_every_algorithm(tmp_path: Path) -> None:
    result = usbpo("algos", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert sorted(names) == ["alm", "cmlo", "mbpo", "pdml", "ppo", "sac", "td3", "usbpo"]
