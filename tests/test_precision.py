"""`--precision fp32|bf16`: who may ask for bf16, where it reaches, and what stays float32.

bf16 is refused on a CPU without native bf16 products (checked from the CPU's flags, which
these tests construct); USBPO_ALLOW_EMULATED_BF16=1 lets the tests run the bf16 code paths on
any CPU. Under bf16 the heavy products run in bf16 (so the numbers differ from fp32's in the
low bits, which is how the tests see that autocast reached them) while parameters, gradients
and optimiser states stay float32, and one update moves the parameters as fp32's does to
within bf16's precision.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from cli_helpers import usbpo_inproc  # tests/ is on sys.path

from usbpo_cli.errors import UsageError
from usbpo_cli.util import precision

READ_FLAGS = precision.cpu_flags  # the real reader, before any test replaces it

X86_NO_BF16 = "processor : 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n"
X86_AVX512_BF16 = "processor : 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
X86_AMX = "flags : fpu avx2 amx_tile amx_bf16 amx_int8\n"
ARM_BF16 = "processor : 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def pretend_cpu(monkeypatch: pytest.MonkeyPatch, cpuinfo: str) -> None:
    """This machine's flags read as those of `cpuinfo`."""
    flags = READ_FLAGS(cpuinfo)
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)


def test_cpu_flags_are_read_from_x86_and_arm_lines() -> None:
    assert precision.cpu_flags(X86_NO_BF16) == {
        "fpu", "sse2", "avx", "avx2", "fma", "avx512f", "avx512bw"
    }  # fmt: skip
    assert "bf16" in precision.cpu_flags(ARM_BF16)
    assert precision.cpu_flags("model name : something\n") == set()


@pytest.mark.parametrize("cpuinfo", [X86_AVX512_BF16, X86_AMX, ARM_BF16])
def test_bf16_is_allowed_where_the_cpu_multiplies_it_natively(cpuinfo: str) -> None:
    assert precision.bf16_refusal(torch.device("cpu"), precision.cpu_flags(cpuinfo)) is None


def test_bf16_refusal_names_the_missing_instruction_sets() -> None:
    message = precision.bf16_refusal(torch.device("cpu"), precision.cpu_flags(X86_NO_BF16))
    assert message is not None and "\n" not in message
    assert "AVX512-BF16" in message and "AMX-BF16" in message and "fp32" in message


def test_check_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(precision.ALLOW_EMULATED, raising=False)
    pretend_cpu(monkeypatch, X86_NO_BF16)
    cpu = torch.device("cpu")
    precision.check_precision("fp32", cpu)
    with pytest.raises(UsageError, match="AVX512-BF16"):
        precision.check_precision("bf16", cpu)
    with pytest.raises(UsageError, match="choose fp32 or bf16"):
        precision.check_precision("fp16", cpu)
    pretend_cpu(monkeypatch, X86_AMX)
    precision.check_precision("bf16", cpu)
    pretend_cpu(monkeypatch, X86_NO_BF16)
    monkeypatch.setenv(precision.ALLOW_EMULATED, "1")
    precision.check_precision("bf16", cpu)


def test_the_mixed_region_multiplies_in_bf16_only_under_bf16() -> None:
    a, b = torch.randn(4, 3), torch.randn(3, 2)
    with precision.mixed("bf16", torch.device("cpu")):
        assert (a @ b).dtype == torch.bfloat16
    with precision.mixed("fp32", torch.device("cpu")):
        assert (a @ b).dtype == torch.float32


def test_cli_refuses_bf16_on_a_cpu_without_it_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(precision.ALLOW_EMULATED, raising=False)
    pretend_cpu(monkeypatch, X86_NO_BF16)
    out = tmp_path / "run"
    args = ["--env", "InvertedPendulum-v4", "--algo", "sac", "--steps", "300", "--out", str(out)]
    result = usbpo_inproc("train", *args, "--precision", "bf16", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "AVX512-BF16" in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()
    grid = tmp_path / "grid"
    result = usbpo_inproc(
        "compare", "--envs", "InvertedPendulum-v4", "--algos", "sac", "--seeds", "1",
        "--steps", "300", "--out", str(grid), "--precision", "bf16", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "AVX512-BF16" in result.stderr
    assert not grid.exists()


@pytest.mark.parametrize("algo", ["ppo", "alm"])
def test_algorithms_outside_the_bf16_paths_refuse_it(
    algo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(precision.ALLOW_EMULATED, "1")
    out = tmp_path / "run"
    args = ["--env", "InvertedPendulum-v4", "--algo", algo, "--out", str(out), "--quiet"]
    args += ["--preset", "tiny", "--steps", "100"]  # so a wrongly accepted run ends quickly
    result = usbpo_inproc("train", *args, "--precision", "bf16", cwd=tmp_path)
    assert result.returncode == 2 and f"{algo} runs in fp32 only" in result.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# what bf16 reaches, and what stays float32


def _sac_agent(mode: str):
    from baselines.model_free import ModelFreeAgent, SACConfig

    agent = ModelFreeAgent(
        "InvertedPendulum-v4", SACConfig(hidden_size=64), seed=0, total_steps=1000,
        precision=mode,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(5)
    for _ in range(300):
        obs = torch.randn(agent.obs_dim, generator=gen)
        act = torch.rand(agent.act_dim, generator=gen) * 6 - 3
        agent.real_buffer.add(obs, act, float(obs.sum()), obs + 0.1 * act, 0.0)
    return agent


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_a_bf16_sac_update_steps_float32_masters_as_fp32_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same weights, same batches: the bf16 update's parameter step points where fp32's does
    (cosine > 0.98 per tensor, Adam's normalised steps), but is not bit-equal (the products did
    run in bf16); parameters, gradients and Adam moments stay float32; losses agree to 2%."""
    monkeypatch.setenv(precision.ALLOW_EMULATED, "1")
    agents = {mode: _sac_agent(mode) for mode in ("fp32", "bf16")}
    before = {n: p.detach().clone() for n, p in agents["fp32"].policy.critic.named_parameters()}
    before_actor = {
        n: p.detach().clone() for n, p in agents["fp32"].policy.actor.named_parameters()
    }
    losses = {}
    for mode, agent in agents.items():
        agent.update_policy(3)
        losses[mode] = {k: float(v) for k, v in agent._loss_sums.items()}  # sums of 3
    fp32, bf16 = agents["fp32"].policy, agents["bf16"].policy
    differs = False
    for module, start in ((("critic"), before), (("actor"), before_actor)):
        ours = dict(getattr(bf16, module).named_parameters())
        for name, param in getattr(fp32, module).named_parameters():
            mine = ours[name]
            assert mine.dtype == torch.float32 and mine.grad.dtype == torch.float32, name
            state = getattr(bf16, f"{module}_opt").state[mine]
            assert state["exp_avg"].dtype == torch.float32, name
            assert _cosine(mine - start[name], param - start[name]) > 0.98, name
            differs |= not torch.equal(mine, param)
    assert differs, "the bf16 update equals fp32's bit for bit: autocast did not reach it"
    for key in ("critic_loss", "actor_loss"):
        assert losses["bf16"][key] == pytest.approx(losses["fp32"][key], rel=0.02), key


def _usbpo_agent(mode: str):
    from test_seed_axis import dyna_options, fill_seed

    from usbpo_cli.agents.usbpo import USBPOAgent, USBPOConfig

    config = USBPOConfig(**dyna_options(rollout_schedule=(1, 2, 2, 2)))
    agent = USBPOAgent("Hopper-v4", config, seed=0, total_steps=1000, precision=mode)
    fill_seed(agent, 0, 0)
    return agent


def test_bf16_reaches_phase_1_phase_2_and_rollouts_and_keeps_float32_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One model training (phase 1 and phase 2) and one rollout, from the same weights and
    data in fp32 and in bf16: each phase's numbers differ from fp32's (autocast reached it)
    yet stay close to them; the ensemble's parameters and the model buffer stay float32."""
    monkeypatch.setenv(precision.ALLOW_EMULATED, "1")
    agents = {mode: _usbpo_agent(mode) for mode in ("fp32", "bf16")}
    rows = {}
    for mode, agent in agents.items():
        agent.fit_model(60)
        names = ("model_loss_holdout", "phase2_steps", "model_shift_before", "model_shift")
        rows[mode] = {name: agent.recorded(name)[0] for name in names}
    fp32, bf16 = rows["fp32"], rows["bf16"]
    loss32, loss16 = fp32["model_loss_holdout"], bf16["model_loss_holdout"]
    assert loss16 != loss32 and loss16 == pytest.approx(loss32, rel=0.25)
    assert bf16["phase2_steps"] > 0 and fp32["phase2_steps"] > 0
    assert bf16["model_shift"] != fp32["model_shift"]
    for param in agents["bf16"].model.parameters():
        assert param.dtype == torch.float32
    starts = {}
    for mode, agent in agents.items():
        agent.begin()
        agent.rollout(agent.config.initial_steps + 3 * agent.config.epoch_length)
        starts[mode] = agent.model_buffer.ordered()
    assert all(field.dtype == torch.float32 for field in starts["bf16"])
    assert not torch.equal(starts["bf16"].next_obs, starts["fp32"].next_obs)


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_autocast_is_on_in_exactly_the_four_regions(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spies at the entry of phase 1 (`fit_ensemble`), phase 2's objective, the rollouts'
    model step and the policy update record whether bf16 autocast is on when each is called:
    on in all four under bf16, in none under fp32; and off again at the diagnostics between
    them (shift and bias are measured in float32)."""
    import usbpo_cli.agents.dyna as dyna

    monkeypatch.setenv(precision.ALLOW_EMULATED, "1")
    agent = _usbpo_agent(mode)
    seen: dict[str, list[bool]] = {}

    def spy(name: str, function):  # noqa: ANN001, ANN202
        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            on = torch.is_autocast_enabled("cpu") and (
                torch.get_autocast_dtype("cpu") == torch.bfloat16
            )
            seen.setdefault(name, []).append(on)
            return function(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(dyna, "fit_ensemble", spy("phase 1", dyna.fit_ensemble))
    monkeypatch.setattr(dyna, "shift_and_bias", spy("diagnostics", dyna.shift_and_bias))
    agent.objective = spy("phase 2", agent.objective)
    agent.model.sample_step = spy("rollout", agent.model.sample_step)
    agent.policy.update = spy("policy update", agent.policy.update)
    agent.fit_model(60)
    agent.begin()
    agent.rollout(agent.config.initial_steps + 3 * agent.config.epoch_length)
    agent.update_policy(2)
    regions = ("phase 1", "phase 2", "rollout", "policy update")
    assert set(seen) == {*regions, "diagnostics"}
    for name in regions:
        assert set(seen[name]) == {mode == "bf16"}, (name, seen[name])
    assert set(seen["diagnostics"]) == {False}


def test_runs_and_grids_recorded_before_the_flag_count_as_fp32() -> None:
    """config.json and grid.json name the precision; a folder written before they did ran
    fp32, so it resumes under fp32 and is refused under bf16."""
    from usbpo_cli.experiments.grids import _compared
    from usbpo_cli.runs.folders import comparable

    old = {"algo": "sac", "device": "cpu", "preset": "paper"}
    assert comparable(old) == comparable({**old, "precision": "fp32"})
    assert comparable(old) != comparable({**old, "precision": "bf16"})
    grid = {"kind": "compare", "envs": ["Hopper-v4"], "device": "cpu"}
    assert _compared(grid) == _compared({**grid, "precision": "fp32"})
    assert _compared(grid) != _compared({**grid, "precision": "bf16"})


def test_a_bf16_run_says_so_and_does_not_resume_as_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv(precision.ALLOW_EMULATED, "1")
    out = tmp_path / "run"
    args = ["--env", "InvertedPendulum-v4", "--algo", "sac", "--preset", "tiny", "--quiet"]
    args += ["--steps", "120", "--out", str(out)]
    result = usbpo_inproc("train", *args, "--precision", "bf16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"
    before = (out / "progress.csv").read_text()
    result = usbpo_inproc("train", *args, "--resume", cwd=tmp_path)  # fp32, the default
    assert result.returncode == 2 and "precision" in result.stderr
    assert (out / "progress.csv").read_text() == before


# ------------------------------------------------------------------ which library multiplies fp32
AMD = "vendor_id\t: AuthenticAMD\n"
INTEL = "vendor_id\t: GenuineIntel\n"


def test_the_cpu_vendor_is_read_from_cpuinfo() -> None:
    assert precision.cpu_vendor(AMD + X86_NO_BF16) == "AuthenticAMD"
    assert precision.cpu_vendor(INTEL) == "GenuineIntel"
    assert precision.cpu_vendor(ARM_BF16) == ""


@pytest.mark.parametrize(
    ("choice", "cpuinfo", "width", "library"),
    [
        ("auto", AMD + X86_NO_BF16, 256, "onednn"),  # AMD with AVX-512: MKL's slow path
        # from 128 wide (measured on Zen 5: a 128-wide SAC update 1.89 ms against MKL's 1.94)
        ("auto", AMD + X86_NO_BF16, 128, "onednn"),
        ("auto", AMD + X86_NO_BF16, 127, "mkl"),  # narrower: oneDNN's cost per call loses
        ("auto", AMD + "flags : fpu avx2 fma\n", 256, "mkl"),  # no AVX-512: no faster kernels
        ("auto", INTEL + X86_NO_BF16, 256, "mkl"),  # MKL's own fast path
        ("auto", AMD + X86_AMX, 256, "mkl"),  # AMX: the switch would round to bf16
        ("onednn", INTEL + X86_NO_BF16, 32, "onednn"),
        ("onednn", INTEL + X86_AMX, 256, "mkl"),  # never where it would round
        ("mkl", AMD + X86_NO_BF16, 256, "mkl"),
    ],
)
def test_fp32_products_go_to_onednn_only_where_mkl_is_slow_and_nothing_rounds(
    choice: str, cpuinfo: str, width: int, library: str
) -> None:
    vendor, flags = precision.cpu_vendor(cpuinfo), precision.cpu_flags(cpuinfo)
    assert precision.fp32_products_library(choice, vendor, flags, width) == library


def test_an_agent_routes_its_products_by_its_widest_hidden_layer(
    monkeypatch: pytest.MonkeyPatch, restore_fp32_switch
) -> None:
    """The paper preset's networks (256 wide) go to oneDNN on an AMD CPU with AVX-512, the
    tiny preset's (32 wide) stay with MKL."""
    from usbpo_cli.agents.registry import get_algorithm
    from usbpo_cli.runs.config import resolve_config

    sac = get_algorithm("sac")
    monkeypatch.setattr(precision, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f"})
    monkeypatch.delenv(precision.FP32_PRODUCTS, raising=False)
    for preset, switch in (("paper", "bf16"), ("tiny", "none")):
        config, _ = resolve_config(sac.config_cls, None, preset, {})
        sac.agent_cls("InvertedPendulum-v4", config, seed=0, total_steps=10)
        assert torch.backends.mkldnn.matmul.fp32_precision == switch, preset
    # an agent with several networks is routed by its widest: a 256-wide policy beside a
    # 64-wide model
    mbpo = get_algorithm("mbpo")
    config, _ = resolve_config(mbpo.config_cls, None, "tiny", {})
    config = dataclasses.replace(config, hidden_size=256, model_hidden_size=64)
    mbpo.agent_cls("InvertedPendulum-v4", config, seed=0, total_steps=10)
    assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"


def test_an_unknown_fp32_products_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="USBPO_FP32_PRODUCTS='blas'"):
        precision.fp32_products_library("blas", "AuthenticAMD", {"avx512f"})
    monkeypatch.setenv(precision.FP32_PRODUCTS, "blas")  # refused before a run writes anything
    with pytest.raises(UsageError, match="USBPO_FP32_PRODUCTS='blas'"):
        precision.check_precision("fp32", torch.device("cpu"))


@pytest.fixture
def restore_fp32_switch():
    """Each test below changes the process-wide switch; put it back afterwards."""
    before = torch.backends.mkldnn.matmul.fp32_precision
    yield
    torch.backends.mkldnn.matmul.fp32_precision = before


@pytest.mark.parametrize("choice", ["onednn", "mkl"])
def test_routed_fp32_products_keep_float32_accuracy(choice: str, restore_fp32_switch) -> None:
    """Whichever library multiplies, a float32 batched product (the networks' baddbmm) agrees
    with float64 to float32's precision: its error is far below what one bf16 rounding of the
    inputs gives (measured here, as a yardstick, on the same numbers)."""
    library = precision.route_fp32_products(choice, "AuthenticAMD", {"avx512f"})
    switch = torch.backends.mkldnn.matmul.fp32_precision
    assert library == choice and switch == ("bf16" if choice == "onednn" else "none")
    generator = torch.Generator().manual_seed(1)
    bias = torch.randn(5, 1, 96, generator=generator)
    x = torch.randn(5, 128, 256, generator=generator)
    weight = torch.randn(5, 256, 96, generator=generator)
    exact = torch.baddbmm(bias.double(), x.double(), weight.double())
    error = (torch.baddbmm(bias, x, weight).double() - exact).abs().max()
    bf16 = torch.baddbmm(bias, x.bfloat16().float(), weight.bfloat16().float()).double()
    assert error < 1e-3 * (bf16 - exact).abs().max()


def test_the_switch_is_undone_when_products_would_not_stay_float32(
    monkeypatch: pytest.MonkeyPatch, restore_fp32_switch
) -> None:
    monkeypatch.setattr(precision, "products_stay_float32", lambda: False)
    assert precision.route_fp32_products("onednn", "AuthenticAMD", {"avx512f"}) == "mkl"
    assert torch.backends.mkldnn.matmul.fp32_precision == "none"


def test_the_accuracy_guard_tells_a_bf16_product_from_a_float32_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert precision.products_stay_float32()
    rounded = torch.Tensor.__matmul__

    def bf16_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.dtype == torch.float32:  # what the switch would do on AMX; float64 stays exact
            a, b = a.bfloat16().float(), b.bfloat16().float()
        return rounded(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", bf16_matmul)
    assert not precision.products_stay_float32()


@pytest.fixture
def restore_tf32():
    """configure() sets process-wide TF32 switches; put them back afterwards."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize(
    ("name", "device", "tf32"),
    [("bf16", "cuda", True), ("fp32", "cuda", False), ("bf16", "cpu", False)],
)
def test_tf32_is_allowed_on_cuda_under_bf16_only(
    name: str, device: str, tf32: bool, restore_tf32, restore_fp32_switch
) -> None:
    """The issue's rule: `--precision bf16` also lets CUDA's float32 products use TF32; fp32
    keeps them exact, and a CPU has no TF32. (The switches are plain settings: no GPU needed.)"""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    precision.configure(name, torch.device(device), 32)
    assert torch.backends.cuda.matmul.allow_tf32 is tf32
    assert torch.backends.cudnn.allow_tf32 is tf32


def test_a_gpu_that_would_only_emulate_bf16_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU without bf16 tensor cores (a V100, a T4) runs bf16 only by emulation: refused,
    naming the GPU; one with them is not."""
    native = {"value": False}

    def supported(including_emulation: bool = True) -> bool:
        return including_emulation or native["value"]

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    refusal = precision.bf16_refusal(torch.device("cuda"))
    assert refusal == "--precision bf16: Tesla V100 has no native bf16 matrix products; use fp32"
    native["value"] = True
    assert precision.bf16_refusal(torch.device("cuda")) is None
