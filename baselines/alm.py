"""ALM, Aligned Latent Models (Ghugare, Bharadhwaj, Eysenbach, Levine, Salakhutdinov, ICLR 2023,
"Simplifying Model-based RL: Learning Representations, Latent-space Models, and Policies with One
Objective").

Why: a model of raw observations spends its capacity on whatever is hard to predict, useful or
not. ALM trains the encoder, the latent model and the policy on one lower bound on the expected
return, so the latent state keeps what predicts reward and what the model can predict, and the
policy is optimised in the same latent space the model is accurate in.

The networks, in latent space z (K = `alm_seq_len`, all actions scaled to [-1, 1] inside):
- encoder e(z|s), a diagonal Gaussian, and its Polyak target;
- latent model m(z'|z, a), a diagonal Gaussian;
- reward model r(z, a), and a classifier C(z, a, z') telling a real latent transition (z' from
  the target encoder on the real next state) from an imagined one (z' drawn from the model);
  log C / (1 - C), its logit, estimates log m - log e, the model-error part of the bound;
- twin critic Q(z, a), one batched network with a member axis, and its Polyak target;
- deterministic actor mu(z) (tanh), explored with Gaussian noise whose std decays linearly from
  `alm_expl_start` to `alm_expl_end` over `alm_expl_steps` env steps.

One update (per env step, after the random initial steps):
1. Encoder and model, on K-step real sequences (s_0, a_0, ..., a_{K-1}, s_K) inside one episode:
   z_0 ~ e(s_0), z_{t+1} ~ m(z_t, a_t) with the real actions, and maximise
     sum_{t<K} gamma^t [ r(z_t, a_t) - KL(m(.|z_t, a_t) || e_target(.|s_{t+1})) ]
       + gamma^K Q(z_K, mu(z_K) + noise),
   the reward model and critic frozen: their gradients reach only the latents.
2. Reward model (MSE to the real reward) and classifier (binary cross-entropy, first half of the
   batch real, second half imagined), on single real transitions encoded by the target encoder.
3. Critic: TD learning on those real latents, target min of the twin target critics at the next
   latent and the actor's noisy next action, masked by termination.
4. Actor: imagined rollouts of K steps from the real latents, reward r + `alm_classifier_weight`
   x logit C, lambda-returns bootstrapped from the critic; maximise their discounted mean.
5. Polyak-average the target encoder and the target critic.

Choices where DESIGN.md is silent, from the authors' code (RajGhugare19/alm) unless said otherwise:
- KL direction: KL(m(.|z_t, a_t) || e_target(.|s_{t+1})), the target encoder without gradient, and
  the sequence carried forward by the model's own samples. The paper writes the bound with z_{t+1}
  drawn from the encoder; carrying the model's samples is what lets the terminal Q and later
  rewards reach the encoder and model, and then the KL whose expectation is over those samples is
  this direction.
- The gamma^t weights of the model objective follow the paper (the authors' code sums unweighted).
  The terminal Q is multiplied by (1 - done) of the sequence's last transition (ours: no value
  after a termination); earlier transitions of a sequence never end an episode.
- Sequences: a window is used only when each transition's next state is the next slot's state and
  none of the first K-1 terminated, so time-limit ends (which the authors' buffer misses) and the
  ring buffer's seam are never crossed. Windows are drawn uniformly among the valid ones.
- One update per env step, 5000 random initial steps, replay buffer 100k, tau 0.005 for both
  targets at every update, Adam lr 1e-4 for all four optimisers (encoder + model, reward +
  classifier, critic, actor), each step's gradient norm clipped at 100.
- Networks: encoder and actor 2 x 512 ELU; model 2 x 1024 ELU; reward, classifier and critic
  Linear-LayerNorm-Tanh-Linear-ELU-Linear of width 512; orthogonal weights, zero biases; the
  Gaussians' means soft-bounded to +-30 and standard deviations to [0.1, 10] (softplus bounds).
- Noise: inside updates N(0, std^2) clipped to +-`alm_noise_clip`, the action then clipped to the
  bounds with a straight-through gradient; when acting the noise is not clipped. Acting encodes a
  sample of e(z|s); evaluation uses the encoder mean and no noise (the authors sample z there too).
  The schedule counts env steps since learning began (the authors' step counter also starts after
  the random steps).
- Actor objective: lambda-returns with `alm_lambda` = 0.95 over the K imagined steps,
  G_t = rhat_t + gamma ((1 - lambda) Q_{t+1} + lambda G_{t+1}), G_K = Q_K, and the loss is
  -mean_t gamma^t G_t (with lambda = 1 each G_t is the plain K-step return plus terminal Q). The
  actor sees each imagined latent without gradient and the classifier's z' is cut (both as the
  authors); the critic receives the actions with gradient (the paper's objective; the authors'
  code cuts them there too).
- Ours, for cost: the classifier has one logit (theirs two, whose difference is the same thing);
  one target-encoder sample of z and z' per update feeds steps 2 to 4 (theirs draws one per step).
- The actor's tanh output is mapped to the task's action bounds (theirs assumes [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from usbpo_cli.agents.buffers import Batch, ReplayBuffer
from usbpo_cli.agents.offpolicy import OffPolicyAgent, OffPolicyConfig
from usbpo_cli.agents.registry import Algorithm
from usbpo_cli.errors import UsageError
from usbpo_cli.models.distributions import gaussian_kl, normal_like
from usbpo_cli.models.nets import BatchedLinear, linear, mlp
from usbpo_cli.models.optim import make_adam
from usbpo_cli.util import torch_private
from usbpo_cli.util.settings import param

MEAN_BOUND = 30.0  # latent means are soft-bounded to +-30
STD_MIN, STD_MAX = 0.1, 10.0  # latent standard deviations are soft-bounded to [0.1, 10]


# ---------------------------------------------------------------------------------------------
# networks


def orthogonal_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Orthogonal weights and zero biases for every linear layer (batched ones per member)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, BatchedLinear):
            for member_weight in layer.weight.data:
                nn.init.orthogonal_(member_weight, generator=generator)
            nn.init.zeros_(layer.bias)


@dataclass
class ALMConfig(OffPolicyConfig):
    """ALM (Ghugare et al. 2022): encoder, latent model, critic and policy under one lower bound.
    Values from the paper and the authors' code (RajGhugare19/alm, cfgs/agent/alm.yaml)."""

    refused_keys: ClassVar[dict[str, str]] = {
        "policy": "algo alm trains its own actor-critic: policy must be alm, not {value!r}"
    }

    updates_per_step: int = param(1, "ALM updates (all networks) per real env step")
    hidden_size: int = param(512, "width of the hidden layers of encoder, actor, critic, reward")
    policy_lr: float = param(1e-4, "Adam learning rate of every ALM network")
    batch_size: int = param(512, "sequences (and transitions) per ALM update")
    replay_size: int = param(100_000, "capacity of the real-transition replay buffer")
    alm_latent_dim: int = param(50, "size of the latent state z")
    alm_model_hidden_size: int = param(1024, "width of the latent model's two hidden layers")
    alm_seq_len: int = param(3, "K: real sequence length of the model loss, imagined steps")
    alm_classifier_weight: float = param(0.1, "weight of the classifier reward log C/(1-C)")
    alm_lambda: float = param(0.95, "lambda of the policy's lambda-returns (1: K rewards + Q)")
    alm_expl_start: float = param(1.0, "exploration noise std when learning starts")
    alm_expl_end: float = param(0.1, "exploration noise std after alm_expl_steps")
    alm_expl_steps: int = param(100_000, "env steps over which the std decays linearly")
    alm_noise_clip: float = param(0.3, "clip of the action noise inside updates (not acting)")
    alm_max_grad_norm: float = param(100.0, "gradient-norm clip of each optimiser's step")

    def policy_optimiser(self) -> str:
        return "alm"  # its own actor-critic, trained with the model under one bound

    def validate(self) -> None:
        super().validate()
        self.require_positive(
            "alm_latent_dim",
            "alm_model_hidden_size",
            "alm_seq_len",
            "alm_expl_steps",
            "alm_max_grad_norm",
        )
        if self.batch_size < 2:
            raise UsageError(
                "alm needs batch_size >= 2 (half real, half imagined for the classifier)"
            )
        if not 0.0 <= self.alm_lambda <= 1.0:
            raise UsageError(f"alm_lambda must lie in [0, 1], got {self.alm_lambda}")
        self.require_non_negative(
            "alm_classifier_weight", "alm_expl_start", "alm_expl_end", "alm_noise_clip"
        )


class GaussianMLP(nn.Module):
    """x -> a diagonal Gaussian (mean, std): the encoder e(z|s) and the latent model m(z'|z,a)."""

    def __init__(
        self,
        in_dim: int,
        hidden_size: int,
        latent_dim: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.net = mlp(in_dim, hidden_size, 2 * latent_dim, nn.ELU, generator)
        orthogonal_init(self, generator)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_mean, raw_std = self.net(torch.cat(inputs, dim=-1)).chunk(2, dim=-1)
        mean = MEAN_BOUND * torch.tanh(raw_mean / MEAN_BOUND)
        std = STD_MAX - F.softplus(STD_MAX - raw_std)
        std = STD_MIN + F.softplus(std - STD_MIN)
        return mean, std


def sample(
    mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A reparameterised draw: gradients flow into mean and std."""
    return mean + std * normal_like(mean, generator)


class LayerNormMLP(nn.Module):
    """Linear-LayerNorm-Tanh-Linear-ELU-Linear on the concatenated inputs: reward model and
    classifier (one output each)."""

    def __init__(
        self, in_dim: int, hidden_size: int, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            linear(in_dim, hidden_size, generator),
            nn.LayerNorm(hidden_size),
            nn.Tanh(),
            linear(hidden_size, hidden_size, generator),
            nn.ELU(),
            linear(hidden_size, 1, generator),
        )
        orthogonal_init(self, generator)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat(inputs, dim=-1)).squeeze(-1)


class TwinCritic(nn.Module):
    """Two Q(z, a) networks as one, with a member axis: the LayerNorm MLP above, batched."""

    def __init__(
        self,
        in_dim: int,
        hidden_size: int,
        members: int = 2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.members, self.hidden_size = members, hidden_size
        self.first = BatchedLinear(members, in_dim, hidden_size, generator=generator)
        self.norm_weight = nn.Parameter(torch.ones(members, 1, hidden_size))
        self.norm_bias = nn.Parameter(torch.zeros(members, 1, hidden_size))
        self.second = BatchedLinear(members, hidden_size, hidden_size, generator=generator)
        self.out = BatchedLinear(members, hidden_size, 1, generator=generator)
        orthogonal_init(self, generator)

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """z [..., latent], action [..., act] -> Q [members, ...]."""
        x = torch.cat([z, action], dim=-1)
        batch_shape = x.shape[:-1]
        x = x.reshape(1, -1, x.shape[-1]).expand(self.members, -1, -1)
        h = F.layer_norm(self.first(x), (self.hidden_size,)) * self.norm_weight + self.norm_bias
        h = F.elu(self.second(torch.tanh(h)))
        return self.out(h).reshape(self.members, *batch_shape)


class LatentActor(nn.Module):
    """Deterministic policy mu(z) in [-1, 1]^act_dim."""

    def __init__(
        self,
        latent_dim: int,
        hidden_size: int,
        act_dim: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.net = mlp(latent_dim, hidden_size, act_dim, nn.ELU, generator)
        orthogonal_init(self, generator)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z))


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters without gradients for a while: a loss can flow through these networks into
    their inputs without computing (or leaving behind) gradients for the networks themselves."""
    for module in modules:
        module.requires_grad_(False)
    try:
        yield
    finally:
        for module in modules:
            module.requires_grad_(True)


# ---------------------------------------------------------------------------------------------
# the pieces, each checkable by hand


def exploration_std(progress: int, start: float, end: float, duration: int) -> float:
    """Linear decay from `start` to `end` over `duration` env steps, then constant."""
    fraction = min(max(progress / duration, 0.0), 1.0)
    return start + fraction * (end - start)


def noisy_action(
    mean: torch.Tensor, std: float, clip: float | None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """mean + N(0, std^2) noise (clipped to +-clip when given), then clipped to [-1, 1] with a
    straight-through gradient, so the actor still gets a gradient at the bounds."""
    noise = normal_like(mean, generator) * std
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    action = mean + noise
    return action + (action.clamp(-1.0, 1.0) - action).detach()


def classifier_loss(real_logits: torch.Tensor, imagined_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy: real latent transitions are labelled 1, imagined ones 0, averaged
    over all of them."""
    logits = torch.cat([real_logits, imagined_logits])
    labels = torch.cat([torch.ones_like(real_logits), torch.zeros_like(imagined_logits)])
    return F.binary_cross_entropy_with_logits(logits, labels)


def lambda_returns(
    rewards: torch.Tensor, next_values: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """G_t = r_t + gamma ((1 - lam) V_{t+1} + lam G_{t+1}) for t < K, with G_K = V_K.

    rewards [K, B] are r_0..r_{K-1}; next_values [K, B] are V_1..V_K."""
    horizon = rewards.shape[0]
    returns = [next_values[-1]]
    for t in reversed(range(horizon)):
        returns.append(rewards[t] + gamma * ((1 - lam) * next_values[t] + lam * returns[-1]))
    return torch.stack(returns[:0:-1])


# ---------------------------------------------------------------------------------------------
# K-step real sequences from the replay buffer


class Sequences(NamedTuple):
    obs: torch.Tensor  # [K+1, B, obs_dim]: s_0 .. s_K
    act: torch.Tensor  # [K, B, act_dim]: a_0 .. a_{K-1}, in env units
    done: torch.Tensor  # [B]: 1.0 where the last transition terminated


def sequence_starts_valid(buffer: ReplayBuffer, starts: torch.Tensor, length: int) -> torch.Tensor:
    """Whether the `length` transitions from each start are consecutive steps of one episode:
    they do not cross the ring's seam (newest to oldest), each next state is the next slot's
    state (a reset or a time-limit end breaks this), and none but the last terminated."""
    offsets = torch.arange(length - 1, device=starts.device)
    current = (starts[:, None] + offsets) % buffer.capacity  # [n, length - 1]
    following = (current + 1) % buffer.capacity
    valid = (following != buffer.pointer).all(1) & (starts < buffer.size)
    continuous = (buffer.next_obs[current] == buffer.obs[following]).all(-1)
    return valid & continuous.all(1) & (buffer.done[current] == 0).all(1)


def valid_sequence_starts(buffer: ReplayBuffer, length: int, chunk: int = 8192) -> torch.Tensor:
    """Every valid start index, in order (a scan of the buffer in chunks)."""
    found = []
    for first in range(0, buffer.size, chunk):
        starts = torch.arange(first, min(first + chunk, buffer.size), device=buffer.device)
        found.append(starts[sequence_starts_valid(buffer, starts, length)])
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.long, device=buffer.device)


def sample_sequence_starts(
    buffer: ReplayBuffer, n: int, length: int, rounds: int = 8
) -> torch.Tensor:
    """`n` start indices drawn uniformly among the valid ones: uniform candidates, invalid ones
    rejected; if that is slow (few valid windows), the rest is drawn from a full scan."""
    picked = torch.zeros(0, dtype=torch.long, device=buffer.device)
    for _ in range(rounds):
        candidates = buffer.sample_indices(n)
        picked = torch.cat([picked, candidates[sequence_starts_valid(buffer, candidates, length)]])
        if picked.numel() >= n:
            return picked[:n]
    valid = valid_sequence_starts(buffer, length)
    if valid.numel() == 0:
        raise RuntimeError(f"the replay buffer holds no {length}-step sequence within an episode")
    more = torch.randint(
        valid.numel(), (n - picked.numel(),), device=buffer.device, generator=buffer.generator
    )
    extra = valid[more]
    return torch.cat([picked, extra])


def gather_sequences(buffer: ReplayBuffer, starts: torch.Tensor, length: int) -> Sequences:
    idx = (starts[None, :] + torch.arange(length, device=starts.device)[:, None]) % buffer.capacity
    obs = torch.cat([buffer.obs[idx[:1]], buffer.next_obs[idx]])
    return Sequences(obs, buffer.act[idx], buffer.done[idx[-1]])


class ALMBatch(NamedTuple):
    sequences: Sequences  # for the encoder and model
    transitions: Batch  # for reward model, classifier, critic and actor


# ---------------------------------------------------------------------------------------------
# the learner


class ALM:
    """All of ALM's networks and their updates; `progress` (env steps since learning began)
    drives the exploration schedule."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        act_low: torch.Tensor,
        act_high: torch.Tensor,
        config: ALMConfig,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        init_generator: torch.Generator | None = None,
    ) -> None:
        self.config, self.device = config, torch.device(device)
        self.generator = generator  # every sample and action noise of acting and updates
        g = init_generator
        self.gamma, self.horizon = config.gamma, config.alm_seq_len
        latent, hidden = config.alm_latent_dim, config.hidden_size
        self.act_scale = ((act_high - act_low) / 2.0).to(self.device)
        self.act_bias = ((act_high + act_low) / 2.0).to(self.device)
        self.encoder = GaussianMLP(obs_dim, hidden, latent, g).to(self.device)
        self.encoder_target = GaussianMLP(obs_dim, hidden, latent, g).to(self.device)
        self.encoder_target.load_state_dict(self.encoder.state_dict())
        self.encoder_target.requires_grad_(False)
        self.model = GaussianMLP(latent + act_dim, config.alm_model_hidden_size, latent, g)
        self.model.to(self.device)
        self.reward = LayerNormMLP(latent + act_dim, hidden, g).to(self.device)
        self.classifier = LayerNormMLP(2 * latent + act_dim, hidden, g).to(self.device)
        self.critic = TwinCritic(latent + act_dim, hidden, generator=g).to(self.device)
        self.critic_target = TwinCritic(latent + act_dim, hidden, generator=g).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.actor = LatentActor(latent, hidden, act_dim, g).to(self.device)

        self.world_params = [*self.encoder.parameters(), *self.model.parameters()]
        self.reward_params = [*self.reward.parameters(), *self.classifier.parameters()]
        lr = config.policy_lr
        self.world_opt = make_adam(self.world_params, lr)
        self.reward_opt = make_adam(self.reward_params, lr)
        self.critic_opt = make_adam(self.critic.parameters(), lr)
        self.actor_opt = make_adam(self.actor.parameters(), lr)
        self._online = [*self.encoder.parameters(), *self.critic.parameters()]
        self._targets = [*self.encoder_target.parameters(), *self.critic_target.parameters()]
        self.progress = 0

    def exploration_std(self) -> float:
        c = self.config
        return exploration_std(self.progress, c.alm_expl_start, c.alm_expl_end, c.alm_expl_steps)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        mean, std = self.encoder(obs)
        if deterministic:
            action = self.actor(mean)
        else:
            action = noisy_action(
                self.actor(sample(mean, std, generator=self.generator)),
                self.exploration_std(),
                None,
                self.generator,
            )
        return action * self.act_scale + self.act_bias

    def _step(self, optimiser: torch.optim.Optimizer, loss: torch.Tensor, params: list) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, self.config.alm_max_grad_norm, foreach=True)
        optimiser.step()

    def update(self, batch: ALMBatch) -> dict[str, torch.Tensor]:
        """One step of every network; returns detached losses."""
        std = self.exploration_std()
        model_loss = self.update_encoder_and_model(batch.sequences, std)
        obs, act, rew, next_obs, done = batch.transitions
        act = (act - self.act_bias) / self.act_scale
        with torch.no_grad():
            z, z_next = sample(
                *self.encoder_target(torch.stack([obs, next_obs])), generator=self.generator
            ).unbind(0)
        self.update_reward_and_classifier(z, act, rew, z_next)
        critic_loss = self.update_critic(z, act, rew, z_next, done, std)
        actor_loss = self.update_actor(z, std)
        with torch.no_grad():
            torch_private.lerp_(self._targets, self._online, self.config.tau)
        return {
            "model_loss_train": model_loss,
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
        }

    def update_encoder_and_model(self, sequences: Sequences, std: float) -> torch.Tensor:
        """Step 1: ascend the lower bound on K real steps, carried forward by the model."""
        act = (sequences.act - self.act_bias) / self.act_scale
        with torch.no_grad():
            posterior_mean, posterior_std = self.encoder_target(sequences.obs[1:])
        z = sample(*self.encoder(sequences.obs[0]), generator=self.generator)
        bound = torch.zeros_like(sequences.done)
        with frozen(self.reward, self.critic):
            for t in range(self.horizon):
                prior_mean, prior_std = self.model(z, act[t])
                kl = gaussian_kl(
                    prior_mean, prior_std.log(), posterior_mean[t], posterior_std[t].log()
                )
                bound = bound + self.gamma**t * (self.reward(z, act[t]) - kl)
                z = sample(prior_mean, prior_std, generator=self.generator)
            with torch.no_grad():
                final_action = noisy_action(
                    self.actor(z), std, self.config.alm_noise_clip, self.generator
                )
            final_q = self.critic(z, final_action).min(0).values
            bound = bound + self.gamma**self.horizon * (1.0 - sequences.done) * final_q
        loss = -bound.mean()
        self._step(self.world_opt, loss, self.world_params)
        return loss.detach()

    def update_reward_and_classifier(
        self, z: torch.Tensor, act: torch.Tensor, rew: torch.Tensor, z_next: torch.Tensor
    ) -> torch.Tensor:
        """Step 2: reward regression and real-versus-imagined classification."""
        half = z.shape[0] // 2
        with torch.no_grad():
            z_imagined = sample(*self.model(z[half:], act[half:]), generator=self.generator)
        reward_loss = F.mse_loss(self.reward(z, act), rew)
        real_logits = self.classifier(z[:half], act[:half], z_next[:half])
        imagined_logits = self.classifier(z[half:], act[half:], z_imagined)
        loss = reward_loss + classifier_loss(real_logits, imagined_logits)
        self._step(self.reward_opt, loss, self.reward_params)
        return loss.detach()

    def update_critic(
        self,
        z: torch.Tensor,
        act: torch.Tensor,
        rew: torch.Tensor,
        z_next: torch.Tensor,
        done: torch.Tensor,
        std: float,
    ) -> torch.Tensor:
        """Step 3: TD learning on real latents, clipped double-Q target."""
        with torch.no_grad():
            next_action = noisy_action(
                self.actor(z_next), std, self.config.alm_noise_clip, self.generator
            )
            next_q = self.critic_target(z_next, next_action).min(0).values
            target = rew + self.gamma * (1.0 - done) * next_q
        loss = ((self.critic(z, act) - target) ** 2).mean()  # mean over both members
        self._step(self.critic_opt, loss, list(self.critic.parameters()))
        return loss.detach()

    def update_actor(self, z: torch.Tensor, std: float) -> torch.Tensor:
        """Step 4: ascend lambda-returns of K imagined steps from the real latents."""
        clip = self.config.alm_noise_clip
        latents, actions = [z], []
        with frozen(self.model, self.reward, self.classifier, self.critic):
            for _ in range(self.horizon):
                actions.append(
                    noisy_action(self.actor(latents[-1].detach()), std, clip, self.generator)
                )
                latents.append(
                    sample(*self.model(latents[-1], actions[-1]), generator=self.generator)
                )
            actions.append(
                noisy_action(self.actor(latents[-1].detach()), std, clip, self.generator)
            )
            zs, acts = torch.stack(latents), torch.stack(actions)  # [K+1, B, ...]
            rewards = self.reward(zs[:-1], acts[:-1])
            logits = self.classifier(zs[:-1], acts[:-1], zs[1:].detach())
            # the classifier reward log C/(1-C), C = sigmoid(logit), is the logit itself
            rewards = rewards + self.config.alm_classifier_weight * logits
            next_q = self.critic(zs[1:], acts[1:]).min(0).values
        returns = lambda_returns(rewards, next_q, self.gamma, self.config.alm_lambda)
        discounts = self.gamma ** torch.arange(self.horizon, device=z.device, dtype=z.dtype)
        loss = -(discounts[:, None] * returns).mean()
        self._step(self.actor_opt, loss, list(self.actor.parameters()))
        return loss.detach()

    _NETWORKS = (
        "encoder",
        "encoder_target",
        "model",
        "reward",
        "classifier",
        "critic",
        "critic_target",
        "actor",
    )
    _OPTIMISERS = ("world_opt", "reward_opt", "critic_opt", "actor_opt")

    def state_dict(self, seed: int = 0) -> dict[str, Any]:
        state: dict[str, Any] = {"progress": self.progress}
        for name in self._NETWORKS + self._OPTIMISERS:
            state[name] = getattr(self, name).state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], seed: int = 0) -> None:
        for name in self._NETWORKS + self._OPTIMISERS:
            getattr(self, name).load_state_dict(state[name])
        self.progress = state["progress"]


# ---------------------------------------------------------------------------------------------
# the agent on the shared env loop


class ALMAgent(OffPolicyAgent):
    config: ALMConfig
    policy: ALM
    vectorises = False
    single_seed_reason = "its world model and sequence sampling are written for one seed"
    mixed_precision = False  # its latent-model objective is not checked under bf16

    def __init__(self, env_id: str, config: ALMConfig, **kwargs: Any) -> None:
        super().__init__(env_id, config, **kwargs)
        self.sequences_ready = False  # found again after a resume: a scan, no random draws

    def make_policy(self) -> ALM:
        return ALM(
            self.obs_dim,
            self.act_dim,
            self.act_low,
            self.act_high,
            self.config,
            self.device,
            self.generator,
            self.init_generator,
        )

    def policy_batch(self) -> ALMBatch:
        n, length = self.config.batch_size, self.config.alm_seq_len
        starts = sample_sequence_starts(self.real_buffer, n, length)
        sequences = gather_sequences(self.real_buffer, starts, length)
        return ALMBatch(sequences, self.real_buffer.sample(n))

    def learn(self, step: int) -> None:
        self.policy.progress = step + 1 - self.config.initial_steps
        if not self.sequences_ready:
            # Until one K-step window exists inside an episode there is nothing to learn from.
            found = valid_sequence_starts(self.real_buffer, self.config.alm_seq_len).numel()
            self.sequences_ready = found > 0
            if not self.sequences_ready:
                return
        self.update_policy(self.config.updates_per_step)


ALGORITHM = Algorithm(
    "alm", ALMAgent, ALMConfig, "ALM: encoder, latent model and policy trained on one lower bound"
)
