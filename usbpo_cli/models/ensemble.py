"""The probabilistic dynamics ensemble (PETS/MBPO style) and its maximum-likelihood training.

One batched network predicts a diagonal Gaussian over [reward, next_obs - obs] for every member
at once. The input normaliser lives in registered buffers, so a `copy.deepcopy` of the model
(USB-PO's frozen M1) carries its own normaliser with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from usbpo_cli.models.nets import BatchedMLP
from usbpo_cli.models.optim import adam_step
from usbpo_cli.util import torch_private

# Rows per elite in one forward pass of a model rollout step: at 100k states a single pass makes
# [elites, 20k, 200] activations (80 MB each) that no cache holds; passes of 1024 rows ran a
# 100k-state step 1.7-1.9x faster on a CPU, with the same results.
ROWS_PER_PASS = 1024


class GaussianEnsemble(nn.Module):
    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        ensemble_size: int = 7,
        num_elites: int = 5,
        hidden_size: int = 200,
        hidden_layers: int = 4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.in_dim, self.out_dim = obs_dim + act_dim, obs_dim + 1
        self.ensemble_size, self.num_elites = ensemble_size, num_elites
        self.net = BatchedMLP(
            ensemble_size,
            self.in_dim,
            2 * self.out_dim,
            hidden_size,
            hidden_layers,
            nn.SiLU,
            init="truncated_normal",
            generator=generator,
        )
        self.max_logvar = nn.Parameter(torch.full((1, 1, self.out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, 1, self.out_dim), -10.0))
        self.register_buffer("input_mean", torch.zeros(self.in_dim))
        self.register_buffer("input_std", torch.ones(self.in_dim))
        self.register_buffer("elites", torch.arange(num_elites))

    def fit_normaliser(self, inputs: torch.Tensor) -> None:
        std = inputs.std(0)
        self.input_mean.copy_(inputs.mean(0))
        self.input_std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))

    def forward(
        self, inputs: torch.Tensor, members: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw inputs [N, in] (shared by all members) or [members, N, in] -> mean, logvar."""
        x = (inputs - self.input_mean) / self.input_std
        if x.dim() == 2:
            count = self.ensemble_size if members is None else len(members)
            x = x.unsqueeze(0).expand(count, -1, -1)
        mean, logvar = self.net(x, members).chunk(2, dim=-1)
        # Learned soft bounds keep the variance in the range seen in training (PETS).
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def mean_std(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's Gaussian for inputs [N, in]: mean and std, each [members, N, out]."""
        mean, logvar = self(inputs)
        return mean, (0.5 * logvar).exp()

    def member_mean_std(
        self, inputs: torch.Tensor, members: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample i's Gaussian under member `members[i]` only: mean and std, each [N, out].

        Equal to picking from `mean_std` (tested), but each member runs on its own samples
        alone: rows are grouped by member into [members drawn, largest group, in], zero-padded,
        so the work is about N rows instead of N per member. One host sync sizes the groups.
        """
        n = inputs.shape[0]
        counts = torch.bincount(members, minlength=self.ensemble_size)
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
        picked_logvar = torch.empty_like(picked_mean)
        picked_mean[order], picked_logvar[order] = mean[group, slot], logvar[group, slot]
        return picked_mean, (0.5 * picked_logvar).exp()

    @torch.no_grad()
    def sample_step(
        self, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One stochastic model step, each sample from a uniformly random elite.

        Samples are dealt to elites by a random permutation (as mbrl-lib does), so only the
        elites run, once each, instead of every member on every sample.
        """
        n, k = obs.shape[0], self.num_elites
        chunk = math.ceil(n / k)
        perm = torch.randperm(n, device=obs.device, generator=generator)
        order = torch.cat([perm, perm[: chunk * k - n]])
        inputs = torch.cat([obs, act], dim=-1)[order].view(k, chunk, self.in_dim)
        noise = torch.randn(
            k, chunk, self.out_dim, device=obs.device, dtype=obs.dtype, generator=generator
        )
        out = torch.empty_like(noise)
        for start in range(0, chunk, ROWS_PER_PASS):  # rows are independent: same results
            rows = slice(start, start + ROWS_PER_PASS)
            mean, logvar = self(inputs[:, rows], self.elites)
            out[:, rows] = torch.addcmul(mean, noise[:, rows], (0.5 * logvar).exp())
        result = torch.empty(n, self.out_dim, device=obs.device, dtype=obs.dtype)
        result[perm] = out.reshape(k * chunk, self.out_dim)[:n]
        return result[:, 0], obs + result[:, 1:]

    def member_parameters(self) -> list[nn.Parameter]:
        """Parameters with a leading member axis (snapshotted per member)."""
        return [p for p in self.net.parameters()]


@dataclass
class FitResult:
    train_loss: float
    holdout_mse: float  # mean over the elites
    member_best_mse: torch.Tensor  # each member's best holdout MSE, which its kept weights score
    epochs: int
    holdout_inputs: torch.Tensor
    holdout_targets: torch.Tensor


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
    value: the members' NLLs, the log-variance bound penalty and an L2 penalty of
    `weight_decay[i] / 2 * ||W_i||^2` on each layer's weights.

    The L2 term's gradient, `weight_decay[i] * W_i`, is added to the gradients directly rather
    than built into the autograd graph (about a tenth of a minibatch on a CPU); its value still
    counts in the returned loss. Same gradient as autograd through the whole sum (tested).
    """
    mean, logvar = model(inputs)
    loss = gaussian_nll(mean, logvar, targets).sum()
    loss = loss + logvar_penalty * (model.max_logvar.sum() - model.min_logvar.sum())
    loss.backward()
    with torch.no_grad():
        weights = [layer.weight for layer in model.net.layers]
        for decay, weight in zip(weight_decay, weights):
            weight.grad.add_(weight, alpha=decay)
        norms = torch_private.norms(weights)  # Python-float decays: no host-to-device copy
        penalty = sum(0.5 * decay * norm * norm for decay, norm in zip(weight_decay, norms))
        return loss.detach() + penalty


@torch.no_grad()
def holdout_mse(
    model: GaussianEnsemble, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Each member's mean squared error of its mean prediction: [members]."""
    mean, _ = model(inputs)
    return ((mean - targets) ** 2).mean(dim=(1, 2))


@torch.no_grad()
def select_elites(
    model: GaussianEnsemble, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Re-pick the elites as the members with the lowest holdout MSE; returns all members' MSE."""
    mse = holdout_mse(model, inputs, targets)
    model.elites.copy_(torch.argsort(mse)[: model.num_elites])
    return mse


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
    generator: torch.Generator | None = None,
) -> FitResult:
    """Phase 1 (MLE), warm-started: train until no member improves its holdout MSE by more than
    1% for `patience` epochs, keeping each member's best weights; then re-pick the elites.

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
    n = inputs.shape[0]
    n_holdout = min(int(n * holdout_ratio), max_holdout)
    perm = torch.randperm(n, device=inputs.device, generator=generator)
    hold_in, hold_tgt = inputs[perm[:n_holdout]], targets[perm[:n_holdout]]
    train_in, train_tgt = inputs[perm[n_holdout:]], targets[perm[n_holdout:]]
    train_weights = None if sample_weights is None else sample_weights[perm[n_holdout:]]
    if n_holdout == 0:  # too little data to hold any out: validate on the training set
        hold_in, hold_tgt = train_in, train_tgt
    model.fit_normaliser(train_in)

    members, n_train = model.ensemble_size, train_in.shape[0]
    resample = None
    if bootstrap and train_weights is None:
        resample = torch.randint(
            n_train, (members, n_train), device=inputs.device, generator=generator
        )
    best_mse = torch.full((members,), math.inf, device=inputs.device)
    snapshot = [p.detach().clone() for p in model.member_parameters()]
    epochs_since_update, epoch, train_loss = 0, 0, math.nan
    while max_epochs is None or epoch < max_epochs:
        if train_weights is None:  # each member its own order of its rows
            noise = torch.rand(members, n_train, device=inputs.device, generator=generator)
            order = torch.argsort(noise, dim=1)
            if resample is not None:
                order = resample.gather(1, order)
        else:
            rows = train_weights.expand(members, -1)
            order = torch.multinomial(rows, n_train, replacement=True, generator=generator)
        losses = []
        for start in range(0, n_train, batch_size):
            idx = order[:, start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = mle_backward(model, train_in[idx], train_tgt[idx], weight_decay, logvar_penalty)
            adam_step(optimizer)
            losses.append(loss)
        train_loss = torch.stack(losses).mean().item() / members
        epoch += 1
        mse = holdout_mse(model, hold_in, hold_tgt)
        improved = mse < 0.99 * best_mse  # a relative gain above 1%
        if bool(improved.any()):
            best_mse = torch.where(improved, mse, best_mse)
            with torch.no_grad():
                for saved, param in zip(snapshot, model.member_parameters()):
                    saved[improved] = param[improved]
            epochs_since_update = 0
        else:
            epochs_since_update += 1
            if epochs_since_update >= patience:
                break
    with torch.no_grad():
        for saved, param in zip(snapshot, model.member_parameters()):
            param.copy_(saved)
    mse = select_elites(model, hold_in, hold_tgt)
    return FitResult(
        train_loss, mse[model.elites].mean().item(), best_mse, epoch, hold_in, hold_tgt
    )
