"""TD3: target policy smoothing and the clipped double-Q target against hand computations, the
delayed actor and target updates, bounded exploration, the loop's per-key loss means, PDML's
policy distance for a deterministic actor, tiny runs of `td3` and of `--set policy=td3` for the
model-based algos (with exact resume), and bad values."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from cli_helpers import (  # tests/ is on sys.path
    assert_resume_reproduces,
    assert_validation,
    progress_rows,
    tiny_run,
    usbpo,
    usbpo_inproc,
)
from test_cli import assert_one_line_error

import usbpo_cli.agents.td3 as td3_module
from baselines.model_free import ModelFreeAgent as TD3Agent
from baselines.model_free import TD3Config
from baselines.pdml import actor_gaussian, tv_upper_bound
from usbpo_cli.agents.buffers import Batch
from usbpo_cli.agents.dyna import DynaConfig
from usbpo_cli.agents.td3 import TD3
from usbpo_cli.runs.config import resolve_config
from usbpo_cli.util.settings import parse_overrides

ENV = "InvertedPendulum-v4"
# Asymmetric bounds: scale (2, 0.5), centre (0, 0.5), so a missing scale or offset shows.
LOW, HIGH = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])


def make_td3(**kwargs) -> TD3:
    torch.manual_seed(0)
    return TD3(3, 2, LOW, HIGH, hidden_size=16, **kwargs)


def set_constant_action(actor: torch.nn.Module, pre_tanh: list[float]) -> None:
    """Make the actor output tanh(pre_tanh) * scale + centre on every state."""
    last = actor.body[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(pre_tanh))


def toy_batch(n: int = 4, done: float = 0.0) -> Batch:
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(n, 3, generator=gen)
    act = LOW + torch.rand(n, 2, generator=gen) * (HIGH - LOW)
    rew = torch.arange(n, dtype=torch.float32)
    return Batch(obs, act, rew, torch.randn(n, 3, generator=gen), torch.full((n,), done))


# ---------------------------------------------------------------------------------------------
# target policy smoothing and the clipped double-Q target


def test_smoothed_target_action_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    td3 = make_td3(policy_noise=0.2, noise_clip=0.5)
    set_constant_action(td3.actor_target, [0.0, 0.0])  # target action = centre (0, 0.5)
    raw = torch.tensor([[3.0, -0.5], [0.1, 10.0], [-10.0, 1.0], [0.0, -2.0]])
    monkeypatch.setattr(td3_module, "seed_normal", lambda x, generators=None: raw.clone())
    action = td3.target_actions(torch.zeros(4, 3))
    # noise = clip(0.2 * raw, -0.5, 0.5) in scale units: (0.5, -0.1), (0.02, 0.5), (-0.5, 0.2),
    # (0, -0.4); times scale (2, 0.5); plus the centre (0, 0.5); then clipped to the bounds.
    expected = [[1.0, 0.45], [0.04, 0.75], [-1.0, 0.6], [0.0, 0.3]]
    torch.testing.assert_close(action, torch.tensor(expected), rtol=0, atol=1e-6)

    # a target action near the upper bound: the noisy action is clipped to the bounds
    set_constant_action(td3.actor_target, [3.0, -3.0])
    base = torch.tensor([2.0 * math.tanh(3.0), 0.5 - 0.5 * math.tanh(3.0)])
    action = td3.target_actions(torch.zeros(4, 3))
    noise = (0.2 * raw).clamp(-0.5, 0.5) * torch.tensor([2.0, 0.5])
    torch.testing.assert_close(action, torch.max(torch.min(base + noise, HIGH), LOW))
    assert action[0, 0].item() == 2.0 and action[1, 0].item() == 2.0


def test_smoothing_noise_is_really_clipped() -> None:
    td3 = make_td3(policy_noise=1.0, noise_clip=0.3)  # most draws would exceed the clip
    set_constant_action(td3.actor_target, [0.0, 0.0])
    torch.manual_seed(3)
    action = td3.target_actions(torch.zeros(20_000, 3))
    in_scale_units = (action - torch.tensor([0.0, 0.5])) / torch.tensor([2.0, 0.5])
    assert in_scale_units.abs().max().item() == pytest.approx(0.3, abs=1e-6)
    # N(0, 1) exceeds 0.3 with probability 0.76: most draws sit on the clip
    assert (in_scale_units.abs() > 0.3 - 1e-6).float().mean().item() == pytest.approx(
        0.76, abs=0.02
    )


def test_td_target_is_the_min_of_the_target_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    td3 = make_td3(gamma=0.9)
    last = td3.critic_target.layers[-1]
    with torch.no_grad():  # constant twins: Q'_1 = 3, Q'_2 = -1.5
        last.weight.zero_()
        last.bias.copy_(torch.tensor([3.0, -1.5]).view(2, 1, 1))
    batch = toy_batch()
    assert td3.td_target(batch).tolist() == pytest.approx([r - 0.9 * 1.5 for r in range(4)])
    terminal = toy_batch(done=1.0)
    assert td3.td_target(terminal).tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0])

    # non-constant twins: the target critics see the smoothed target action
    td3 = make_td3(gamma=0.9)
    smoothed = LOW + torch.rand(4, 2) * (HIGH - LOW)
    monkeypatch.setattr(td3, "target_actions", lambda next_obs: smoothed)
    q_each = []
    for member in range(2):  # each twin by hand, member by member
        x = torch.cat([batch.next_obs, smoothed], dim=-1)
        for i, layer in enumerate(td3.critic_target.layers):
            x = x @ layer.weight[member] + layer.bias[member, 0]
            x = x if i == len(td3.critic_target.layers) - 1 else x.relu()
        q_each.append(x.squeeze(-1))
    expected = batch.rew + 0.9 * torch.min(q_each[0], q_each[1])
    assert not torch.allclose(q_each[0], q_each[1])
    assert td3.td_target(batch).tolist() == pytest.approx(expected.tolist(), abs=1e-5)


# ---------------------------------------------------------------------------------------------
# delayed actor and target updates


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_actor_and_targets_move_every_policy_delay_updates() -> None:
    td3 = make_td3(policy_delay=3, tau=0.1)
    nets = ("critic", "actor", "actor_target", "critic_target")
    changes = dict.fromkeys(nets, 0)
    reported_actor = []
    batch = toy_batch(32)
    for n in range(1, 8):
        before = {name: flat(getattr(td3, name)) for name in nets}
        old_targets = [p.clone() for p in td3._target_params]
        losses = td3.update(batch)
        reported_actor.append("actor_loss" in losses)
        for name in nets:
            changes[name] += not torch.equal(before[name], flat(getattr(td3, name)))
        if n % 3 == 0:  # the Polyak step: target <- target + tau (online - target)
            for old, new, online in zip(old_targets, td3._target_params, td3._online_params):
                assert torch.allclose(new, old + 0.1 * (online - old), atol=1e-6)
    assert changes == {"critic": 7, "actor": 2, "actor_target": 2, "critic_target": 2}
    assert reported_actor == [False, False, True, False, False, True, False]
    assert td3.updates == 7


def test_state_dict_resumes_the_delay_phase() -> None:
    td3 = make_td3(policy_delay=2)
    batch = toy_batch(32)
    for _ in range(3):
        td3.update(batch)
    restored = TD3(3, 2, LOW, HIGH, hidden_size=16, policy_delay=2)
    # a deep copy, as a checkpoint file is: a loaded optimiser would share moment tensors
    restored.load_state_dict(copy.deepcopy(td3.state_dict()))
    assert restored.updates == 3
    torch.manual_seed(9)
    expected = td3.update(batch)
    torch.manual_seed(9)
    got = restored.update(batch)
    assert set(got) == {"critic_loss", "actor_loss"}  # the 4th update moves the actor
    assert {k: v.item() for k, v in got.items()} == {k: v.item() for k, v in expected.items()}
    assert torch.equal(flat(restored.actor_target), flat(td3.actor_target))


def test_updates_fit_the_critics_and_improve_the_policy() -> None:
    torch.manual_seed(0)
    td3 = TD3(4, 2, -torch.ones(2), torch.ones(2), hidden_size=64, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(256, 4, generator=gen)
    act = torch.rand(256, 2, generator=gen) * 2 - 1
    # done everywhere: Q is the reward, which punishes large first actions
    batch = Batch(obs, act, obs[:, 0] - act[:, 0] ** 2, obs, torch.ones(256))
    first = td3.update(batch)["critic_loss"].item()
    for _ in range(400):
        last = td3.update(batch)["critic_loss"].item()
    assert last < 0.1 * first
    assert td3.act(obs, deterministic=True)[:, 0].abs().mean() < 0.2


# ---------------------------------------------------------------------------------------------
# acting


def test_exploration_noise_is_scaled_and_bounded() -> None:
    td3 = make_td3(exploration_noise=0.1)
    set_constant_action(td3.actor, [0.0, 0.0])  # mu = centre
    obs = torch.zeros(20_000, 3)
    assert torch.equal(td3.act(obs, deterministic=True), td3.actor(obs))
    action = td3.act(obs)
    assert action.std(0).tolist() == pytest.approx([0.1 * 2.0, 0.1 * 0.5], rel=0.03)
    assert action.mean(0).tolist() == pytest.approx([0.0, 0.5], abs=0.01)

    loud = make_td3(exploration_noise=3.0)  # noise far beyond the bounds
    set_constant_action(loud.actor, [2.0, -2.0])
    action = loud.act(obs)
    assert ((action >= LOW) & (action <= HIGH)).all()
    assert (action == HIGH).any(0).all() and (action == LOW).any(0).all()  # clipped, both sides


# ---------------------------------------------------------------------------------------------
# the loop: each loss is a mean over the updates that reported it


class ScriptedPolicy:
    """Reports a critic loss every update and an actor loss every other one."""

    def __init__(self) -> None:
        self.calls = 0

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.calls += 1
        losses = {"critic_loss": torch.tensor(float(self.calls))}
        if self.calls % 2 == 0:
            losses["actor_loss"] = torch.tensor(10.0 * self.calls)
        return losses


def test_loop_averages_each_loss_over_its_own_updates() -> None:
    config, _ = resolve_config(TD3Config, "InvertedPendulum", "tiny", {"eval_episodes": 0})
    agent = TD3Agent(ENV, config, seed=0, total_steps=1000)
    agent.begin()
    for _ in range(80):
        agent.real_buffer.add(
            torch.zeros(agent.obs_dim), torch.zeros(1), 0.0, torch.zeros(agent.obs_dim), 0.0
        )
    agent.policy = ScriptedPolicy()
    agent.update_policy(4)
    row = agent._row(100, [], 0.0)
    assert row["critic_loss"] == pytest.approx(2.5)  # mean of 1..4
    assert row["actor_loss"] == pytest.approx(30.0)  # mean of 20 and 40, not (20 + 40) / 4
    assert "alpha" not in row
    agent.update_policy(1)  # the sums start afresh after a row
    row = agent._row(200, [], 0.0)
    assert row["critic_loss"] == pytest.approx(5.0) and "actor_loss" not in row


# ---------------------------------------------------------------------------------------------
# PDML's policy distance for TD3: the exploration Gaussian


def test_pdml_distance_of_td3_actors_is_their_exploration_gaussians() -> None:
    td3 = make_td3(exploration_noise=0.1)
    obs = torch.randn(5, 3)
    mean, log_std = actor_gaussian(td3.actor, obs)
    assert torch.equal(mean, td3.actor(obs))
    torch.testing.assert_close(log_std.exp(), torch.tensor([[0.2, 0.05]] * 5))
    set_constant_action(td3.actor, [0.0, 0.0])
    old = actor_gaussian(td3.actor, obs)
    set_constant_action(td3.actor, [math.atanh(0.05), 0.0])  # first action moves by 0.1
    new = actor_gaussian(td3.actor, obs)
    # equal stds: KL = d^2 / (2 std^2), so Pinsker's bound is |d| / (2 std) = 0.1 / 0.4
    assert tv_upper_bound(*new, *old).tolist() == pytest.approx([0.25] * 5, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# tiny runs


def assert_td3_losses(run: Path) -> None:
    """config.json names TD3; every learned row has finite TD3 losses and no temperature."""
    payload = json.loads((run / "config.json").read_text())
    # model-based algos name their policy optimiser in a setting; the model-free td3 algo is one
    assert payload["config"].get("policy", payload["algo"]) == "td3"
    rows = progress_rows(run)
    assert [int(r["env_step"]) for r in rows] == [100, 200, 300]
    assert rows[0]["critic_loss"] == rows[0]["actor_loss"] == ""  # nothing learned yet
    for row in rows[1:]:
        assert math.isfinite(float(row["critic_loss"])) and math.isfinite(float(row["actor_loss"]))
        assert row["alpha"] == ""


@pytest.fixture(scope="module")
def td3_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run("td3", tmp_path_factory.mktemp("td3"))


def test_tiny_td3_run_logs_td3_losses(td3_run: Path) -> None:
    assert_td3_losses(td3_run)
    payload = json.loads((td3_run / "config.json").read_text())
    assert payload["algo"] == "td3"
    assert "model_train_freq" not in payload["config"]
    assert payload["config"]["td3_policy_delay"] == 2
    assert progress_rows(td3_run)[-1]["model_loss_train"] == ""


def test_td3_resume_continues_bit_exactly(td3_run: Path, tmp_path: Path) -> None:
    assert_resume_reproduces("td3", td3_run, tmp_path)


@pytest.mark.parametrize("algo", ["mbpo", "usbpo", "pdml"])
def test_model_based_algos_train_with_td3(algo: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--env", ENV, "--algo", algo, "--preset", "tiny", "--steps", "300"]
    result = usbpo(*args, "--quiet", "--set", "policy=td3", "--out", str(run), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_td3_losses(run)
    deviation = json.loads((run / "config.json").read_text())["deviations_from_paper"]["policy"]
    assert deviation == {"paper": "sac", "used": "td3", "by": "--set"}
    assert float(progress_rows(run)[-1]["model_trainings"]) == 2.0


# ---------------------------------------------------------------------------------------------
# bad values


def test_td3_config_defaults_are_the_papers() -> None:
    config = TD3Config()
    assert (
        config.policy_optimiser(),
        config.updates_per_step,
        config.policy_lr,
        config.batch_size,
    ) == (
        "td3",
        1,
        3e-4,
        256,
    )
    assert (config.tau, config.gamma, config.hidden_size) == (5e-3, 0.99, 256)
    assert (config.td3_exploration_noise, config.td3_policy_noise) == (0.1, 0.2)
    assert (config.td3_noise_clip, config.td3_policy_delay) == (0.5, 2)
    assert dataclasses.replace(config, td3_policy_delay=3).td3_policy_delay == 3


@pytest.mark.parametrize(
    ("algo", "pair", "needles"),
    [
        ("mbpo", "policy=ppo", ["policy 'ppo'", "sac, td3"]),
        ("usbpo", "td3.policy_delay=0", ["td3_policy_delay", ">= 1", "0"]),
        ("td3", "td3.policy_delay=0", ["td3_policy_delay", ">= 1"]),
        ("td3", "td3.noise_clip=-0.1", ["td3_noise_clip", ">= 0"]),
        ("td3", "td3_policy_noise=-1", ["td3_policy_noise", ">= 0"]),
        ("td3", "td3.policy_delay=1.5", ["td3_policy_delay", "1.5"]),
        ("td3", "policy=sac", ["algo td3 trains td3 only", "--algo sac"]),
        ("sac", "policy=td3", ["algo sac trains sac only", "--algo td3"]),
        ("pdml", "td3_exploration_noise=0", ["pdml", "td3_exploration_noise > 0"]),
    ],
)
def test_bad_td3_values_are_one_line_errors(
    tmp_path: Path, algo: str, pair: str, needles: list[str]
) -> None:
    extra = ["--set", "policy=td3"] if algo == "pdml" else []
    args = ["train", "--env", ENV, "--algo", algo, "--preset", "tiny", "--steps", "300"]
    result = usbpo_inproc(*args, "--quiet", *extra, "--set", pair, cwd=tmp_path)
    assert_one_line_error(result, *needles)
    assert list(tmp_path.iterdir()) == []


def test_dotted_td3_key_sets_the_field(tmp_path: Path) -> None:
    result = usbpo_inproc(
        "config", "--algo", "mbpo", "--env", ENV, cwd=tmp_path
    )  # the listing names the TD3 settings with their docs
    assert result.returncode == 0, result.stderr
    for name in ("td3_exploration_noise", "td3_policy_noise", "td3_noise_clip", "td3_policy_delay"):
        assert name in result.stdout
    overrides = parse_overrides(["td3.policy_delay=3"], DynaConfig)
    assert overrides == {"td3_policy_delay": 3}
    config, deviations = resolve_config(TD3Config, "InvertedPendulum", "paper", overrides)
    assert config.td3_policy_delay == 3
    assert deviations["td3_policy_delay"] == {"paper": 2, "used": 3, "by": "--set"}


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({}, True),
        ({"td3_policy_delay": 1}, True),  # actor and targets every critic step
        ({"td3_policy_delay": 0}, False),
        ({"td3_exploration_noise": 0.0, "td3_policy_noise": 0.0, "td3_noise_clip": 0.0}, True),
        ({"td3_exploration_noise": -0.1}, False),
        ({"td3_policy_noise": -0.1}, False),
        ({"td3_noise_clip": -0.1}, False),
        ({"gamma": 1.0, "tau": 1.0}, True),
        ({"gamma": 1.5}, False),  # the off-policy loop's own checks come along
        ({"tau": 0.0}, False),
    ],
)
def test_td3_settings_are_checked_at_their_bounds(changes: dict, ok: bool) -> None:
    assert_validation(TD3Config(**changes), ok)
    assert_validation(DynaConfig(policy="td3", **changes), ok)  # TD3 inside the Dyna loop
