"""The batched probabilistic ensemble: shapes, bounds, elites, training, elite-only rollouts."""

import copy
import math

import pytest
import torch

import usbpo_cli.models.ensemble as ensemble_module
from usbpo_cli.models.ensemble import GaussianEnsemble, fit_ensemble, holdout_mse, mle_backward
from usbpo_cli.models.nets import BatchedMLP
from usbpo_cli.models.optim import make_adam

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
    assert set(model.elites[0].tolist()) == set(expected_elites.tolist())
    assert result.holdout_mse == pytest.approx(after[model.elites[0]].mean().item(), rel=1e-5)


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
    assert frozen.input_std.shape == (1, OBS + ACT)  # one seed


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


# ---------------------------------------------------------------------------------------------
# Phase 1's early stopping and per-member best weights, on a scripted holdout curve.


class ScriptedFit:
    """Replaces phase 1's optimiser step and holdout MSE so that the holdout curve is a script
    written by hand: every step stamps the current epoch number into each member's first-layer
    bias, so the weights left in the model say which epoch they come from."""

    def __init__(self, curve: list[list[float]], final: list[float]) -> None:
        self.curve, self.final, self.calls = curve, final, 0

    def step(self, model: GaussianEnsemble) -> None:
        with torch.no_grad():
            model.net.layers[0].bias.fill_(float(self.calls + 1))

    def holdout(self, *args, **kwargs) -> torch.Tensor:
        self.calls += 1
        row = self.curve[self.calls - 1] if self.calls <= len(self.curve) else self.final
        return torch.tensor(row)


def scripted_fit(monkeypatch, curve, final, patience, num_elites=2, max_epochs=100):
    """A fit on a scripted holdout curve. `max_epochs` far above where the tests stop: a fit
    that never stops then fails in seconds instead of hanging the suite."""
    model = make_model(ensemble_size=len(curve[0]), num_elites=num_elites)
    script = ScriptedFit(curve, final)
    monkeypatch.setattr(ensemble_module, "adam_step", lambda optimizer: script.step(model))
    monkeypatch.setattr(ensemble_module, "holdout_mse", script.holdout)
    inputs, targets = linear_dynamics(200)
    result = fit(model, inputs, targets, patience=patience, max_epochs=max_epochs)
    stamps = model.net.layers[0].bias[:, 0, 0].tolist()
    return model, result, stamps, script


def test_early_stopping_keeps_each_members_best_epoch_and_stops_after_patience(monkeypatch):
    """Hand-worked: member 0 is best at epoch 2 (epoch 3's 4.96 is not 1% below 5.0), member 1
    at epoch 4 (7.9 < 0.99 * 8 = 7.92), member 2 at epoch 1. The last improvement of any
    member is epoch 4, so with patience 3 training stops after epoch 7, and each member keeps
    the weights of its own best epoch, not the last."""
    curve = [
        [10.0, 10.0, 10.0],
        [5.0, 9.0, 10.0],
        [4.96, 8.0, 10.0],
        [6.0, 7.9, 10.0],
        [7.0, 7.9, 10.0],
        [8.0, 7.9, 10.0],
        [9.0, 7.9, 10.0],
    ]  # an eighth epoch would see [3, 1, 2]: improvements for members 1 and 2
    model, result, stamps, script = scripted_fit(
        monkeypatch, curve, final=[3.0, 1.0, 2.0], patience=3
    )
    assert result.epochs == 7
    assert stamps == [2.0, 4.0, 1.0]
    assert result.member_best_mse.tolist() == pytest.approx([5.0, 7.9, 10.0])
    assert sorted(model.elites[0].tolist()) == [1, 2]  # re-picked on the final MSE [3, 1, 2]
    assert script.calls == 8  # seven epochs, then one for the elites


@pytest.mark.parametrize("patience", [1, 2, 5])
def test_patience_counts_epochs_without_any_member_improving(monkeypatch, patience):
    """Every member is best at epoch 1, so training stops after 1 + patience epochs."""
    curve = [[4.0, 4.0]] + [[4.0, 3.97]] * 20  # 3.97 > 0.99 * 4 = 3.96: not an improvement
    _, result, stamps, _ = scripted_fit(
        monkeypatch, curve, final=[1.0, 2.0], patience=patience, num_elites=1
    )
    assert result.epochs == 1 + patience
    assert stamps == [1.0, 1.0]


def test_an_improvement_of_just_over_one_percent_resets_the_patience(monkeypatch):
    """3.95 < 0.99 * 4 = 3.96 counts; then 3.92 > 0.99 * 3.95 = 3.9105 does not."""
    curve = [[4.0], [4.0], [3.95], [3.92], [3.92], [3.92], [3.92]]
    _, result, stamps, _ = scripted_fit(monkeypatch, curve, final=[1.0], patience=2, num_elites=1)
    assert result.epochs == 5 and stamps == [3.0]


def test_max_epochs_caps_a_still_improving_fit(monkeypatch):
    curve = [[10.0 * 0.5**k] for k in range(20)]
    _, result, stamps, _ = scripted_fit(
        monkeypatch, curve, final=[1.0], patience=2, num_elites=1, max_epochs=6
    )
    assert result.epochs == 6 and stamps == [6.0]


# ---------------------------------------------------------------------------------------------
# Which rows each member trains on: MBPO's bootstrap or every row.


def rows_seen(monkeypatch, bootstrap: bool, epochs: int = 3) -> list[list[torch.Tensor]]:
    """Row ids each member trained on, per epoch (minibatch inputs carry the row id)."""
    model = make_model(ensemble_size=3, num_elites=2)
    inputs, targets = linear_dynamics(250)
    inputs[:, 0] = torch.arange(250, dtype=torch.float32)
    seen: list[torch.Tensor] = []
    original = ensemble_module.mle_backward

    def spy(model, batch_inputs, *args, **kwargs):
        seen.append(batch_inputs[..., 0].long())
        return original(model, batch_inputs, *args, **kwargs)

    monkeypatch.setattr(ensemble_module, "mle_backward", spy)
    fit(model, inputs, targets, max_epochs=epochs, patience=epochs, bootstrap=bootstrap)
    per_epoch = len(seen) // epochs
    rows = []
    for e in range(epochs):
        batches = torch.cat(seen[e * per_epoch : (e + 1) * per_epoch], dim=1)
        rows.append(list(batches))  # one tensor of row ids per member
    return rows


def test_without_bootstrap_every_member_sees_every_training_row_once_per_epoch(monkeypatch):
    epochs = rows_seen(monkeypatch, bootstrap=False)
    first = sorted(epochs[0][0].tolist())
    assert len(first) == 200 and len(set(first)) == 200  # 250 rows less a holdout of 50
    for members in epochs:
        for rows in members:
            assert sorted(rows.tolist()) == first
        assert not torch.equal(members[0], members[1])  # each member its own order


def test_bootstrap_gives_each_member_its_own_resample_kept_for_the_training(monkeypatch):
    """Drawn with replacement once per training: n rows, about 1 - 1/e of them distinct,
    the same multiset every epoch (in a new order), a different one per member, and only
    training rows (never the holdout)."""
    plain = set(rows_seen(monkeypatch, bootstrap=False)[0][0].tolist())
    epochs = rows_seen(monkeypatch, bootstrap=True)
    members = epochs[0]
    for member, rows in enumerate(members):
        assert rows.numel() == 200
        distinct = len(set(rows.tolist()))
        assert 0.55 * 200 < distinct < 0.72 * 200  # expected 1 - (1 - 1/200)^200 = 0.634
        assert set(rows.tolist()) <= plain
        for later in epochs[1:]:
            assert sorted(later[member].tolist()) == sorted(rows.tolist())
            assert not torch.equal(later[member], rows)
    assert sorted(members[0].tolist()) != sorted(members[1].tolist())


# ---------------------------------------------------------------------------------------------
# The input normaliser, the holdout split, the logged loss and the sampled step, by hand.


def test_fit_sets_the_normaliser_to_the_training_rows_mean_and_std():
    """Mean and (unbiased) std of the training rows only, not the holdout; a constant input
    dimension gets std 1 (dividing by ~0 would blow the input up)."""
    model = make_model()
    inputs, targets = linear_dynamics(500)
    inputs[:, 2] = 3.0  # a constant input dimension
    torch.manual_seed(4)
    perm = torch.randperm(500)  # fit_ensemble's own split, drawn from the same stream
    torch.manual_seed(4)
    fit(model, inputs, targets, max_epochs=1)
    train = inputs[perm[100:]]
    expected_std = train.std(0)
    expected_std[2] = 1.0
    assert torch.allclose(model.input_mean, train.mean(0), atol=1e-6)
    assert torch.allclose(model.input_std, expected_std, atol=1e-6)


def test_forward_feeds_the_network_standardised_inputs():
    """model(x) with normaliser (m, s) equals the same network fed (x - m) / s directly."""
    model = make_model()
    with torch.no_grad():
        model.input_mean.copy_(torch.linspace(-2.0, 3.0, OBS + ACT))
        model.input_std.copy_(torch.linspace(0.5, 4.0, OBS + ACT))
    inputs = torch.randn(9, OBS + ACT) * 3
    plain = copy.deepcopy(model)
    with torch.no_grad():
        plain.input_mean.zero_()
        plain.input_std.fill_(1.0)
    mean, logvar = model(inputs)
    expected_mean, expected_logvar = plain((inputs - model.input_mean) / model.input_std)
    assert torch.allclose(mean, expected_mean, atol=1e-6)
    assert torch.allclose(logvar, expected_logvar, atol=1e-6)


@pytest.mark.parametrize(("n", "held_out", "validated_on"), [(5, 1, 1), (4, 0, 4), (10, 2, 2)])
def test_a_tiny_data_set_holds_out_int_n_ratio_rows_or_validates_on_the_training_rows(
    n, held_out, validated_on
):
    """int(n * 0.2) rows are held out; with none, early stopping judges the training rows."""
    inputs, targets = linear_dynamics(n)
    result = fit(make_model(), inputs, targets, max_epochs=1)
    assert result.holdout_inputs.shape[0] == validated_on
    assert rows_in(result.holdout_inputs, inputs)
    if held_out:
        assert held_out == validated_on


def rows_in(rows: torch.Tensor, pool: torch.Tensor) -> bool:
    return bool((rows.unsqueeze(1) == pool.unsqueeze(0)).all(-1).any(1).all())


def test_the_logged_training_loss_is_the_per_member_mean_over_minibatches(monkeypatch):
    """train_loss = mean over the last epoch's minibatches of the summed member losses / B."""
    values: list[float] = []
    original = ensemble_module.mle_backward

    def spy(*args, **kwargs):
        loss = original(*args, **kwargs)
        values.append(loss.item())
        return loss

    monkeypatch.setattr(ensemble_module, "mle_backward", spy)
    model = make_model()
    inputs, targets = linear_dynamics(300)
    result = fit(model, inputs, targets, max_epochs=1, batch_size=60)
    assert len(values) == 4  # 240 training rows in minibatches of 60
    assert result.train_loss == pytest.approx(sum(values) / len(values) / 7, rel=1e-5)


def test_exactly_one_percent_better_is_not_an_improvement(monkeypatch):
    """The rule is mse < 0.99 * best, strictly: 99 after 100 (exact in float32) is no gain."""
    curve = [[100.0], [99.0], [99.0], [99.0]]
    _, result, stamps, _ = scripted_fit(monkeypatch, curve, final=[1.0], patience=2, num_elites=1)
    assert result.epochs == 3 and stamps == [1.0]


def test_sample_step_adds_the_predicted_change_to_the_state():
    """next_obs = obs + delta and reward = the first output, for a model whose every member
    predicts the constant [r, delta] with a negligible variance."""
    model = make_model(ensemble_size=3, num_elites=3)
    last = model.net.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[:, 0, : OBS + 1] = torch.tensor([2.5, 1.0, -2.0, 0.5, 3.0])
        last.bias[:, 0, OBS + 1 :] = -30.0
    obs = torch.randn(50, OBS)
    reward, next_obs = model.sample_step(obs, torch.randn(50, ACT))
    assert torch.allclose(reward, torch.full((50,), 2.5), atol=0.05)
    expected = obs + torch.tensor([1.0, -2.0, 0.5, 3.0])
    assert torch.allclose(next_obs, expected, atol=0.05)


def test_log_variance_bounds_start_where_pets_and_mbpo_start_them():
    """Learned soft bounds initialised to max 0.5 and min -10 (PETS, MBPO's code)."""
    model = make_model()
    assert torch.equal(model.max_logvar, torch.full((1, 1, OBS + 1), 0.5))
    assert torch.equal(model.min_logvar, torch.full((1, 1, OBS + 1), -10.0))


def test_sample_step_draws_with_the_predicted_standard_deviation():
    """Each output is mean + exp(logvar / 2) * N(0, 1): a predicted variance of 4 (inside the
    learned bounds) gives samples of std 2 around the mean."""
    model = make_model(ensemble_size=2, num_elites=2)
    last = model.net.layers[-1]
    with torch.no_grad():
        model.max_logvar.fill_(5.0)
        last.weight.zero_()
        last.bias.zero_()
        last.bias[:, 0, OBS + 1 :] = math.log(4.0)
    torch.manual_seed(0)
    reward, next_obs = model.sample_step(torch.zeros(20000, OBS), torch.zeros(20000, ACT))
    logvar_used = model(torch.zeros(1, OBS + ACT))[1][0, 0, 0]
    expected = math.exp(0.5 * logvar_used.item())  # ~2: the soft bounds move log 4 a little
    assert abs(expected - 2.0) < 0.1
    assert reward.std().item() == pytest.approx(expected, rel=0.03)
    assert torch.allclose(next_obs.std(0), torch.full((OBS,), expected), rtol=0.03)
    assert abs(reward.mean().item()) < 0.05


def test_holdout_mse_is_each_members_mean_squared_error_by_hand():
    """Members predicting the constants c_m against targets t: MSE_m = mean((c_m - t)^2)."""
    model = make_model(ensemble_size=3, num_elites=2)
    last = model.net.layers[-1]
    constants = [0.5, -1.0, 2.0]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        for member, value in enumerate(constants):
            last.bias[member, 0, : OBS + 1] = value
    targets = torch.tensor([[0.0, 1.0, -1.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0]])
    mse = holdout_mse(model, torch.zeros(2, OBS + ACT), targets)
    expected = [((c - targets) ** 2).mean().item() for c in constants]
    assert mse.tolist() == pytest.approx(expected)


def test_a_lone_fit_result_gains_a_seed_axis_of_one() -> None:
    """Phase 2 reads fit results with a seed axis: a lone seed's holdout [n, in] becomes
    [1, n, in] with the same rows, and its numbers one-element lists."""
    from usbpo_cli.models.ensemble import FitResult

    inputs, targets = torch.randn(6, 3), torch.randn(6, 2)
    lone = FitResult(0.5, 0.25, torch.ones(4), 7, inputs, targets)
    seeded = lone.with_seed_axis()
    assert seeded.holdout_inputs.shape == (1, 6, 3) and seeded.holdout_targets.shape == (1, 6, 2)
    assert torch.equal(seeded.holdout_inputs[0], inputs)
    assert torch.equal(seeded.holdout_targets[0], targets)
    assert (seeded.train_loss, seeded.holdout_mse, seeded.epochs) == ([0.5], [0.25], [7])
    assert seeded.with_seed_axis() is seeded  # already seeded: unchanged


def test_a_seeds_slice_of_the_ensemble_has_the_checkpoint_layout() -> None:
    """A checkpoint holds one seed in a lone run's layout (models/seed_axis.py): the normaliser
    and elites without a seed axis ([in], [num_elites]), the log-variance bounds as the one row
    of a one-member axis ([1, 1, out]), the members' weights as E rows. Both seeds' slices of a
    two-seed ensemble, and a lone ensemble's, have exactly these shapes."""
    from usbpo_cli.models.seed_axis import module_seed_state

    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    group = GaussianEnsemble(4, 1, 3, 2, 8, 2, generators=gens)
    lone = GaussianEnsemble(4, 1, 3, 2, 8, 2, generator=torch.Generator().manual_seed(0))
    expected = {
        "input_mean": (5,),
        "input_std": (5,),
        "elites": (2,),
        "max_logvar": (1, 1, 5),
        "min_logvar": (1, 1, 5),
        "net.layers.0.weight": (3, 5, 8),
        "net.layers.2.bias": (3, 1, 10),
    }
    for model, seed in ((group, 0), (group, 1), (lone, 0)):
        state = module_seed_state(model, model.seed_axes(), seed)
        for name, shape in expected.items():
            assert tuple(state[name].shape) == shape, (name, seed)
