"""Several seeds trained as one agent (the seed axis) are the same algorithm as each seed alone.

Three seeds of SAC and TD3 as one set of batched networks against three lone optimisers built
from the same seeds: the same initial weights (each seed's generator draws what a lone run
draws), and after one update on the same batches the same losses and the same parameters. A
wrong seed-to-member mapping (seed 1's critics fed seed 0's batch, twins of different seeds
compared, one seed's temperature for all) shows up as a mismatch on some seed.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from cli_helpers import usbpo  # tests/ is on sys.path

from usbpo_cli.agents.buffers import Batch, SeedBuffers
from usbpo_cli.agents.sac import SAC
from usbpo_cli.agents.td3 import TD3

SEEDS = (0, 1, 2)
OBS, ACT, N = 4, 2, 32
LOW, HIGH = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0])


def generators(seeds=SEEDS) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def batches() -> list[Batch]:
    """A different batch per seed, so feeding a seed another's data changes its update."""
    gen = torch.Generator().manual_seed(99)
    out = []
    for _ in SEEDS:
        out.append(
            Batch(
                torch.randn(N, OBS, generator=gen),
                LOW + torch.rand(N, ACT, generator=gen) * (HIGH - LOW),
                torch.randn(N, generator=gen),
                torch.randn(N, OBS, generator=gen),
                (torch.rand(N, generator=gen) < 0.2).float(),
            )
        )
    return out


def stacked(parts: list[Batch]) -> Batch:
    return Batch(*(torch.stack(field) for field in zip(*parts)))


def make(kind: str, gens: list[torch.Generator]):
    if kind == "sac":
        return SAC(OBS, ACT, LOW, HIGH, hidden_size=16, generators=gens)
    return TD3(OBS, ACT, LOW, HIGH, hidden_size=16, policy_delay=1, generators=gens)


@pytest.mark.parametrize("kind", ["sac", "td3"])
def test_three_seeds_as_one_update_exactly_as_three_lone_optimisers(kind: str) -> None:
    group = make(kind, generators())
    lone = [make(kind, generators([s])) for s in SEEDS]
    for s, alone in enumerate(lone):  # each seed initialised as a lone run of that seed
        for key, value in alone.state_dict().items():
            if key in ("actor", "critic"):
                for name, tensor in value.items():
                    torch.testing.assert_close(group.state_dict(s)[key][name], tensor)
    if kind == "sac":  # a temperature of its own per seed (all start at 1)
        with torch.no_grad():
            for s, alone in enumerate(lone):
                group.log_alpha[s] = alone.log_alpha.fill_(0.4 * s - 0.5)
    parts = batches()
    for _ in range(2):  # the second update runs on Adam state the first one made
        group_losses = group.update(stacked(parts))
        lone_losses = [alone.update(part) for alone, part in zip(lone, parts)]
    for s, (alone, losses) in enumerate(zip(lone, lone_losses)):
        for key, value in losses.items():
            torch.testing.assert_close(group_losses[key][s], value, rtol=1e-5, atol=1e-6)
        mine, theirs = group.state_dict(s), alone.state_dict()
        for key in ("actor", "critic", "critic_target"):
            for name, tensor in theirs[key].items():
                torch.testing.assert_close(mine[key][name], tensor, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(group_losses["critic_loss"][0], group_losses["critic_loss"][1])


@pytest.mark.parametrize("kind", ["sac", "td3"])
def test_a_seeds_checkpoint_moves_between_a_group_and_a_lone_run(kind: str) -> None:
    """Seed 2 of a group saved, loaded into a lone optimiser: same actions; and back into
    seed 0 of another group: seed 0 now acts as seed 2 did, the other seeds are untouched."""
    group = make(kind, generators())
    group.update(stacked(batches()))  # Adam state exists
    state = group.state_dict(2)
    lone = make(kind, generators([7]))
    lone.load_state_dict(state)
    obs = torch.randn(5, OBS, generator=torch.Generator().manual_seed(1))
    expected = group.act(obs.expand(3, -1, -1), deterministic=True)
    torch.testing.assert_close(lone.act(obs, deterministic=True), expected[2])
    other = make(kind, generators((10, 11, 12)))
    before = other.act(obs.expand(3, -1, -1), deterministic=True)
    other.load_state_dict(state, 0)
    after = other.act(obs.expand(3, -1, -1), deterministic=True)
    torch.testing.assert_close(after[0], expected[2])
    torch.testing.assert_close(after[1:], before[1:])
    assert other.state_dict(0)["actor_opt"]["state"], "the moments came with the state"
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(
            other.state_dict(0)["actor_opt"]["state"][0][key],
            state["actor_opt"]["state"][0][key],
        )


def test_seed_buffers_draw_each_seeds_indices_from_its_own_generator() -> None:
    """Seed s's sample is the rows a lone buffer with seed s's generator would draw."""
    buffers = SeedBuffers(50, OBS, ACT, "cpu", generators())
    for step in range(30):
        value = torch.full((3, OBS), float(step)) + torch.arange(3.0).view(3, 1) * 1000
        buffers.add(value, torch.zeros(3, ACT), torch.zeros(3), value, torch.zeros(3))
    batch = buffers.sample(8)
    for s in SEEDS:
        idx = torch.randint(30, (8,), generator=torch.Generator().manual_seed(s))
        expected = idx.float().unsqueeze(1).expand(8, OBS) + 1000 * s
        torch.testing.assert_close(batch.obs[s], expected)


def test_vectorised_grid_writes_each_seed_as_a_lone_run_would(tmp_path) -> None:
    """A tiny SAC grid with three seeds as one agent: each seed has its own complete run
    folder (config.json saying its own seed, progress.csv, checkpoint); before learning starts
    (uniform random actions from the seed's own generator) every row's env-side columns are
    exactly those of the same seed trained alone; and rerunning the grid resumes nothing."""
    base = ["--envs", "InvertedPendulum-v4", "--algos", "sac", "--steps", "300"]
    base += ["--preset", "tiny", "--set", "initial_steps=200", "--set", "epoch_length=100"]
    together = usbpo("compare", *base, "--seeds", "3", "--out", "together", cwd=tmp_path)
    assert together.returncode == 0, together.stderr
    assert "seeds 0, 1, 2 train as one agent" in together.stdout
    alone = usbpo(
        "compare", *base, "--seeds", "3", "--vectorise", "off", "--out", "alone", cwd=tmp_path
    )
    assert alone.returncode == 0, alone.stderr
    for s in SEEDS:
        folder = tmp_path / "together" / "InvertedPendulum-v4" / "sac" / f"seed{s}"
        assert list((folder / "checkpoints").glob("ckpt-*.pt"))
        config = __import__("json").loads((folder / "config.json").read_text())
        assert config["seed"] == s
        rows = rows_of(folder)
        solo = rows_of(tmp_path / "alone" / "InvertedPendulum-v4" / "sac" / f"seed{s}")
        assert [r["env_step"] for r in rows] == ["100", "200", "300"]
        for mine, theirs in zip(rows[:2], solo[:2]):  # no update before step 200
            for key in ("train_return", "eval_return_mean", "eval_return_std"):
                assert mine[key] == theirs[key], (s, key)
        assert math.isfinite(float(rows[-1]["critic_loss"]))
    first = [
        rows_of(tmp_path / "together" / "InvertedPendulum-v4" / "sac" / f"seed{s}") for s in SEEDS
    ]
    assert first[0][0]["train_return"] != first[1][0]["train_return"]  # seeds differ
    again = usbpo("compare", *base, "--seeds", "3", "--out", "together", cwd=tmp_path)
    assert "3 already complete, 0 to run" in again.stdout


def rows_of(folder: Path) -> list[dict[str, str]]:
    with open(folder / "progress.csv", newline="") as handle:
        return list(csv.DictReader(handle))
