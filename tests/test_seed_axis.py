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


@pytest.mark.parametrize("kind", ["sac", "td3"])
def test_a_seeds_optimiser_moments_are_shaped_as_its_saved_parameters(kind: str) -> None:
    """A seed's checkpoint is a lone run's: each Adam moment has the shape of the parameter it
    belongs to as saved (an actor weight [out, in], the temperature a scalar), as a plain
    torch Adam over those saved tensors would have it."""
    group = make(kind, generators())
    group.update(stacked(batches()))
    state = group.state_dict(1)
    pairs = [("actor", "actor_opt"), ("critic", "critic_opt")]
    for module_key, opt_key in pairs:
        names = [name for name, _ in getattr(group, module_key).named_parameters()]
        moments = state[opt_key]["state"]
        assert sorted(moments) == list(range(len(names)))
        for index, name in enumerate(names):
            for key in ("exp_avg", "exp_avg_sq"):
                assert moments[index][key].shape == state[module_key][name].shape, (name, key)
    if kind == "sac":
        assert state["log_alpha"].shape == torch.Size([])
        for key in ("exp_avg", "exp_avg_sq"):
            assert state["alpha_opt"]["state"][0][key].shape == torch.Size([]), key


@pytest.mark.parametrize("kind", ["sac", "td3"])
def test_an_update_returns_one_number_per_seed_and_loss(kind: str) -> None:
    """Losses come back as [S] for a group and as scalars for a lone batch (the CSV writes
    one number per seed and column)."""
    group, lone = make(kind, generators()), make(kind, generators([0]))
    for losses, shape in (
        (group.update(stacked(batches())), torch.Size([len(SEEDS)])),
        (lone.update(batches()[0]), torch.Size([])),
    ):
        assert {"critic_loss", "actor_loss"} <= set(losses)
        for key, value in losses.items():
            assert value.shape == shape, (key, value.shape)


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


# ---------------------------------------------------------------------------------------------
# the model-based loop: an S x E ensemble, phase 1 and phase 2 per seed


def dyna_options(**overrides: object) -> dict[str, object]:
    options: dict[str, object] = {
        "ensemble_size": 4,
        "num_elites": 2,
        "model_hidden_size": 16,
        "model_hidden_layers": 2,
        "hidden_size": 16,
        "rollout_batch_size": 64,
        "epoch_length": 100,
        "model_train_freq": 50,
        "initial_steps": 10,
        "model_patience": 2,
        "model_lr": 1e-2,
        "phase2_batch_size": 32,
        "phase2_val_size": 32,
        "phase2_lr": 3e-3,
        "phase2_max_steps": 12,
        "phase2_patience": 2,
    }
    options.update(overrides)
    return options


def fill_seed(agent, seed_index: int, seed: int, n: int = 1500) -> None:
    """Seed-specific real data (different dynamics per seed, so seeds stop at different
    epochs) and model data, through the seed's own buffers."""
    gen = torch.Generator().manual_seed(100 + seed)
    scale = 0.05 * (seed + 1)
    real, model = agent.real_buffers[seed_index], agent.model_buffers[seed_index]
    for _ in range(n):
        obs = torch.randn(agent.obs_dim, generator=gen)
        act = torch.rand(agent.act_dim, generator=gen) * 6 - 3
        nxt = obs + scale * act.sum() + 0.01 * torch.randn(agent.obs_dim, generator=gen)
        real.add(obs, act, float(obs.sum()), nxt, 0.0)
    obs = torch.randn(200, agent.obs_dim, generator=gen)
    act = torch.rand(200, agent.act_dim, generator=gen) * 6 - 3
    model.add_batch(obs, act, torch.zeros(200), obs + 0.1, torch.zeros(200))


# A small ensemble and phase-1 settings under which the three seeds' trainings stop apart.
FIT_SHAPE = {"ensemble_size": 4, "num_elites": 2, "hidden_size": 16, "hidden_layers": 2}
FIT_SETTINGS = {
    "batch_size": 256,
    "weight_decay": (2.5e-5, 5e-5, 1e-4),
    "logvar_penalty": 0.01,
    "holdout_ratio": 0.2,
    "max_holdout": 5000,
    "patience": 2,
    "max_epochs": None,
}


def seed_data(seed: int, n: int = 1500) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and targets of different dynamics per seed (so seeds stop apart), float64."""
    gen = torch.Generator().manual_seed(100 + seed)
    inputs = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    weights = torch.randn(5, 5, generator=gen, dtype=torch.float64) * (seed + 1) * 0.3
    targets = torch.tanh(inputs @ weights) + 0.05 * torch.randn(
        n, 5, generator=gen, dtype=torch.float64
    )
    return inputs, targets


def test_three_seeds_fit_as_three_lone_ensembles() -> None:
    """Phase 1 for three seeds as one S x E ensemble against three lone ensembles of the same
    seeds on the same data (float64, so no 1% decision is left to round-off): each seed's
    holdout split, bootstrap, normaliser, per-member best weights, 1% rule and patience as
    alone. The seeds stop at different epochs, so a stopped seed that kept training, or a seed
    fed another's rows or normalised with another's statistics, would show."""
    from usbpo_cli.models.ensemble import GaussianEnsemble, fit_ensemble
    from usbpo_cli.models.optim import make_adam
    from usbpo_cli.models.seed_axis import adam_seed_state, module_seed_state, parameter_axes

    group = GaussianEnsemble(4, 1, generators=generators(), **FIT_SHAPE).double()
    lone = [GaussianEnsemble(4, 1, generator=g, **FIT_SHAPE).double() for g in generators()]
    data = [seed_data(s) for s in SEEDS]
    inputs = torch.stack([x for x, _ in data])
    targets = torch.stack([y for _, y in data])
    draws = [torch.Generator().manual_seed(10 + s) for s in SEEDS]
    group_opt = make_adam(group.parameters(), 1e-2)
    fit = fit_ensemble(group, group_opt, inputs, targets, generator=draws, **FIT_SETTINGS)
    lone_draws = [torch.Generator().manual_seed(10 + s) for s in SEEDS]
    group_axes = parameter_axes(group, group.seed_axes())
    for s, alone in enumerate(lone):
        alone_opt = make_adam(alone.parameters(), 1e-2)
        mine = fit_ensemble(alone, alone_opt, *data[s], generator=lone_draws[s], **FIT_SETTINGS)
        assert fit.epochs[s] == mine.epochs
        # A seed that stopped drew nothing more: its stream stands where the lone run's does.
        assert torch.equal(draws[s].get_state(), lone_draws[s].get_state())
        assert fit.train_loss[s] == pytest.approx(mine.train_loss, rel=1e-9)
        theirs = module_seed_state(alone, alone.seed_axes(), 0)
        ours = module_seed_state(group, group.seed_axes(), s)
        for name, tensor in theirs.items():
            torch.testing.assert_close(ours[name], tensor, rtol=1e-9, atol=1e-12, msg=name)
        # Its Adam moments too, which the next (warm-started) training goes on from; the step
        # count is the group's (every seed of a group counts every step).
        our_adam = adam_seed_state(group_opt, group_axes, s)["state"]
        for index, entry in alone_opt.state_dict()["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(
                    our_adam[index][key], entry[key], rtol=1e-9, atol=1e-12, msg=key
                )
    assert len(set(fit.epochs)) == 3, fit.epochs  # the seeds did stop at different epochs


def test_a_seed_that_has_stopped_leaves_phase_1s_minibatches(monkeypatch) -> None:
    """Once a seed's phase 1 has stopped, only the seeds still training are computed: epoch e's
    minibatches hold the E members of each seed whose training lasted more than e epochs, each
    block fed rows of its own seed only, and epoch e's holdout check scores those members only.
    (The test above shows the results equal lone runs'; this is what makes a group's phase 1
    cost the sum of its seeds' epochs rather than S times its longest seed's.)"""
    from usbpo_cli.models import ensemble as ensemble_module
    from usbpo_cli.models.ensemble import GaussianEnsemble, fit_ensemble
    from usbpo_cli.models.optim import make_adam

    members = FIT_SHAPE["ensemble_size"]
    group = GaussianEnsemble(4, 1, generators=generators(), **FIT_SHAPE).double()
    data = [seed_data(s, n=640) for s in SEEDS]  # 512 training rows: 2 minibatches per epoch
    fed: list[list[int]] = []  # per minibatch, the seed whose rows each member block holds
    scored: list[int] = []  # per holdout check, how many members it scored

    def seed_of_rows(rows: torch.Tensor) -> int:
        owners = [s for s, (x, _) in enumerate(data) if bool(torch.isin(rows[:, 0], x[:, 0]).all())]
        assert len(owners) == 1, owners
        return owners[0]

    real_backward, real_holdout = ensemble_module.mle_backward, ensemble_module.holdout_mse

    def spy_backward(model, batch_in, *args, **kwargs):
        fed.append([seed_of_rows(block) for block in batch_in[::members]])
        return real_backward(model, batch_in, *args, **kwargs)

    def spy_holdout(*args, **kwargs):
        mse = real_holdout(*args, **kwargs)
        scored.append(len(mse))
        return mse

    monkeypatch.setattr(ensemble_module, "mle_backward", spy_backward)
    monkeypatch.setattr(ensemble_module, "holdout_mse", spy_holdout)
    fit = fit_ensemble(
        group,
        make_adam(group.parameters(), 1e-2),
        torch.stack([x for x, _ in data]),
        torch.stack([y for _, y in data]),
        generator=[torch.Generator().manual_seed(10 + s) for s in SEEDS],
        **FIT_SETTINGS,
    )
    assert len(set(fit.epochs)) == 3, fit.epochs  # the seeds did stop at different epochs
    assert len(fed) == 2 * max(fit.epochs)
    for call, seeds_fed in enumerate(fed):
        epoch = call // 2
        assert seeds_fed == [s for s in SEEDS if fit.epochs[s] > epoch], (epoch, seeds_fed)
    expected = [members * sum(e > epoch for e in fit.epochs) for epoch in range(max(fit.epochs))]
    assert scored == [*expected, members * len(SEEDS)]  # the last: the elites, every seed's


def test_rollouts_of_three_seeds_follow_each_seeds_policy_model_and_termination() -> None:
    """One rollout pass for three seeds: each seed's model buffer holds exactly what a lone
    agent of that seed, with the same networks and data, rolls out."""
    from baselines.mbpo import MBPOAgent
    from usbpo_cli.agents.dyna import DynaConfig

    options = dyna_options(rollout_schedule=(1, 2, 3, 3))
    config = DynaConfig(**{k: v for k, v in options.items() if not k.startswith("phase2")})
    env = "Hopper-v4"  # a task with termination, so rollouts end at different steps
    group = MBPOAgent(env, config, seed=list(SEEDS), total_steps=1000)
    lone = [MBPOAgent(env, config, seed=s, total_steps=1000) for s in SEEDS]
    for s in SEEDS:
        fill_seed(group, s, s)
    group.fit_model(60)
    group.begin()  # loop positions, so that each seed's state can be saved
    for s, alone in enumerate(lone):  # the same networks and data, as each seed's checkpoint
        alone.load_state_dict(group.state_dict(s))
    step = config.initial_steps + 3 * config.epoch_length
    added = group.rollout(step)
    for s, alone in enumerate(lone):
        assert added[s] == alone.rollout(step)[0]
        mine, theirs = group.model_buffers[s].ordered(), alone.model_buffer.ordered()
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_phase2_stops_each_seed_on_its_own_and_keeps_each_seeds_best_snapshot() -> None:
    """Phase 2 for three seeds with scripted validation J per seed (patience 2, at most 6
    steps): seed 0 improves at step 1 then not (stops after step 3, keeps step 1's model);
    seed 1 never improves (stops after step 2, keeps the phase-1 model exactly); seed 2
    improves every step (runs all 6, keeps the last). A stopped seed's model must not move
    while the others go on, and each seed's phase-2 step count is its own."""
    from usbpo_cli.agents.usbpo import USBPOAgent, USBPOConfig
    from usbpo_cli.models.seed_axis import module_seed_state

    options = dyna_options(phase2_max_steps=6, phase2_patience=2)
    agent = USBPOAgent(
        "InvertedPendulum-v4", USBPOConfig(**options), seed=list(SEEDS), total_steps=2000
    )
    for s in SEEDS:
        fill_seed(agent, s, s, n=400)
    frozen_model = __import__("copy").deepcopy(agent.model).requires_grad_(False)
    inputs, targets = agent.model_training_data()
    from usbpo_cli.agents.dyna import fit_settings
    from usbpo_cli.models.ensemble import fit_ensemble

    fit = fit_ensemble(
        agent.model,
        agent.model_opt,
        inputs,
        targets,
        generator=agent.generators,
        **fit_settings(agent.config),
    )
    scripts = [
        [1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    ]
    real = agent.objective
    axes = agent.model.seed_axes()
    states: list[list[dict]] = []  # per validation call: each seed's model

    def scripted(frozen, batch, k1=None, k2=None, frozen_out=None):
        if k1 is None:  # a training step: the real J, so the weights move
            return real(frozen, batch)
        states.append([module_seed_state(agent.model, axes, s) for s in SEEDS])
        call = len(states) - 1
        return torch.tensor([script[call] for script in scripts])

    agent.objective = scripted
    agent.fine_tune_model(frozen_model, fit)
    assert [agent.recorded("phase2_steps", s) for s in SEEDS] == [[3.0], [2.0], [6.0]]
    final = [module_seed_state(agent.model, axes, s) for s in SEEDS]
    kept = {0: 1, 1: 0, 2: 6}  # the step whose model each seed keeps
    for s, step in kept.items():
        for name, tensor in states[step][s].items():
            if name != "elites":  # re-picked after phase 2
                assert torch.equal(final[s][name], tensor), (s, name)
    for call in range(3, 7):  # seed 1 stopped after step 2: it stays as it was then
        for name, tensor in states[2][1].items():
            assert torch.equal(states[call][1][name], tensor), (call, name)
    moved = states[1][0]["net.layers.0.weight"] != states[0][0]["net.layers.0.weight"]
    assert bool(moved.any())  # the steps did move the weights


def test_two_seeds_minibatch_loss_and_gradients_as_two_lone_ensembles() -> None:
    """One phase-1 minibatch for two seeds as one ensemble against each seed's lone ensemble
    (float64, weight decays large enough that each seed's own L2 term shows): the same loss per
    seed, with only that seed's weights in its penalty, and the same gradients."""
    from usbpo_cli.models.ensemble import GaussianEnsemble, mle_backward

    members, decay = FIT_SHAPE["ensemble_size"], (0.1, 0.2, 0.3)
    group = GaussianEnsemble(4, 1, generators=generators((0, 1)), **FIT_SHAPE).double()
    lone = [GaussianEnsemble(4, 1, generator=g, **FIT_SHAPE).double() for g in generators((0, 1))]
    data = [seed_data(s, n=32) for s in (0, 1)]
    batch_in = torch.cat([x.expand(members, -1, -1) for x, _ in data])  # [S E, b, in]
    batch_tgt = torch.cat([y.expand(members, -1, -1) for _, y in data])
    losses = mle_backward(group, batch_in, batch_tgt, decay, 0.01)
    assert losses.shape == torch.Size([2])
    for s, alone in enumerate(lone):
        x, y = data[s]
        mine = mle_backward(
            alone, x.expand(members, -1, -1), y.expand(members, -1, -1), decay, 0.01
        )
        assert float(losses[s]) == pytest.approx(float(mine), rel=1e-12)
        rows = slice(s * members, (s + 1) * members)
        for ours, theirs in zip(group.net.layers, alone.net.layers):
            torch.testing.assert_close(
                ours.weight.grad[rows], theirs.weight.grad, rtol=1e-12, atol=0
            )
