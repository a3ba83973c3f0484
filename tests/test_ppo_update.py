"""A whole PPO update, `PPOAgent.update`, against an independent float64 computation.

With `ppo_epochs=1` and `ppo_num_minibatches=1` the update is one Adam step on the whole
rollout, so it can be recomputed here from the formulas alone (on a float64 deep copy of the
model, with its own Adam):

    GAE:       delta_t = r_t + gamma (1 - term_t) V_{t+1} - V_t,
               A_t = delta_t + gamma lambda (1 - end_t) A_{t+1},   targets = A + V
    A_hat      = (A - mean A) / (unbiased std A + 1e-8)
    r          = exp(log pi(a | s) - old log-prob)
    policy     = mean max(-r A_hat, -clip(r, 1 - eps, 1 + eps) A_hat)
    value      = 0.5 mean max((v - t)^2, (v_old + clip(v - v_old, -eps, eps) - t)^2)
    loss       = policy + value_coef value - entropy_coef entropy
    then the global gradient norm clipped at `ppo_max_grad_norm` and one Adam(eps=1e-5) step.

The rollout's old log-probabilities are the current policy's plus noise, so the ratios are not
1 and some leave the clip range; its values are the critic's plus noise, so value clipping binds
on some rows; rewards and terminations give advantages of both signs. The test compares the
agent's parameters, the (clipped) gradients left on them, and the logged losses with the
reference. A second test checks the learning-rate annealing of the train loop.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from baselines.ppo import PPOAgent, PPOConfig
from usbpo_cli.runs.config import resolve_config

ENV = "InvertedPendulum-v4"
STEPS, ENVS = 6, 2


def make_agent(total_steps: int = 1000, **changes: object) -> PPOAgent:
    config, _ = resolve_config(PPOConfig, "InvertedPendulum", "tiny", dict(changes))
    return PPOAgent(ENV, config, seed=0, total_steps=total_steps)


def reference_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    var = torch.exp(2.0 * log_std)
    return (-((x - mean) ** 2) / (2.0 * var) - log_std - 0.5 * math.log(2.0 * math.pi)).sum(-1)


def test_one_update_matches_a_hand_computed_adam_step() -> None:
    lr, clip, value_coef, entropy_coef, max_norm = 1e-3, 0.2, 0.7, 0.05, 0.5
    agent = make_agent(
        ppo_epochs=1,
        ppo_num_minibatches=1,
        ppo_anneal_lr=False,
        ppo_lr=lr,
        ppo_clip=clip,
        ppo_value_coef=value_coef,
        ppo_entropy_coef=entropy_coef,
        ppo_max_grad_norm=max_norm,
        ppo_clip_value_loss=True,
    )
    config = agent.config
    gamma, lam = config.gamma, config.ppo_gae_lambda
    gen = torch.Generator().manual_seed(3)
    rollout, model = agent.rollout, agent.model
    obs = torch.randn(STEPS, ENVS, rollout.obs.shape[-1], generator=gen)
    actions = torch.randn(STEPS, ENVS, rollout.actions.shape[-1], generator=gen)
    with torch.no_grad():
        mean = model.actor_mean(obs)
        current = reference_log_prob(actions, mean, model.actor_log_std.expand_as(mean))
        critic = model.value(obs)
    old_log_probs = current + 0.4 * torch.randn(STEPS, ENVS, generator=gen)
    values = critic + 0.5 * torch.randn(STEPS, ENVS, generator=gen)
    rewards = torch.randn(STEPS, ENVS, generator=gen)
    terminated = torch.zeros(STEPS, ENVS)
    terminated[2, 0] = terminated[4, 1] = 1.0
    truncated = torch.zeros(STEPS, ENVS)
    truncated[3, 1] = 1.0
    truncation_values = torch.zeros(STEPS, ENVS)
    truncation_values[3, 1] = 0.8
    last_values = torch.tensor([0.3, -0.6])
    rollout.obs[:STEPS], rollout.actions[:STEPS] = obs, actions
    rollout.log_probs[:STEPS], rollout.values[:STEPS] = old_log_probs, values
    rollout.rewards[:STEPS], rollout.terminated[:STEPS] = rewards, terminated
    rollout.truncated[:STEPS], rollout.truncation_values[:STEPS] = truncated, truncation_values

    # --- the reference, in float64 ---
    ref = copy.deepcopy(model).double()
    d = {
        "obs": obs.double(),
        "act": actions.double(),
        "old": old_log_probs.double(),
        "v": values.double(),
        "r": rewards.double(),
    }
    adv = torch.zeros(STEPS, ENVS, dtype=torch.float64)
    running = torch.zeros(ENVS, dtype=torch.float64)
    for t in reversed(range(STEPS)):
        for n in range(ENVS):
            if truncated[t, n]:
                nxt = float(truncation_values[t, n])
            elif t == STEPS - 1:
                nxt = float(last_values[n])
            else:
                nxt = float(values[t + 1, n])
            delta = d["r"][t, n] + gamma * (1.0 - terminated[t, n].item()) * nxt - d["v"][t, n]
            end = terminated[t, n].item() or truncated[t, n].item()
            running[n] = delta + gamma * lam * (0.0 if end else 1.0) * running[n]
            adv[t, n] = running[n]
    targets = (adv + d["v"]).flatten()
    a = adv.flatten()
    assert (a > 0).any() and (a < 0).any()
    n_rows = a.numel()
    a_mean = a.sum() / n_rows
    a_hat = (a - a_mean) / (((a - a_mean) ** 2).sum() / (n_rows - 1)).sqrt().add(1e-8)
    flat_obs, flat_act = d["obs"].flatten(0, 1), d["act"].flatten(0, 1)
    mean64 = ref.actor_mean(flat_obs)
    logp = reference_log_prob(flat_act, mean64, ref.actor_log_std.expand_as(mean64))
    ratio = torch.exp(logp - d["old"].flatten())
    clipped_rows = (ratio < 1 - clip) | (ratio > 1 + clip)
    assert clipped_rows.any() and not clipped_rows.all()
    policy = torch.max(-ratio * a_hat, -ratio.clamp(1 - clip, 1 + clip) * a_hat).mean()
    v_new = ref.critic(flat_obs).squeeze(-1)
    v_old = d["v"].flatten()
    moved = v_old + (v_new - v_old).clamp(-clip, clip)
    sq, sq_moved = (v_new - targets) ** 2, (moved - targets) ** 2
    assert (sq_moved > sq).any() and (sq_moved < sq).any()  # value clipping binds on some rows
    value = 0.5 * torch.max(sq, sq_moved).mean()
    entropy = (0.5 + 0.5 * math.log(2.0 * math.pi) + ref.actor_log_std).sum()
    loss = policy + value_coef * value - entropy_coef * entropy
    loss.backward()
    policy, value = policy.detach(), value.detach()
    params = list(ref.parameters())
    norm = torch.sqrt(sum((p.grad**2).sum() for p in params))
    assert norm > max_norm  # the clip is active
    scale = min(1.0, max_norm / (float(norm) + 1e-6))
    for p in params:
        p.grad.mul_(scale)
    torch.optim.Adam(params, lr=lr, eps=1e-5).step()

    # --- the agent ---
    torch.manual_seed(0)
    agent.update(STEPS, last_values)
    for (name, got), want in zip(model.named_parameters(), params, strict=True):
        torch.testing.assert_close(got.grad.double(), want.grad, atol=1e-6, rtol=1e-4, msg=name)
        torch.testing.assert_close(got.double(), want.detach(), atol=1e-6, rtol=0, msg=name)
    assert agent._loss_counts == {"actor_loss": 1, "critic_loss": 1}
    assert float(agent._loss_sums["actor_loss"]) == pytest.approx(policy.item(), abs=1e-5)
    assert float(agent._loss_sums["critic_loss"]) == pytest.approx(value.item(), abs=1e-5)


def test_learning_rate_is_annealed_linearly_before_each_rollout() -> None:
    """The train loop sets lr = ppo_lr (1 - step / total_steps) before each rollout: with 30
    steps in rollouts of 5 steps x 2 envs, the updates run at steps 0, 10 and 20."""
    lr, total = 1e-3, 30
    agent = make_agent(total_steps=total, ppo_num_steps=5, ppo_lr=lr, ppo_anneal_lr=True)
    seen: list[float] = []
    agent.update = lambda steps, last: seen.append(agent.optimizer.param_groups[0]["lr"])

    class Rows:
        def write(self, row: dict) -> None:
            pass

    agent.train(Rows())
    assert seen == pytest.approx([lr * (1 - s / total) for s in (0, 10, 20)], rel=1e-12)
