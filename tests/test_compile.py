"""`--compile`: SAC's update through torch.compile computes SAC's update, and only runs that
can use it may ask for it.

The uncompiled update is the reference (its gradients are checked against autograd in
tests/test_sac.py): the compiled one, from the same weights, batches and random streams, must
give the same losses and the same parameters, target critics, temperatures and Adam moments
after several updates, to float32 round-off (the compiler sums in another order). Two compiled
updates of the same seed must agree bit for bit, which is what keeps a compiled run's resume
exact. Each test first checks that compiling really happened, so a compiled path that silently
ran eagerly cannot pass them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import snapshot, usbpo_inproc  # tests/ is on sys.path

from usbpo_cli.agents.buffers import Batch
from usbpo_cli.agents.sac import SAC
from usbpo_cli.errors import UsageError
from usbpo_cli.util import compiler, precision

SEEDS, N, OBS, ACT = 2, 64, 5, 2


def make_sac(compiled: bool, **settings: float) -> SAC:
    generators = [torch.Generator().manual_seed(10 + s) for s in range(SEEDS)]
    return SAC(
        OBS,
        ACT,
        -torch.ones(ACT),
        2 * torch.ones(ACT),
        hidden_size=32,
        lr=1e-2,  # large steps, so that a lost or stale gradient shows in the parameters
        generators=generators,
        compiled=compiled,
        **settings,
    )


def batches(count: int) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    return [
        Batch(
            torch.randn(SEEDS, N, OBS, generator=g),
            torch.rand(SEEDS, N, ACT, generator=g) * 3 - 1,
            torch.randn(SEEDS, N, generator=g),
            torch.randn(SEEDS, N, OBS, generator=g),
            (torch.rand(SEEDS, N, generator=g) < 0.2).float(),
        )
        for _ in range(count)
    ]


def everything(sac: SAC) -> dict[str, torch.Tensor]:
    """Every tensor an update changes: networks, target critics, temperature, Adam moments."""
    tensors = {f"actor.{k}": v for k, v in sac.actor.state_dict().items()}
    tensors.update({f"critic.{k}": v for k, v in sac.critic.state_dict().items()})
    tensors.update({f"target.{k}": v for k, v in sac.critic_target.state_dict().items()})
    tensors["log_alpha"] = sac.log_alpha.detach()
    for name, opt in (("actor", sac.actor_opt), ("critic", sac.critic_opt)):
        for i, state in enumerate(opt.state.values()):
            tensors[f"{name}_opt.{i}.exp_avg"] = state["exp_avg"]
            tensors[f"{name}_opt.{i}.exp_avg_sq"] = state["exp_avg_sq"]
    return {k: v.clone() for k, v in tensors.items()}


def run_updates(sac: SAC, data: list[Batch]) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in sac.update(batch).items()} for batch in data]


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (it never lowers: read as deltas,
    after `torch._dynamo.reset()` has emptied its caches so nothing can be reused)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compiled_update_matches_the_uncompiled_one() -> None:
    torch._dynamo.reset()
    data = batches(4)
    eager, compiled = make_sac(False), make_sac(True)
    eager_losses = run_updates(eager, data)
    graphs = compiled_graphs()
    compiled_losses = run_updates(compiled, data)
    assert compiled_graphs() > graphs, "the compiled update ran without compiling anything"
    for mine, reference in zip(compiled_losses, eager_losses, strict=True):
        for key in reference:
            torch.testing.assert_close(mine[key], reference[key], rtol=1e-5, atol=1e-6)
    after_eager, after_compiled = everything(eager), everything(compiled)
    assert after_eager.keys() == after_compiled.keys()
    for key, reference in after_eager.items():
        torch.testing.assert_close(after_compiled[key], reference, rtol=1e-4, atol=1e-6, msg=key)
    # and the updates moved things: equal parameters are not merely the initial ones
    moved = everything(make_sac(False))
    assert not torch.equal(moved["actor.body.0.weight"], after_eager["actor.body.0.weight"])


def test_two_compiled_updates_of_one_seed_agree_bit_for_bit() -> None:
    torch._dynamo.reset()
    data = batches(3)
    first, second = make_sac(True), make_sac(True)
    graphs = compiled_graphs()
    losses = run_updates(first, data), run_updates(second, data)
    assert compiled_graphs() > graphs
    for a, b in zip(*losses, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    for key, tensor in everything(first).items():
        assert torch.equal(tensor, everything(second)[key]), key


def test_a_compiled_sac_with_other_settings_is_not_served_another_sacs_kernels() -> None:
    """Compiled updates are shared by every SAC of a process (one compile, not one per run),
    so what differs between SACs must reach the shared kernels or make new ones: a SAC with
    another discount, Polyak rate and target entropy, compiled after a default one, must
    still compute its own update."""
    torch._dynamo.reset()
    data = batches(2)
    run_updates(make_sac(True), data)
    other = {"gamma": 0.5, "tau": 0.2, "target_entropy": -7.0}
    eager, compiled = make_sac(False, **other), make_sac(True, **other)
    compiled_losses = run_updates(compiled, data)
    for mine, reference in zip(compiled_losses, run_updates(eager, data)):
        for key in reference:
            torch.testing.assert_close(mine[key], reference[key], rtol=1e-5, atol=1e-6)
    for key, reference in everything(eager).items():
        torch.testing.assert_close(everything(compiled)[key], reference, rtol=1e-4, atol=1e-6)


def test_a_failed_trial_compile_is_refused_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

    monkeypatch.setattr(compiler, "_checked", {})
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(UsageError) as refused:
        compiler.check_compile(torch.device("cpu"))
    message = str(refused.value)
    assert "\n" not in message and "No working C++ compiler found" in message
    assert message.startswith("--compile:") and "without --compile" in message


def test_cli_refuses_compile_where_it_cannot_build_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiler, "_checked", {"cpu": "RuntimeError: no C++ compiler"})
    out = tmp_path / "runs"
    result = usbpo_inproc(
        "train", "--algo", "sac", "--preset", "tiny", "--steps", "300", "--compile",
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "no C++ compiler" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("algo", "extra", "uses"),
    [
        ("td3", [], "td3's"),
        ("mbpo", ["--set", "policy=td3"], "td3's"),
        ("alm", [], "alm's"),
        ("ppo", [], "its own"),
    ],
)
def test_cli_refuses_compile_for_runs_without_a_sac_update(
    tmp_path: Path, algo: str, extra: list[str], uses: str
) -> None:
    (tmp_path / "keep.txt").write_text("untouched\n")
    before = snapshot(tmp_path)
    result = usbpo_inproc(
        "train", "--algo", algo, "--preset", "tiny", "--steps", "300", "--compile", *extra,
        "--out", str(tmp_path / "run"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and f"uses {uses}" in line and "SAC's update" in line
    assert snapshot(tmp_path) == before


def test_a_compiled_run_says_so_and_resumes_only_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiler, "_checked", {"cpu": None})  # no trial: only SAC compiles
    torch._dynamo.reset()
    out = tmp_path / "run"
    common = ["train", "--algo", "sac", "--preset", "tiny", "--out", str(out)]
    graphs = compiled_graphs()
    result = usbpo_inproc(*common, "--steps", "300", "--compile", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert compiled_graphs() > graphs, "the run did not compile SAC's update"
    assert "compiled at its first call" in result.stderr  # the pause is announced
    assert json.loads((out / "config.json").read_text())["compile"] is True
    before = snapshot(out)
    refused = usbpo_inproc(*common, "--steps", "400", "--resume", cwd=tmp_path)
    assert refused.returncode == 2 and "compile" in refused.stderr, refused.stderr
    assert snapshot(out) == before


def test_a_compiled_update_under_bf16_still_multiplies_in_bf16() -> None:
    """autocast is entered around the update, outside the compiled code: the compiled update
    must still multiply in bf16. Its first losses (computed before any step) then differ from
    fp32's by bf16's rounding, a thousand times what compiling alone changes in fp32, and stay
    within bf16's tolerance of them; a compiled update that lost autocast would match fp32's
    to float32 round-off. (Compiled, the elementwise work between products keeps float32,
    where the uncompiled update rounds it to bf16, so it is not compared with that one.)"""
    torch._dynamo.reset()
    data = batches(1)
    cpu = torch.device("cpu")
    losses, after = {}, {}
    graphs = compiled_graphs()
    for name, compiled, mode in (
        ("fp32", False, "fp32"),
        ("fp32 compiled", True, "fp32"),
        ("bf16 compiled", True, "bf16"),
    ):
        sac = make_sac(compiled)
        with precision.mixed(mode, cpu):
            losses[name] = run_updates(sac, data)[0]
        after[name] = everything(sac)
    assert compiled_graphs() > graphs
    assert all(t.dtype == torch.float32 for t in after["bf16 compiled"].values())

    def gap(name: str) -> float:
        return max(
            float((losses[name][k] - losses["fp32"][k]).abs().max())
            for k in ("critic_loss", "actor_loss")
        )

    assert gap("bf16 compiled") > 100 * max(gap("fp32 compiled"), 1e-7)
    for key in ("critic_loss", "actor_loss"):
        torch.testing.assert_close(
            losses["bf16 compiled"][key], losses["fp32"][key], rtol=0.02, atol=0.02
        )


def test_the_trial_kernel_is_checked_once_per_device_and_its_answer_judged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch.compile stood in for: a compiler that builds the kernel as written passes (the
    trial computes relu(2 x 1) + 1 = 3 on each of four ones), one that builds a wrong kernel is
    refused, and each device is tried once per process."""
    built = []

    def as_written(fn, dynamic):  # noqa: ANN001, ANN202
        built.append(dynamic)
        return fn

    monkeypatch.setattr(compiler, "_checked", {})
    monkeypatch.setattr(torch, "compile", as_written)
    assert compiler.compile_refusal(torch.device("cpu")) is None
    assert compiler.compile_refusal(torch.device("cpu")) is None
    assert built == [False]  # static shapes, built once
    compiler.check_compile(torch.device("cpu"))  # no refusal

    def off_by_one(fn, dynamic):  # noqa: ANN001, ANN202
        return lambda x: fn(x) + (torch.arange(4) == 3)  # the last element wrong only

    monkeypatch.setattr(compiler, "_checked", {})
    monkeypatch.setattr(torch, "compile", off_by_one)
    assert compiler.compile_refusal(torch.device("cpu")) == (
        "its trial kernel computed a wrong result"
    )
    with pytest.raises(UsageError, match="on cpu here \\(its trial kernel computed a wrong"):
        compiler.check_compile(torch.device("cpu"))


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (RuntimeError(""), "RuntimeError: RuntimeError"),  # no message: the type names it
        (OSError("  \n  "), "OSError: OSError"),
        (ValueError("x" * 200 + "\nsecond line"), "ValueError: " + "x" * 160),
        (ImportError("\n  triton not found\ndetail"), "ImportError: triton not found"),
    ],
)
def test_why_compiling_fails_is_the_first_line_of_the_error(
    monkeypatch: pytest.MonkeyPatch, error: Exception, why: str
) -> None:
    def broken(fn, dynamic):  # noqa: ANN001, ANN202
        raise error

    monkeypatch.setattr(compiler, "_checked", {})
    monkeypatch.setattr(torch, "compile", broken)
    assert compiler.compile_refusal(torch.device("cpu")) == why
