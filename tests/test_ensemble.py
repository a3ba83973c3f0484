"""The batched probabilistic ensemble: shapes, bounds, elites, training, elite-only rollouts."""

import copy

import pytest
import torch

import usbpo_cli.ensemble as ensemble_module
from usbpo_cli.ensemble import GaussianEnsemble, fit_ensemble, holdout_mse, mle_backward
from usbpo_cli.nets import BatchedMLP
from usbpo_cli.optim import make_adam

OBS, ACT = 4, 2


def make_model(seed: int = 0, **kwargs) -> GaussianEnsemble:
    torch.manual_seed(seed)
    options = {"ensemble_size": 7, "num_elites": 5, "hidden_size": 32, "hidden_layers": 2}
    options.update(kwargs)
    return GaussianEnsemble(OBS, ACT, **options)


def linear_dynamics(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, OBS + ACT, generator=gen) * 2 + 1
    weights = torch.randn(OBS + ACT, OBS + 1, generator=gen)
    targets = 0.3 * inputs @ weights + 0.05 * torch.randn(n, OBS + 1, generator=gen)
    return inputs, targets


def fit(model, inputs, targets, **overrides):
    options = dict(
        batch_size=64,
        weight_decay=(2.5e-5, 5e-5, 1e-4),
        logvar_penalty=0.01,
        holdout_ratio=0.2,
        max_holdout=5000,
        patience=5,
        max_epochs=40,
    )
    options.update(overrides)
    return fit_ensemble(model, make_adam(model.parameters(), 1e-3), inputs, targets, **options)


def test_one_batched_network_with_a_member_axis():
    model = make_model()
    assert isinstance(model.net, BatchedMLP)
    assert model.net.layers[0].weight.shape == (7, OBS + ACT, 32)
    mean, logvar = model(torch.randn(10, OBS + ACT))
    assert mean.shape == logvar.shape == (7, 10, OBS + 1)
    mean, _ = model(torch.randn(3, 10, OBS + ACT), members=torch.tensor([0, 4, 6]))
    assert mean.shape == (3, 10, OBS + 1)


def test_member_subset_matches_full_forward():
    model = make_model()
    inputs = torch.randn(10, OBS + ACT)
    full, _ = model(inputs)
    members = torch.tensor([5, 1])
    subset, _ = model(inputs.expand(2, -1, -1), members=members)
    assert torch.allclose(subset, full[members], atol=1e-6)


@pytest.mark.parametrize("drawn", [[3], [6, 0, 2], list(range(7))])
def test_member_mean_std_equals_picking_from_every_members_prediction(drawn):
    model = make_model(seed=2)
    gen = torch.Generator().manual_seed(len(drawn))
    inputs = torch.randn(301, OBS + ACT, generator=gen) * 3
    choice = torch.tensor(drawn)[torch.randint(len(drawn), (301,), generator=gen)]
    mean, std = model.member_mean_std(inputs, choice)
    full_mean, full_std = model.mean_std(inputs)
    rows = torch.arange(301)
    assert mean.shape == std.shape == (301, OBS + 1)
    torch.testing.assert_close(mean, full_mean[choice, rows], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(std, full_std[choice, rows], rtol=1e-5, atol=1e-6)


def test_mle_loss_gradients_and_value_match_autograd_through_the_whole_loss():
    model = make_model(seed=4)
    reference = copy.deepcopy(model)
    inputs, targets = linear_dynamics(7 * 40, seed=4)
    inputs, targets = inputs.view(7, 40, -1), targets.view(7, 40, -1)
    decay = (2.5e-2, 5e-2, 1e-1)  # large, so a missing or doubled L2 gradient would show
    loss = mle_backward(model, inputs, targets, decay, 0.01)

    mean, logvar = reference(inputs)
    full = (((mean - targets) ** 2) * torch.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()
    full = full + sum(
        d * 0.5 * (layer.weight**2).sum() for d, layer in zip(decay, reference.net.layers)
    )
    full = full + 0.01 * (reference.max_logvar.sum() - reference.min_logvar.sum())
    full.backward()
    torch.testing.assert_close(loss, full.detach())
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-6)


def test_sample_step_in_passes_of_a_few_rows_gives_the_same_step(monkeypatch):
    model = make_model(seed=5)
    obs, act = torch.randn(103, OBS), torch.randn(103, ACT)
    steps = []
    for rows in (10**9, 4):  # one pass; passes of 4 rows per elite, the last one short
        monkeypatch.setattr(ensemble_module, "ROWS_PER_PASS", rows)
        torch.manual_seed(7)
        steps.append(model.sample_step(obs, act))
    for one_pass, in_passes in zip(*steps):
        torch.testing.assert_close(in_passes, one_pass, rtol=1e-5, atol=1e-6)


def test_log_variance_stays_within_learned_bounds():
    model = make_model()
    _, logvar = model(torch.randn(100, OBS + ACT) * 1000)
    # Soft bounds: the lower softplus can lift a saturated value by log(1 + e^-10.5) ~ 3e-5.
    assert (logvar <= model.max_logvar + 1e-4).all()
    assert (logvar >= model.min_logvar - 1e-4).all()
    assert logvar.max() > 0.4 and logvar.min() < -9.9  # the inputs do reach both bounds


def test_training_learns_and_picks_elites_by_holdout_mse():
    model = make_model()
    inputs, targets = linear_dynamics(1000)
    before = holdout_mse(model, inputs, targets)
    result = fit(model, inputs, targets, batch_size=32, max_epochs=40)
    after = holdout_mse(model, result.holdout_inputs, result.holdout_targets)
    assert after.max() < 0.1 * before.min()
    assert result.epochs >= 1
    expected_elites = torch.argsort(after)[:5]
    assert set(model.elites.tolist()) == set(expected_elites.tolist())
    assert result.holdout_mse == pytest.approx(after[model.elites].mean().item(), rel=1e-5)


def test_holdout_is_a_fraction_capped_by_max_holdout():
    inputs, targets = linear_dynamics(500)
    result = fit(make_model(), inputs, targets, max_epochs=1)
    assert result.holdout_inputs.shape[0] == 100
    result = fit(make_model(), inputs, targets, max_epochs=1, max_holdout=30)
    assert result.holdout_inputs.shape[0] == 30


def test_early_stopping_restores_each_members_best_weights():
    """A learning rate far too high makes members get worse after their best epoch; the weights
    left in the model must be each member's best, not the last."""
    model = make_model()
    inputs, targets = linear_dynamics(600)
    options = dict(
        batch_size=64,
        weight_decay=(0.0, 0.0, 0.0),
        logvar_penalty=0.01,
        holdout_ratio=0.2,
        max_holdout=5000,
        patience=3,
        max_epochs=30,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    result = fit_ensemble(model, optimizer, inputs, targets, **options)
    kept = holdout_mse(model, result.holdout_inputs, result.holdout_targets)
    assert torch.allclose(kept, result.member_best_mse, rtol=1e-5)
    assert torch.isfinite(kept).all()
    assert result.epochs <= 30


def test_normaliser_travels_with_a_copy():
    model = make_model()
    model.fit_normaliser(torch.randn(100, OBS + ACT) * 5 + 3)
    frozen = copy.deepcopy(model)
    model.fit_normaliser(torch.randn(100, OBS + ACT))
    assert not torch.allclose(frozen.input_mean, model.input_mean)
    assert frozen.input_std.shape == (OBS + ACT,)


def test_sample_step_uses_only_elites_each_uniformly():
    model = make_model(ensemble_size=4, num_elites=2)
    model.elites.copy_(torch.tensor([1, 3]))
    last = model.net.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[:, 0, OBS + 1 :] = -30.0  # logvar at its lower bound: near-deterministic
        last.bias[0, 0, 0] = 1e6  # non-elites predict absurd rewards
        last.bias[2, 0, 0] = 1e6
        last.bias[1, 0, 0] = 100.0
        last.bias[3, 0, 0] = -100.0
    obs = torch.randn(1001, OBS)
    reward, next_obs = model.sample_step(obs, torch.randn(1001, ACT))
    assert reward.shape == (1001,) and next_obs.shape == (1001, OBS)
    assert (reward.abs() < 101).all()
    share = (reward > 0).float().mean().item()
    assert 0.45 < share < 0.55
    assert torch.allclose(next_obs, obs, atol=0.1)  # deltas predicted ~0
