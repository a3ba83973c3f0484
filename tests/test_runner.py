"""One run from its spec (runs/runner.py): what `config.json` records about the run (read back
against the spec, the environment and git), which specs may train together as one agent, and
what a resume that finds rows without a checkpoint, or unreadable checkpoints, does with them."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import progress_rows
from test_lock import refusal as holder  # who holds a run folder's lock (None: nobody)

from usbpo_cli.errors import UsageError
from usbpo_cli.runs.runner import MAX_STEPS, RunSpec, prepare_run, resolve_device, resolve_run

ENV = "InvertedPendulum-v4"


def spec(out: Path, algo: str = "sac", seed: int = 0, steps: int = 200, **kw) -> RunSpec:
    return RunSpec(ENV, algo, seed, steps, out, preset="tiny", **kw)


def test_config_json_records_the_run_as_it_was_asked_for(tmp_path: Path) -> None:
    one = spec(tmp_path / "run", seed=7, steps=300, overrides=["gamma=0.9"])
    run = prepare_run(one)
    for lock in run.locks:
        lock.release()
    payload = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (payload["algo"], payload["env_id"], payload["seed"], payload["steps"]) == (
        "sac",
        ENV,
        7,
        300,
    )
    assert (payload["device"], payload["precision"], payload["preset"]) == ("cpu", "fp32", "tiny")
    assert payload["compile"] is False and payload["truncate_obs"] is False
    assert payload["config"]["gamma"] == 0.9
    assert payload["deviations_from_paper"]["gamma"] == {"paper": 0.99, "used": 0.9, "by": "--set"}
    assert payload["task"]["obs_dim"] == 4 and payload["task"]["act_dim"] == 1
    assert payload["versions"]["torch"] == torch.__version__
    assert payload["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "no_paper_values" not in payload  # a paper task borrows nothing
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    assert payload["git_commit"] == (head or None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "--steps must be positive, got 0"),
        ({"steps": MAX_STEPS + 1}, f"--steps must be at most 1e9 ({MAX_STEPS})"),
        ({"seed": -1}, "--seed must be >= 0, got -1"),
        ({"device": "tpu"}, "--device 'tpu'"),
        ({"device": "meta"}, "only cpu and cuda are supported"),
        ({"algo": "ppo", "precision": "bf16"}, "ppo runs in fp32 only"),
        ({"algo": "ppo", "compile": True}, "--compile compiles SAC's update, and ppo here uses"),
        ({"algo": "td3", "compile": True}, "and td3 here uses td3's"),
    ],
)
def test_a_spec_is_refused_before_any_file_is_written(
    change: dict, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USBPO_ALLOW_EMULATED_BF16", "1")
    bad = dataclasses.replace(spec(tmp_path / "run"), **change)
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve_run(bad)
    with pytest.raises(UsageError):
        prepare_run(bad)
    assert not (tmp_path / "run").exists()


def test_the_largest_step_count_and_seed_zero_are_taken(tmp_path: Path) -> None:
    config, payload = resolve_run(spec(tmp_path / "run", seed=0, steps=MAX_STEPS))
    assert payload["steps"] == MAX_STEPS and payload["seed"] == 0
    assert resolve_run(spec(tmp_path / "run", steps=1))[1]["steps"] == 1


def test_a_device_is_named_as_torch_names_it() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="^--device cuda: no CUDA device is visible"):
            resolve_device("cuda:0")


def test_a_cuda_device_must_be_one_torch_can_see(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine with one GPU (torch's answers replaced): cuda and cuda:0 are it, cuda:1
    is refused naming how many there are."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(UsageError, match=re.escape("--device cuda:1: only 1 CUDA device(s)")):
        resolve_device("cuda:1")


def test_a_prepared_run_holds_its_folder_until_it_ends(tmp_path: Path) -> None:
    """Prepared, the run names this process as the lock's holder; trained to the end, it lets
    the folder go. (flock locks are per open file, so this process sees its own lock.)"""
    import os
    import socket

    run = prepare_run(spec(tmp_path / "run"))
    assert run.spec.out == tmp_path / "run" and run.specs == [run.spec]
    busy = holder(tmp_path / "run")
    assert busy is not None and f"in use by pid {os.getpid()} on {socket.gethostname()}" in busy
    run.train()
    assert holder(tmp_path / "run") is None


def test_a_run_tells_the_user_what_concerns_them_and_logs_the_rest(tmp_path: Path) -> None:
    """A resume's notes reach the user (the notify callback) and events.log; the end of a run
    is logged only (the CLI prints its own summary)."""
    told: list[str] = []
    out = tmp_path / "run"
    prepare_run(spec(out, steps=300), notify=told.append).train()
    assert told == [] and "finished at env step 300" in (out / "events.log").read_text()
    (out / "checkpoints" / "ckpt-0000000300.pt").unlink()
    prepare_run(spec(out, steps=300), resume=True, notify=told.append).train()
    assert any("resumed from env step 200" in message for message in told)
    assert not any("finished" in message for message in told)


def test_a_lone_seed_of_an_algorithm_that_does_not_vectorise_is_prepared(tmp_path: Path) -> None:
    run = prepare_run(spec(tmp_path / "run", algo="ppo"))
    for lock in run.locks:
        lock.release()
    assert (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([], "no run to prepare"),
        ([{"seed": 0}, {"seed": 1, "steps": 300}], "must share env, algo, steps and settings"),
        ([{"seed": 0}, {"seed": 1, "overrides": ["gamma=0.9"]}], "must share"),
        ([{"seed": 2}, {"seed": 2}], "seeds trained together must differ"),
        ([{"seed": 0, "algo": "ppo"}, {"seed": 1, "algo": "ppo"}], "ppo trains one seed per"),
    ],
)
def test_only_seeds_of_one_configuration_train_as_one_agent(
    specs: list[dict], message: str, tmp_path: Path
) -> None:
    built = [spec(tmp_path / f"s{i}", **{"algo": "sac", **one}) for i, one in enumerate(specs)]
    with pytest.raises(UsageError, match=message):
        prepare_run(built)
    assert list(tmp_path.iterdir()) == []


def test_two_seeds_train_together_each_in_its_own_folder(tmp_path: Path) -> None:
    run = prepare_run([spec(tmp_path / "a", seed=3), spec(tmp_path / "b", seed=4)])
    assert run.spec.seed == 3
    run.train()
    for folder, seed in (("a", 3), ("b", 4)):
        assert json.loads((tmp_path / folder / "config.json").read_text())["seed"] == seed
        assert [row["env_step"] for row in progress_rows(tmp_path / folder)] == ["100", "200"]
    assert [s.rows for s in run.summaries] == [2, 2]


def test_seeds_standing_at_different_steps_are_not_resumed_together(tmp_path: Path) -> None:
    """Seed a finished at step 200; seed b only started: they cannot go on as one agent."""
    prepare_run(spec(tmp_path / "a", seed=3)).train()
    first = prepare_run(spec(tmp_path / "b", seed=4))
    for lock in first.locks:
        lock.release()
    pair = [spec(tmp_path / "a", seed=3), spec(tmp_path / "b", seed=4)]
    with pytest.raises(UsageError, match=r"same env step; these stand at \[0, 200\]") as info:
        prepare_run(pair, resume=True)
    # the refused preparation let both folders go, even while its error is still held (its
    # traceback keeps the preparation's locals alive)
    assert info.traceback is not None
    assert holder(tmp_path / "a") is None and holder(tmp_path / "b") is None
