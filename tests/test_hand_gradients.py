"""The hand-written gradients (nets.relu_backward, SAC.update) against autograd on the same
losses, and optim.adam_step against Optimizer.step."""

import copy

import pytest
import torch

import usbpo_cli.agents.sac as sac_module
from usbpo_cli.agents.buffers import Batch
from usbpo_cli.agents.sac import SAC
from usbpo_cli.models.nets import BatchedMLP, relu_backward, relu_forward, twin_q
from usbpo_cli.models.optim import adam_step, make_adam


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Float32 round-off only: a wrong term in a gradient is off by O(1) of its size."""
    scale = expected.abs().max().clamp_min(1e-8)
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-5 * float(scale))


def test_relu_backward_matches_autograd_batched_and_transposed_views():
    torch.manual_seed(0)
    net = BatchedMLP(3, 6, 4, 16, 2)
    x = torch.randn(3, 50, 6, requires_grad=True)
    grad_out = torch.randn(3, 50, 4)
    layers = [(layer.weight, layer.bias) for layer in net.layers]
    torch.autograd.backward(net(x), grad_out)
    with torch.no_grad():
        inputs, out = relu_forward(layers, x)
        grads, grad_in = relu_backward(layers, inputs, grad_out, input_columns=slice(2, None))
    _close(out, net(x).detach())
    for layer, (weight_grad, bias_grad) in zip(net.layers, grads):
        _close(weight_grad, layer.weight.grad)
        _close(bias_grad, layer.bias.grad)
    _close(grad_in, x.grad[..., 2:])
    assert (inputs[1] == 0).any()  # some units are off, so the ReLU masks were exercised

    # nn.Linear weights as [1, in, out] views of [out, in]: gradients come back contiguous.
    linears = [torch.nn.Linear(6, 16), torch.nn.Linear(16, 4)]
    views = [(m.weight.mT.unsqueeze(0), m.bias.view(1, 1, -1)) for m in linears]
    x2 = torch.randn(40, 6)
    out2 = linears[1](torch.relu(linears[0](x2)))
    torch.autograd.backward(out2, grad_out[0, :40])
    with torch.no_grad():
        inputs2, _ = relu_forward(views, x2[None])
        grads2, none = relu_backward(views, inputs2, grad_out[:1, :40])
    assert none is None
    for m, (weight_grad, bias_grad) in zip(linears, grads2):
        assert weight_grad[0].mT.is_contiguous()
        _close(weight_grad[0].mT, m.weight.grad)
        _close(bias_grad.view(-1), m.bias.grad)


def _batch(n: int = 128) -> Batch:
    gen = torch.Generator().manual_seed(3)
    return Batch(
        torch.randn(n, 5, generator=gen),
        torch.rand(n, 2, generator=gen) * 4 - 1,  # bounds [-1, 3]
        torch.randn(n, generator=gen),
        torch.randn(n, 5, generator=gen),
        (torch.rand(n, generator=gen) < 0.3).float(),
    )


def _reference_gradients(before: SAC, critic_at_actor_step, batch: Batch, noise: torch.Tensor):
    """SAC's three losses differentiated by autograd, from the same parameters and noise."""
    n = batch.obs.shape[0]
    alpha = before.log_alpha.detach().exp()
    actor = before.actor
    mean, raw_log_std = actor.body(torch.cat([batch.next_obs, batch.obs])).chunk(2, dim=-1)
    with torch.no_grad():
        nxt = actor.squash(mean[:n], raw_log_std[:n], noise[:n])
        next_q = twin_q(before.critic_target, batch.next_obs, nxt.action).min(0).values
        y = batch.rew + before.gamma * (1 - batch.done) * (next_q - alpha * nxt.log_prob)
    critic_loss = 0.5 * ((twin_q(before.critic, batch.obs, batch.act) - y) ** 2).mean(1).sum()
    critic_grads = torch.autograd.grad(critic_loss, list(before.critic.parameters()))

    now = actor.squash(mean[n:], raw_log_std[n:], noise[n:])
    q_new = twin_q(critic_at_actor_step, batch.obs, now.action).min(0).values
    actor_loss = (alpha * now.log_prob - q_new).mean()
    actor_grads = torch.autograd.grad(actor_loss, list(actor.parameters()))
    alpha_loss = -(before.log_alpha * (now.log_prob.detach() + before.target_entropy)).mean()
    (alpha_grad,) = torch.autograd.grad(alpha_loss, [before.log_alpha])
    return critic_grads, actor_grads, alpha_grad, critic_loss, actor_loss


@pytest.mark.parametrize("clamped", [False, True])
def test_sac_update_gradients_match_autograd(monkeypatch, clamped):
    torch.manual_seed(0)
    sac = SAC(5, 2, torch.tensor([-1.0, -1.0]), torch.tensor([3.0, 3.0]), hidden_size=32)
    with torch.no_grad():
        sac.log_alpha.fill_(-0.7)
        if clamped:  # the first log-std above LOG_STD_MAX: the clamp must stop its gradient
            sac.actor.body[4].bias[0, 2] = 6.0  # seed 0 (the only one)
    batch = _batch()
    for _ in range(3):  # move the networks and Adam state off their initial values
        sac.update(batch)
    before = copy.deepcopy(sac)
    seen = {}

    def recording_step(optimizer):
        params = optimizer.param_groups[0]["params"]
        name = {id(sac.critic_opt): "critic", id(sac.actor_opt): "actor"}.get(id(optimizer))
        seen[name or "alpha"] = [p.grad.clone() for p in params]
        if name == "actor":
            seen["critic_at_actor_step"] = copy.deepcopy(sac.critic)
        adam_step(optimizer)

    monkeypatch.setattr(sac_module, "adam_step", recording_step)
    torch.manual_seed(11)
    losses = sac.update(batch)
    torch.manual_seed(11)
    noise = torch.randn(2 * batch.obs.shape[0], 2)  # the update's only draw

    critic_grads, actor_grads, alpha_grad, critic_loss, actor_loss = _reference_gradients(
        before, seen["critic_at_actor_step"], batch, noise
    )
    for ours, reference in zip(seen["critic"], critic_grads, strict=True):
        _close(ours, reference)
    for ours, reference in zip(seen["actor"], actor_grads, strict=True):
        _close(ours, reference)
    _close(seen["alpha"][0], alpha_grad)
    _close(losses["critic_loss"], critic_loss.detach())
    _close(losses["actor_loss"], actor_loss.detach())
    log_std_bias_grad = seen["actor"][-1][0, 2]
    assert (log_std_bias_grad == 0) if clamped else (log_std_bias_grad != 0)
    for p in seen["actor"] + seen["critic"]:
        assert p.abs().sum() > 0


def test_adam_step_is_bitwise_optimizer_step():
    torch.manual_seed(0)
    params_a = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    params_b = [p.detach().clone().requires_grad_(True) for p in params_a]
    opt_a, opt_b = make_adam(params_a, 1e-2), make_adam(params_b, 1e-2)
    assert opt_b.param_groups[0]["fused"]  # the fast path is the one under test
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params_a]
        for p_a, p_b, g in zip(params_a, params_b, grads):
            p_a.grad, p_b.grad = g.clone(), g.clone()
        opt_a.step()
        adam_step(opt_b)
    for p_a, p_b in zip(params_a, params_b):
        assert torch.equal(p_a, p_b)
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    for key in state_a:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state_a[key][name], state_b[key][name])
