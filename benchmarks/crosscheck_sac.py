"""A second, independent SAC, to tell "our SAC is wrong" from "SAC does this here".

usbpo's SAC writes its gradients by hand and batches seeds (usbpo_cli/agents/sac.py). This
script is SAC written again from the paper (Haarnoja et al. 2018, with automatic entropy
tuning), in the plainest form: torch.nn modules, autograd, torch.optim.Adam, numpy replay
buffer, gymnasium env. It shares no code with the package. It uses the settings of
`usbpo train --algo sac` (paper preset): 256x256 networks, lr 3e-4, batch 256, gamma 0.99,
tau 0.005, target entropy -dim(A), 5000 uniform random steps, one update per env step, and
evaluates 5 deterministic episodes every 1000 steps on an env seeded with seed + 10000.

    python benchmarks/crosscheck_sac.py --env HalfCheetah-v4 --seed 0 --steps 20000 \
        --out benchmarks/runs/crosscheck-sac/HalfCheetah-v4/seed0.csv

Its curve is a reference for the shape and level of usbpo's SAC curve on the same task and
budget (same seed means the same initial weights, not the same run: the random streams of
the two programs differ after the first draws).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn


def mlp(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, outputs)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--out", type=Path, required=True, help="CSV: env_step,eval_return_mean")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose another --out")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    env, eval_env = gym.make(args.env), gym.make(args.env)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    scale, bias = torch.tensor((high - low) / 2), torch.tensor((high + low) / 2)

    actor = mlp(obs_dim, 2 * act_dim)  # mean and log-std of the pre-tanh Gaussian
    critics = nn.ModuleList([mlp(obs_dim + act_dim, 1), mlp(obs_dim + act_dim, 1)])
    targets = nn.ModuleList([mlp(obs_dim + act_dim, 1), mlp(obs_dim + act_dim, 1)])
    targets.load_state_dict(critics.state_dict())
    log_alpha = torch.zeros(1, requires_grad=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    critic_opt = torch.optim.Adam(critics.parameters(), lr=3e-4)
    alpha_opt = torch.optim.Adam([log_alpha], lr=3e-4)
    target_entropy = -float(act_dim)

    def policy(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised tanh-Gaussian action and its log-density (change of variables)."""
        mean, log_std = actor(obs).chunk(2, dim=-1)
        std = log_std.clamp(-20.0, 2.0).exp()
        normal = torch.distributions.Normal(mean, std)
        pre_tanh = normal.rsample()
        squashed = torch.tanh(pre_tanh)
        log_prob = normal.log_prob(pre_tanh) - torch.log(scale * (1 - squashed.pow(2)) + 1e-6)
        return squashed * scale + bias, log_prob.sum(-1)

    def q_min(nets: nn.ModuleList, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)
        return torch.min(nets[0](x), nets[1](x)).squeeze(-1)

    def evaluate() -> float:
        returns = []
        for _ in range(5):
            obs, _ = eval_env.reset()
            done, total = False, 0.0
            while not done:
                with torch.no_grad():
                    mean = actor(torch.as_tensor(obs, dtype=torch.float32)).chunk(2, -1)[0]
                obs, reward, terminated, truncated, _ = eval_env.step(
                    (torch.tanh(mean) * scale + bias).numpy()
                )
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        return float(np.mean(returns))

    buffer = {
        "obs": np.zeros((args.steps, obs_dim), np.float32),
        "act": np.zeros((args.steps, act_dim), np.float32),
        "rew": np.zeros(args.steps, np.float32),
        "next_obs": np.zeros((args.steps, obs_dim), np.float32),
        "done": np.zeros(args.steps, np.float32),  # terminated only: a time limit bootstraps
    }
    obs, _ = env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    eval_env.reset(seed=args.seed + 10_000)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["env_step,eval_return_mean,alpha,wall_time_s"]
    start = time.perf_counter()
    for step in range(args.steps):
        if step < 5000:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = policy(torch.as_tensor(obs, dtype=torch.float32))[0].numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(buffer, (obs, action, reward, next_obs, float(terminated))):
            buffer[key][step] = value
        obs = env.reset()[0] if terminated or truncated else next_obs
        if step >= 5000:
            rows = rng.integers(0, step + 1, 256)
            batch = (torch.as_tensor(v[rows]) for v in buffer.values())
            obs_b, act_b, rew_b, next_b, done_b = batch
            alpha = log_alpha.exp().detach()
            with torch.no_grad():
                next_act, next_log_prob = policy(next_b)
                soft_value = q_min(targets, next_b, next_act) - alpha * next_log_prob
                target = rew_b + 0.99 * (1 - done_b) * soft_value
            x = torch.cat([obs_b, act_b], dim=-1)
            critic_loss = sum(0.5 * (net(x).squeeze(-1) - target).pow(2).mean() for net in critics)
            critic_opt.zero_grad()
            critic_loss.backward()
            critic_opt.step()
            new_act, log_prob = policy(obs_b)
            actor_loss = (alpha * log_prob - q_min(critics, obs_b, new_act)).mean()
            actor_opt.zero_grad()
            actor_loss.backward()
            actor_opt.step()
            alpha_loss = -(log_alpha * (log_prob.detach() + target_entropy)).mean()
            alpha_opt.zero_grad()
            alpha_loss.backward()
            alpha_opt.step()
            with torch.no_grad():
                for p, p_target in zip(critics.parameters(), targets.parameters()):
                    p_target.lerp_(p, 0.005)
        if (step + 1) % 1000 == 0:
            score = evaluate()
            elapsed = time.perf_counter() - start
            lines.append(f"{step + 1},{score:.3f},{log_alpha.exp().item():.5f},{elapsed:.1f}")
            print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
