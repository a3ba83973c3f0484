"""The probabilistic dynamics ensemble (PETS/MBPO style) and its maximum-likelihood training.

One batched network predicts a diagonal Gaussian over [reward, next_obs - obs] for every member
at once. The input normaliser lives in registered buffers, so a `copy.deepcopy` of the model
(USB-PO's frozen M1) carries its own normaliser with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from usbpo_cli.models.nets import BatchedMLP, rows_per_member, stacked_mlp
from usbpo_cli.models.optim import adam_step, make_adam
from usbpo_cli.models.seed_axis import (
    SeedAxis,
    adam_seed_state,
    load_adam_seed_state,
    load_module_seed_state,
    module_axes,
    module_seed_state,
    parameter_axes,
)
from usbpo_cli.util import torch_private

# Rows per elite in one forward pass of a model rollout step: at 100k states a single pass makes
# [elites, 20k, 200] activations (80 MB each) that no cache holds; passes of 1024 rows ran a
# 100k-state step 1.7-1.9x faster on a CPU, with the same results.
ROWS_PER_PASS = 1024


class GaussianEnsemble(nn.Module):
    """E members per seed, S seeds (`generators`, one per seed; one seed is S = 1): S E members
    as one batched network, seed s's at [s E, (s + 1) E). Each seed has its own input
    normaliser (`input_mean`, `input_std`: [S, in]), log-variance bounds ([S, 1, out]) and
    elites (`elites`: [S, num_elites], member numbers within the seed)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        ensemble_size: int = 7,
        num_elites: int = 5,
        hidden_size: int = 200,
        hidden_layers: int = 4,
        generator: torch.Generator | None = None,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> None:
        super().__init__()
        generators = list(generators) if generators is not None else [generator]
        self.seeds = len(generators)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.in_dim, self.out_dim = obs_dim + act_dim, obs_dim + 1
        self.ensemble_size, self.num_elites = ensemble_size, num_elites
        self.hidden_size, self.hidden_layers = hidden_size, hidden_layers
        per_seed = [
            BatchedMLP(
                ensemble_size,
                self.in_dim,
                2 * self.out_dim,
                hidden_size,
                hidden_layers,
                nn.SiLU,
                init="truncated_normal",
                generator=g,
            )
            for g in generators
        ]
        self.net = per_seed[0] if self.seeds == 1 else stacked_mlp(per_seed)
        seeds = self.seeds
        self.max_logvar = nn.Parameter(torch.full((seeds, 1, self.out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((seeds, 1, self.out_dim), -10.0))
        self.register_buffer("input_mean", torch.zeros(seeds, self.in_dim))
        self.register_buffer("input_std", torch.ones(seeds, self.in_dim))
        self.register_buffer("elites", torch.arange(num_elites).repeat(seeds, 1))

    def seed_axes(self) -> dict[str, SeedAxis]:
        """How each state-dict entry holds the seeds (`models/seed_axis.py`)."""
        own, shared = SeedAxis(self.seeds, own=True), SeedAxis(self.seeds, own=False)
        extra = {"max_logvar": shared, "min_logvar": shared}
        extra.update({name: own for name in ("input_mean", "input_std", "elites")})
        return module_axes(self, self.seeds, extra)

    def seed_of(self, members: torch.Tensor) -> torch.Tensor:
        """The seed of each member number (over all seeds' members)."""
        return torch.div(members, self.ensemble_size, rounding_mode="floor")

    def global_members(self, members: torch.Tensor) -> torch.Tensor:
        """Member numbers within each seed ([S, ...]) as numbers over all seeds' members."""
        offsets = torch.arange(self.seeds, device=members.device) * self.ensemble_size
        return members + offsets.view(-1, *([1] * (members.dim() - 1)))

    def fit_normaliser(self, inputs: torch.Tensor) -> None:
        """Each seed's mean and std of its training inputs ([S, N, in]; [N, in] alone)."""
        inputs = inputs if inputs.dim() == 3 else inputs.unsqueeze(0)
        std = inputs.std(1)
        self.input_mean.copy_(inputs.mean(1))
        self.input_std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))

    def forward(
        self, inputs: torch.Tensor, members: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and logvar [members, N, out] of the `members` (numbers over all seeds; all S E
        when None) for raw inputs: [members, N, in], one set of rows per member, or a lone
        seed's [N, in] shared by all its members. Each member normalises with its seed's
        statistics and bounds its log-variance with its seed's bounds."""
        if inputs.dim() == 2:  # a lone seed's rows for every one of its members
            x = (inputs - self.input_mean[0]) / self.input_std[0]
            count = self.ensemble_size if members is None else len(members)
            x = x.unsqueeze(0).expand(count, -1, -1)
            max_logvar, min_logvar = self.max_logvar, self.min_logvar
        else:
            every = torch.arange(self.seeds * self.ensemble_size, device=inputs.device)
            seed = self.seed_of(every if members is None else members)
            x = (inputs - self.input_mean[seed].unsqueeze(1)) / self.input_std[seed].unsqueeze(1)
            max_logvar, min_logvar = self.max_logvar[seed], self.min_logvar[seed]
        mean, logvar = self.net(x, members).chunk(2, dim=-1)
        # Learned soft bounds keep the variance in the range seen in training (PETS).
        logvar = max_logvar - F.softplus(max_logvar - logvar)
        logvar = min_logvar + F.softplus(logvar - min_logvar)
        return mean, logvar

    def seed_rows(self, inputs: torch.Tensor) -> torch.Tensor:
        """Each seed's rows [S, N, in] for every one of its members: [S E, N, in]."""
        return rows_per_member(inputs, self.ensemble_size)

    def mean_std(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's Gaussian for inputs [N, in] (a lone seed) or [S, N, in] (each seed's
        rows for its members): mean and std, each [S E, N, out]."""
        mean, logvar = self(inputs if inputs.dim() == 2 else self.seed_rows(inputs))
        return mean, (0.5 * logvar).exp()

    def member_mean_std(
        self, inputs: torch.Tensor, members: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample i's Gaussian under member `members[i]` only: mean and std, each [N, out] (a
        lone seed: inputs [N, in], members [N]) or [S, N, out] (inputs [S, N, in] and members
        [S, N], each a member number within its seed).

        Equal to picking from `mean_std` (tested), but each member runs on its own samples
        alone: rows are grouped by member into [members drawn, largest group, in], zero-padded,
        so the work is about N rows instead of N per member. One host sync sizes the groups.
        """
        lone = inputs.dim() == 2
        if not lone:
            shape = inputs.shape
            members = self.global_members(members).reshape(-1)
            inputs = inputs.reshape(-1, self.in_dim)
        n = inputs.shape[0]
        counts = torch.bincount(members, minlength=self.seeds * self.ensemble_size)
        drawn = torch.nonzero(counts).squeeze(1)
        group_of = torch.zeros_like(counts)
        group_of[drawn] = torch.arange(len(drawn), device=counts.device)
        order = torch.argsort(members, stable=True)
        sorted_members = members[order]
        first_slot = torch.cumsum(counts, 0) - counts
        slot = torch.arange(n, device=inputs.device) - first_slot[sorted_members]
        grouped = inputs.new_zeros(len(drawn), int(counts.max()), self.in_dim)
        group = group_of[sorted_members]
        grouped[group, slot] = inputs[order]
        mean, logvar = self(grouped, drawn)
        picked_mean = torch.empty(n, self.out_dim, device=inputs.device, dtype=mean.dtype)
        # (under bf16 autocast the mean may be bf16 while the bounded log-variance is float32)
        picked_logvar = torch.empty(n, self.out_dim, device=inputs.device, dtype=logvar.dtype)
        picked_mean[order], picked_logvar[order] = mean[group, slot], logvar[group, slot]
        std = (0.5 * picked_logvar).exp()
        if lone:
            return picked_mean, std
        return picked_mean.view(*shape[:2], -1), std.view(*shape[:2], -1)

    @torch.no_grad()
    def sample_step(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        generator: torch.Generator | Sequence[torch.Generator | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One stochastic model step, each sample from a uniformly random elite of its seed:
        obs [N, obs] (a lone seed) or [S, N, obs], with one generator per seed.

        Samples are dealt to elites by a random permutation (as mbrl-lib does), so only the
        elites run, once each, instead of every member on every sample.
        """
        lone = obs.dim() == 2
        if lone:
            obs, act = obs.unsqueeze(0), act.unsqueeze(0)
        generators = list(generator) if isinstance(generator, Sequence) else [generator]
        seeds, n = obs.shape[:2]
        k = self.num_elites
        chunk = math.ceil(n / k)
        inputs = torch.cat([obs, act], dim=-1)
        perms, dealt, noises = [], [], []
        for s, g in enumerate(generators):  # each seed's draws, in a lone run's order
            perm = torch.randperm(n, device=obs.device, generator=g)
            order = torch.cat([perm, perm[: chunk * k - n]])
            perms.append(perm)
            dealt.append(inputs[s, order].view(k, chunk, self.in_dim))
            noises.append(
                torch.randn(k, chunk, self.out_dim, device=obs.device, dtype=obs.dtype, generator=g)
            )
        dealt_rows = torch.cat(dealt)  # [S k, chunk, in], seed s's elites at [s k, (s + 1) k)
        noise = torch.cat(noises)
        members = self.global_members(self.elites).reshape(-1)
        out = torch.empty_like(noise)
        for start in range(0, chunk, ROWS_PER_PASS):  # rows are independent: same results
            rows = slice(start, start + ROWS_PER_PASS)
            mean, logvar = self(dealt_rows[:, rows], members)
            out[:, rows] = torch.addcmul(mean, noise[:, rows], (0.5 * logvar).exp())
        result = torch.empty(seeds, n, self.out_dim, device=obs.device, dtype=obs.dtype)
        for s, perm in enumerate(perms):
            result[s, perm] = out[s * k : (s + 1) * k].reshape(k * chunk, self.out_dim)[:n]
        rew, next_obs = result[..., 0], obs + result[..., 1:]
        return (rew[0], next_obs[0]) if lone else (rew, next_obs)

    def member_parameters(self) -> list[nn.Parameter]:
        """Parameters with a leading member axis (snapshotted per member)."""
        return [p for p in self.net.parameters()]


@dataclass
class FitResult:
    """What one phase-1 training left, for a lone seed (floats, [n_holdout, in] sets) or, with
    `seeds`, per seed (lists, [S, n_holdout, in] sets)."""

    train_loss: float | list[float]
    holdout_mse: float | list[float]  # mean over the elites
    member_best_mse: torch.Tensor  # each member's best holdout MSE, which its kept weights score
    epochs: int | list[int]
    holdout_inputs: torch.Tensor
    holdout_targets: torch.Tensor

    def with_seed_axis(self) -> FitResult:
        """The same result with a seed axis (a lone seed's as S = 1)."""
        if self.holdout_inputs.dim() == 3:
            return self
        return FitResult(
            [self.train_loss],
            [self.holdout_mse],
            self.member_best_mse,
            [self.epochs],
            self.holdout_inputs.unsqueeze(0),
            self.holdout_targets.unsqueeze(0),
        )


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-member Gaussian NLL (constant dropped), mean over samples and dims: [members]."""
    return (((mean - targets) ** 2) * torch.exp(-logvar) + logvar).mean(dim=(1, 2))


def mle_backward(
    model: GaussianEnsemble,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    weight_decay: tuple[float, ...],
    logvar_penalty: float,
) -> torch.Tensor:
    """Backpropagate phase 1's minibatch loss into the parameters' gradients and return its
    value per seed ([S]; a scalar for a lone seed): the members' NLLs, the log-variance bound
    penalty and an L2 penalty of `weight_decay[i] / 2 * ||W_i||^2` on each layer's weights.
    Seeds share no parameter, so the sum over seeds gives each seed its own gradient.

    The L2 term's gradient, `weight_decay[i] * W_i`, is added to the gradients directly rather
    than built into the autograd graph (about a tenth of a minibatch on a CPU); its value still
    counts in the returned loss. Same gradient as autograd through the whole sum (tested).
    """
    seeds = model.seeds
    mean, logvar = model(inputs)
    nll = gaussian_nll(mean, logvar, targets).view(seeds, -1).sum(1)
    bounds = model.max_logvar.view(seeds, -1).sum(1) - model.min_logvar.view(seeds, -1).sum(1)
    loss = nll + logvar_penalty * bounds
    loss.sum().backward()
    with torch.no_grad():
        weights = [layer.weight for layer in model.net.layers]
        for decay, weight in zip(weight_decay, weights):
            weight.grad.add_(weight, alpha=decay)
        if seeds == 1:  # Python-float decays: no host-to-device copy
            norms = torch_private.norms(weights)
            penalty = sum(0.5 * decay * norm * norm for decay, norm in zip(weight_decay, norms))
        else:
            penalty = sum(
                0.5 * decay * torch.linalg.vector_norm(weight.view(seeds, -1), dim=1).square()
                for decay, weight in zip(weight_decay, weights)
            )
        total = loss.detach() + penalty
        return total[0] if seeds == 1 else total


@torch.no_grad()
def holdout_mse(
    model: GaussianEnsemble, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Each member's mean squared error of its mean prediction: [members] (inputs [N, in] of a
    lone seed, or [S, N, in] with each seed's rows for its members)."""
    if inputs.dim() == 3:
        inputs, targets = model.seed_rows(inputs), model.seed_rows(targets)
    mean, _ = model(inputs)
    return ((mean - targets) ** 2).mean(dim=(1, 2))


@torch.no_grad()
def select_elites(
    model: GaussianEnsemble, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Re-pick each seed's elites as its members with the lowest holdout MSE; returns all
    members' MSE."""
    mse = holdout_mse(model, inputs, targets)
    per_seed = mse.view(model.seeds, model.ensemble_size)
    model.elites.copy_(torch.argsort(per_seed, dim=1)[:, : model.num_elites])
    return mse


class FrozenSeeds:
    """Seeds whose training has stopped while others train on in the same network (USB-PO's
    phase 2, whose steps are few): their parameters and Adam moments are put back after every
    later step, so each seed's training ends exactly where a lone run's would (the shared step
    count aside). Phase 1, with many more steps, trains a compact group of the seeds still
    training instead (`compact_group`), which costs nothing for the stopped ones."""

    def __init__(self, model: GaussianEnsemble, optimizer: torch.optim.Optimizer) -> None:
        self.axes = model.seed_axes()
        self.params = dict(model.named_parameters())
        self.optimizer = optimizer
        self.saved: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def freeze(self, seed: int) -> None:
        saved = []
        for name, param in self.params.items():
            tensors = [param, *self._moments(param)]
            for tensor in tensors:
                view = self.axes[name].take(tensor, seed)
                saved.append((view, view.clone()))
        self.saved[seed] = saved

    def _moments(self, param: torch.Tensor) -> list[torch.Tensor]:
        state = self.optimizer.state.get(param, {})
        return [state[key] for key in ("exp_avg", "exp_avg_sq") if key in state]

    @torch.no_grad()
    def restore(self) -> None:
        for saved in self.saved.values():
            for view, value in saved:
                view.copy_(value)


def compact_group(
    model: GaussianEnsemble, optimizer: torch.optim.Optimizer, seeds: list[int]
) -> tuple[GaussianEnsemble, torch.optim.Optimizer]:
    """A group of just `seeds` of `model` (a copy of their weights, bounds, normaliser, elites
    and Adam moments, in that order), with an Adam of the same settings: trained in place of
    `model` while the other seeds' trainings have stopped, then written back (`copy_seeds`)."""
    like = model.max_logvar
    group = GaussianEnsemble(
        model.obs_dim,
        model.act_dim,
        model.ensemble_size,
        model.num_elites,
        model.hidden_size,
        model.hidden_layers,
        generators=[torch.Generator() for _ in seeds],  # overwritten below; no global draws
    ).to(device=like.device, dtype=like.dtype)
    group_opt = make_adam(group.parameters(), optimizer.param_groups[0]["lr"])
    copy_seeds(model, optimizer, seeds, group, group_opt, list(range(len(seeds))))
    return group, group_opt


def ensemble_seed_state(
    model: GaussianEnsemble, optimizer: torch.optim.Optimizer, seed: int
) -> dict[str, dict]:
    """Seed `seed`'s ensemble and Adam state in a lone run's checkpoint layout (copies)."""
    axes = model.seed_axes()
    return {
        "model": module_seed_state(model, axes, seed),
        "model_opt": adam_seed_state(optimizer, parameter_axes(model, axes), seed),
    }


def load_ensemble_seed_state(
    model: GaussianEnsemble, optimizer: torch.optim.Optimizer, state: dict, seed: int
) -> None:
    """Write a lone run's ensemble and Adam state (`ensemble_seed_state`) into seed `seed`."""
    axes = model.seed_axes()
    load_module_seed_state(model, axes, state["model"], seed)
    load_adam_seed_state(optimizer, parameter_axes(model, axes), state["model_opt"], seed)


def copy_seeds(
    source: GaussianEnsemble,
    source_opt: torch.optim.Optimizer,
    source_seeds: list[int],
    target: GaussianEnsemble,
    target_opt: torch.optim.Optimizer,
    target_seeds: list[int],
) -> None:
    """Seed `source_seeds[i]` of `source` (model and Adam state) into seed `target_seeds[i]` of
    `target`, through a lone run's checkpoint layout."""
    for s, t in zip(source_seeds, target_seeds):
        load_ensemble_seed_state(target, target_opt, ensemble_seed_state(source, source_opt, s), t)


def fit_ensemble(
    model: GaussianEnsemble,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int,
    weight_decay: tuple[float, ...],
    logvar_penalty: float,
    holdout_ratio: float,
    max_holdout: int,
    patience: int,
    max_epochs: int | None,
    bootstrap: bool = True,
    sample_weights: torch.Tensor | None = None,
    generator: torch.Generator | Sequence[torch.Generator | None] | None = None,
) -> FitResult:
    """Phase 1 (MLE), warm-started: train until no member improves its holdout MSE by more than
    1% for `patience` epochs, keeping each member's best weights; then re-pick the elites.
    For S seeds (inputs [S, n, in], targets [S, n, out], weights [S, n], one generator per
    seed) each seed splits, draws and stops on its own data, as it would alone; a seed that
    has stopped stays as it stopped while the others train on.

    Which rows each member trains on:
    - `bootstrap` (MBPO's, USB-PO's and mbrl-lib's code): each member draws its own resample of
      the training rows with replacement once per training, and visits it in a new order every
      epoch, so members differ by their data as well as their initialisation;
    - otherwise each member visits every training row once per epoch, in its own order;
    - with `sample_weights` (one non-negative weight per row, PDML's), each member's epoch
      draws its rows with replacement in proportion to the weights (a weighted bootstrap,
      redrawn every epoch), whatever `bootstrap` says.
    The holdout split stays uniform in every case, so early stopping judges all the data.
    """
    lone = inputs.dim() == 2
    if lone:
        inputs, targets = inputs.unsqueeze(0), targets.unsqueeze(0)
        sample_weights = None if sample_weights is None else sample_weights.unsqueeze(0)
    generators = list(generator) if isinstance(generator, Sequence) else [generator]
    seeds, n = inputs.shape[:2]
    device = inputs.device
    n_holdout = min(int(n * holdout_ratio), max_holdout)
    perms = torch.stack([torch.randperm(n, device=device, generator=g) for g in generators])
    rows = torch.arange(seeds, device=device).unsqueeze(1)
    hold_in, hold_tgt = inputs[rows, perms[:, :n_holdout]], targets[rows, perms[:, :n_holdout]]
    train_in, train_tgt = inputs[rows, perms[:, n_holdout:]], targets[rows, perms[:, n_holdout:]]
    train_weights = None
    if sample_weights is not None:
        train_weights = sample_weights[rows, perms[:, n_holdout:]]
    if n_holdout == 0:  # too little data to hold any out: validate on the training set
        hold_in, hold_tgt = train_in, train_tgt
    model.fit_normaliser(train_in)

    members, n_train = model.ensemble_size, train_in.shape[1]
    resample = None
    if bootstrap and train_weights is None:
        resample = torch.stack(
            [
                torch.randint(n_train, (members, n_train), device=device, generator=g)
                for g in generators
            ]
        )
    best_mse = torch.full((seeds * members,), math.inf, device=device)
    snapshot = [p.detach().clone() for p in model.member_parameters()]
    since_update = [0] * seeds
    epochs = [0] * seeds
    active = list(range(seeds))
    last_loss: list[torch.Tensor | None] = [None] * seeds  # each seed's last epoch's loss
    # While some seeds have stopped, a compact group of the seeds still training is trained
    # (their slices of every weight, bound, normaliser and Adam moment), so a stopped seed is
    # neither computed nor touched; it is written back when the next seed stops and at the end.
    trained, trained_opt, trained_seeds = model, optimizer, None
    within = torch.arange(members, device=device)

    def write_back() -> None:
        """The compact group's seeds back into `model` (nothing while `model` itself trains)."""
        if trained is not model:
            group = list(range(len(trained_seeds)))
            copy_seeds(trained, trained_opt, group, model, optimizer, trained_seeds)

    while active and (max_epochs is None or epochs[active[0]] < max_epochs):
        if active != trained_seeds:  # the first epoch, or a seed stopped in the last one
            write_back()
            if len(active) < seeds:
                trained, trained_opt = compact_group(model, optimizer, active)
            trained_seeds = list(active)
            training = torch.tensor(active, device=device)
            training_members = (training.unsqueeze(1) * members + within).flatten()
            seed_rows = training.view(-1, 1, 1)
            trained_hold_in, trained_hold_tgt = hold_in[training], hold_tgt[training]
        orders = []
        for s in active:  # a stopped seed draws no more
            g = generators[s]
            if train_weights is None:  # each member its own order of its rows
                noise = torch.rand(members, n_train, device=device, generator=g)
                order = torch.argsort(noise, dim=1)
                orders.append(order if resample is None else resample[s].gather(1, order))
            else:
                weights = train_weights[s].expand(members, -1)
                orders.append(torch.multinomial(weights, n_train, replacement=True, generator=g))
        order = torch.stack(orders)  # [training seeds, members, n_train]
        batch_losses = []
        for start in range(0, n_train, batch_size):
            idx = order[:, :, start : start + batch_size]
            batch_in = train_in[seed_rows, idx].flatten(0, 1)  # [training members, b, in]
            batch_tgt = train_tgt[seed_rows, idx].flatten(0, 1)
            trained_opt.zero_grad(set_to_none=True)
            loss = mle_backward(trained, batch_in, batch_tgt, weight_decay, logvar_penalty)
            adam_step(trained_opt)
            batch_losses.append(loss.reshape(len(active)))
        mean_loss = torch.stack(batch_losses).mean(0) / members
        mse = holdout_mse(trained, trained_hold_in, trained_hold_tgt)
        improved = mse < 0.99 * best_mse[training_members]  # a relative gain above 1%
        if bool(improved.any()):
            updated = torch.where(improved, mse, best_mse[training_members])
            best_mse = best_mse.to(updated.dtype)  # a float64 model's errors stay float64
            best_mse[training_members] = updated
            with torch.no_grad():
                for saved, param in zip(snapshot, trained.member_parameters()):
                    saved[training_members[improved]] = param[improved]
        improved_seeds = improved.view(len(active), members).any(1).tolist()
        for i, s in enumerate(list(active)):
            epochs[s] += 1
            last_loss[s] = mean_loss[i]
            if improved_seeds[i]:
                since_update[s] = 0
            else:
                since_update[s] += 1
                if since_update[s] >= patience:
                    active.remove(s)
    write_back()
    with torch.no_grad():
        for saved, param in zip(snapshot, model.member_parameters()):
            param.copy_(saved)
    mse = select_elites(model, hold_in, hold_tgt)
    per_seed_mse = mse.view(seeds, members)
    elite_mse = per_seed_mse.gather(1, model.elites).mean(1).tolist()
    train_loss = [math.nan if loss is None else float(loss) for loss in last_loss]
    if lone:
        return FitResult(train_loss[0], elite_mse[0], best_mse, epochs[0], hold_in[0], hold_tgt[0])
    return FitResult(train_loss, elite_mse, best_mse, epochs, hold_in, hold_tgt)
