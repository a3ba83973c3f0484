"""Config layer: `--set` parsing, the paper's per-task table, presets, deviations, validation."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from baselines.cmlo import CMLOConfig
from baselines.model_free import SACConfig
from usbpo_cli.agents.dyna import DynaConfig
from usbpo_cli.agents.offpolicy import PolicyConfig
from usbpo_cli.agents.usbpo import USBPOConfig
from usbpo_cli.errors import UsageError
from usbpo_cli.runs.config import PAPER_TASKS, PRESETS, borrowed_defaults, resolve_config
from usbpo_cli.util.settings import parse_overrides, parse_value

# ---------------------------------------------------------------------------------------------
# parse_overrides


@pytest.mark.parametrize(
    ("pair", "key", "expected"),
    [
        ("updates_per_step=7", "updates_per_step", 7),
        ("updates_per_step= 12 ", "updates_per_step", 12),
        ("initial_steps=1e3", "initial_steps", 1000),
        ("replay_size=2.0e5", "replay_size", 200_000),
        ("policy_lr=0.001", "policy_lr", 1e-3),
        ("policy_lr=3e-4", "policy_lr", 3e-4),
        ("gamma=1", "gamma", 1.0),
        ("rollout_schedule=(1,2,3,4)", "rollout_schedule", (1, 2, 3, 4)),
        ("rollout_schedule=[1,2,3,4]", "rollout_schedule", (1, 2, 3, 4)),
        ("rollout_schedule=(5, 60, 1, 9)", "rollout_schedule", (5, 60, 1, 9)),
        (
            "model_weight_decay=(1e-5,2e-5,3e-5,4e-5,5e-5)",
            "model_weight_decay",
            (1e-5, 2e-5, 3e-5, 4e-5, 5e-5),
        ),
        ("target_entropy=None", "target_entropy", None),
        ("target_entropy=none", "target_entropy", None),
        ("target_entropy=-2.5", "target_entropy", -2.5),
        ("model_max_epochs=None", "model_max_epochs", None),
        ("model_max_epochs=40", "model_max_epochs", 40),
        ("phase2_terms=shift", "phase2_terms", "shift"),
        ("policy=sac", "policy", "sac"),
    ],
)
def test_parse_overrides_types(pair: str, key: str, expected: object) -> None:
    overrides = parse_overrides([pair], USBPOConfig)
    assert list(overrides) == [key]
    value = overrides[key]
    assert value == expected
    assert type(value) is type(expected)


def test_parse_overrides_several_pairs_later_wins() -> None:
    overrides = parse_overrides(["batch_size=32", "phase2_lr=5e-5", "batch_size=16"], USBPOConfig)
    assert overrides == {"batch_size": 16, "phase2_lr": 5e-5}


def test_value_with_extra_equals_is_rejected() -> None:
    # split on the first '=' only: the rest is the value (rejected here as a bad float)
    with pytest.raises(UsageError, match="policy_lr"):
        parse_overrides(["policy_lr=1=2"], USBPOConfig)


@pytest.mark.parametrize(
    ("pair", "suggestion"),
    [
        ("updates_per_stp=3", "updates_per_step"),
        ("phase2_l=1e-4", "phase2_lr"),
        ("rollout_shedule=(1,2,3,4)", "rollout_schedule"),
        ("batchsize=64", "batch_size"),
    ],
)
def test_unknown_key_suggests_close_match(pair: str, suggestion: str) -> None:
    with pytest.raises(UsageError, match=rf"did you mean {suggestion}\?") as info:
        parse_overrides([pair], USBPOConfig)
    assert pair.split("=")[0] in str(info.value)


def test_unknown_key_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(UsageError, match="nosuchkey") as info:
        parse_overrides(["nosuchkey=1"], USBPOConfig)
    assert "did you mean" not in str(info.value)


def test_keys_are_per_algorithm() -> None:
    # phase 2 belongs to USB-PO only; model settings do not exist for SAC
    with pytest.raises(UsageError, match="phase2_lr"):
        parse_overrides(["phase2_lr=1e-4"], DynaConfig)
    with pytest.raises(UsageError, match="model_train_freq"):
        parse_overrides(["model_train_freq=10"], SACConfig)
    assert parse_overrides(["model_train_freq=10"], DynaConfig) == {"model_train_freq": 10}


@pytest.mark.parametrize(
    ("pair", "key"),
    [
        ("updates_per_step=abc", "updates_per_step"),
        ("updates_per_step=1.5", "updates_per_step"),
        ("updates_per_step=", "updates_per_step"),
        ("updates_per_step=None", "updates_per_step"),
        ("model_max_epochs=2.5", "model_max_epochs"),
        ("policy_lr=fast", "policy_lr"),
        ("target_entropy=low", "target_entropy"),
        ("rollout_schedule=(1,2,3)", "rollout_schedule"),
        ("rollout_schedule=[1,2,3,4,5]", "rollout_schedule"),
        ("rollout_schedule=(a,b,c,d)", "rollout_schedule"),
        ("rollout_schedule=(1,2,true,4)", "rollout_schedule"),
        ("updates_per_step", "updates_per_step"),
        ("phase2_lr", "phase2_lr"),
    ],
)
def test_bad_values_name_the_key(pair: str, key: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_overrides([pair], USBPOConfig)
    assert key in str(info.value)


def test_missing_equals_says_key_value() -> None:
    with pytest.raises(UsageError, match="expected key=value"):
        parse_overrides(["updates_per_step"], USBPOConfig)


def test_tuple_length_error_gives_counts() -> None:
    with pytest.raises(UsageError, match="expected 4 numbers, got 3"):
        parse_overrides(["rollout_schedule=(1,2,3)"], USBPOConfig)


@pytest.mark.parametrize(
    ("raw", "kind", "shown"),
    [
        ("abc", int, "int"),
        ("1.5", int, "int"),
        ("fast", float, "float"),
        ("low", float | None, "float | None"),
        ("(1,2,x)", tuple[int, int, int], "tuple[int, int, int]"),
        ("(1,2.5)", tuple[int, ...], "tuple[int, ...]"),
        ("(1,true)", tuple[float, ...], "tuple[float, ...]"),
        ("maybe", bool, "bool"),
    ],
)
def test_a_refused_value_names_the_type_it_had_to_be(raw: str, kind: object, shown: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_value(raw, kind, "knob")
    assert str(info.value) == f"--set knob={raw!r}: not a valid {shown}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("0", False), ("FALSE", False), ("no", False)],
)
def test_a_switch_reads_the_usual_spellings(raw: str, expected: bool) -> None:
    assert parse_value(raw, bool, "knob") is expected


def test_a_fixed_tuple_counts_its_items_and_a_variable_one_checks_their_type() -> None:
    """tuple[float, float] takes exactly two numbers; tuple[int, ...] any number of whole
    numbers (its length is the config's `validate`'s to judge)."""
    assert parse_value("(1, 2.5)", tuple[float, float], "pair") == (1, 2.5)
    with pytest.raises(UsageError, match="expected 2 numbers, got 3"):
        parse_value("(1, 2, 3)", tuple[float, float], "pair")
    assert parse_value("[4, 5, 6]", tuple[int, ...], "sizes") == (4, 5, 6)
    assert parse_value("(7,)", tuple[int, ...], "sizes") == (7,)  # Python's one-item tuple
    assert parse_value("7, 8", tuple[int, ...], "sizes") == (7, 8)
    for mismatched in ("(7, 8]", "[7, 8)", "((7, 8))"):
        with pytest.raises(UsageError, match="not a valid tuple"):
            parse_value(mismatched, tuple[int, ...], "sizes")


def test_weight_decay_length_follows_hidden_layers() -> None:
    overrides = parse_overrides(
        ["model_hidden_layers=3", "model_weight_decay=(1e-4,1e-4,1e-4,1e-4)"], DynaConfig
    )
    config, _ = resolve_config(DynaConfig, "Hopper", "paper", overrides)
    assert config.model_weight_decay == (1e-4,) * 4


# ---------------------------------------------------------------------------------------------
# resolve_config: the paper's per-task table


def test_hopper_paper_values() -> None:
    config, deviations = resolve_config(USBPOConfig, "Hopper", "paper", {})
    assert isinstance(config, USBPOConfig)
    assert config.updates_per_step == 20
    assert config.rollout_schedule == (20, 150, 1, 15)
    assert config.target_entropy == -1.0
    assert config.epoch_length == 1000
    assert deviations == {}


def test_halfcheetah_paper_values() -> None:
    config, deviations = resolve_config(USBPOConfig, "HalfCheetah", "paper", {})
    assert config.updates_per_step == 40
    assert config.rollout_schedule == (20, 150, 1, 1)
    assert config.target_entropy == -3.0
    assert deviations == {}


def test_inverted_pendulum_paper_values() -> None:
    config, _ = resolve_config(DynaConfig, "InvertedPendulum", "paper", {})
    assert config.epoch_length == 250
    assert config.updates_per_step == 10
    assert config.rollout_schedule == (1, 15, 1, 1)
    assert config.target_entropy == -0.05


def test_humanoid_paper_values() -> None:
    config, _ = resolve_config(USBPOConfig, "Humanoid", "paper", {})
    assert config.model_hidden_size == 400
    assert config.model_train_freq == 1000
    assert config.model_retain_epochs == 5
    assert config.rollout_schedule == (20, 300, 1, 25)
    # the rest stays at the dataclass defaults
    assert config.hidden_size == USBPOConfig().hidden_size
    assert config.ensemble_size == 7


def test_other_families_do_not_leak_humanoid_values() -> None:
    config, _ = resolve_config(USBPOConfig, "Ant", "paper", {})
    assert config.model_hidden_size == 200
    assert config.model_train_freq == 250
    assert config.model_retain_epochs == 1
    assert config.rollout_schedule == (20, 100, 1, 25)


DESIGN = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"


# The words of the table's notes column, and the setting each names.
DESIGN_NOTES = {
    "hidden": "model_hidden_size",
    "train freq": "model_train_freq",
    "retain": "model_retain_epochs",
    "epoch": "epoch_length",
}


def design_table() -> dict[str, dict[str, object]]:
    """DESIGN.md's "Paper hyperparameters" table, read as text: per task, G, the rollout
    schedule, the target entropy and the settings its notes name."""
    rows = {}
    for line in DESIGN.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not re.fullmatch(r"\[[\d,]+\]", cells[2]):
            continue
        values: dict[str, object] = {
            "updates_per_step": int(cells[1]),
            "rollout_schedule": tuple(int(v) for v in cells[2].strip("[]").split(",")),
            "target_entropy": float(cells[3]),
        }
        for words, field in DESIGN_NOTES.items():
            if match := re.search(rf"{words} (\d+)", cells[4]):
                values[field] = int(match.group(1))
        rows[cells[0].split()[0]] = values
    return rows


def test_every_paper_task_uses_design_mds_table_and_the_common_values() -> None:
    """Each of the six tasks resolves to its row of DESIGN.md's table (read from the file, not
    from the code's own table), and everything the row does not name to the common values."""
    table = design_table()
    assert sorted(table) == sorted(PAPER_TASKS)
    common = {
        "ensemble_size": 7,
        "num_elites": 5,
        "real_ratio": 0.05,
        "rollout_batch_size": 100_000,
        "model_retain_epochs": 1,
        "epoch_length": 1000,
        "model_train_freq": 250,
        "initial_steps": 5000,
        "model_hidden_size": 200,
        "hidden_size": 256,
        "batch_size": 256,
        "gamma": 0.99,
        "tau": 5e-3,
        "policy_lr": 3e-4,
    }
    for family, row in table.items():
        config, deviations = resolve_config(USBPOConfig, family, "paper", {})
        assert deviations == {}
        for key, value in {**common, **row}.items():
            assert getattr(config, key) == value, (family, key)


def design_cmlo_values() -> dict[str, dict[str, float]]:
    """DESIGN.md's CMLO line: alpha and compute_interval per task, read from the text."""
    text = " ".join(DESIGN.read_text().split())
    alphas = re.search(r"alpha: (Hopper [^;]+);", text).group(1)
    intervals = re.search(r"`compute_interval`: ([^(]+)\(", text).group(1)
    per_task: dict[str, dict[str, float]] = {}
    for name, value in re.findall(r"(\w+) ([\d.]+)", alphas):
        per_task.setdefault(name, {})["cmlo_alpha"] = float(value)
    # "Hopper and Walker2d 20, HalfCheetah, Ant and Humanoid 50"
    for names, value in re.findall(r"([A-Za-z0-9, ]+?) (\d+)(?:,|$)", intervals.strip()):
        for name in re.findall(r"[A-Z]\w+", names):
            per_task.setdefault(name, {})["cmlo_compute_interval"] = int(value)
    return per_task


@pytest.mark.parametrize("family", ["Hopper", "Walker2d", "HalfCheetah", "Ant", "Humanoid"])
def test_cmlo_takes_the_authors_values_per_task(family: str) -> None:
    expected = design_cmlo_values()[family]
    assert set(expected) == {"cmlo_alpha", "cmlo_compute_interval"}
    config, deviations = resolve_config(CMLOConfig, family, "paper", {})
    assert deviations == {}
    for key, value in expected.items():
        assert getattr(config, key) == value, key


def test_a_task_without_paper_values_names_where_each_borrowed_value_comes_from() -> None:
    """For a task outside the tables, each per-task setting a run uses unchanged is listed with
    the tasks (read from DESIGN.md) whose value it is."""
    table, cmlo = design_table(), design_cmlo_values()
    borrowed = borrowed_defaults(CMLOConfig, None, "paper", {})
    default = CMLOConfig()

    def tasks(key: str, source: dict[str, dict]) -> str:
        names = [
            t for t in source if source[t].get(key, getattr(default, key)) == getattr(default, key)
        ]
        return ", ".join(names)

    for key in ("updates_per_step", "rollout_schedule", "model_hidden_size", "epoch_length"):
        assert borrowed[key] == {
            "used": getattr(default, key),
            "note": f"no paper value; borrowed from {tasks(key, table)} (MBPO's per-task table)",
        }
    for key in ("cmlo_alpha", "cmlo_compute_interval"):
        assert borrowed[key]["used"] == getattr(default, key)
        assert borrowed[key]["note"] == (
            f"no paper value; borrowed from {tasks(key, cmlo)}, and tasks outside CMLO's "
            "per-task configs"
        )
    assert borrowed["target_entropy"] == {
        "used": None,
        "note": "no paper value; borrowed from SAC's default, -action_dim",
    }
    # what the preset or --set chose is not borrowed; a paper task borrows nothing
    chosen = borrowed_defaults(CMLOConfig, None, "cpu-small", {"cmlo_alpha": 3.0})
    assert "cmlo_alpha" not in chosen and "updates_per_step" in chosen
    assert set(borrowed_defaults(CMLOConfig, None, "tiny", {})).isdisjoint(PRESETS["tiny"])
    assert borrowed_defaults(CMLOConfig, "Hopper", "paper", {}) == {}
    assert set(borrowed_defaults(SACConfig, None, "paper", {})) == {"epoch_length"}


def test_a_default_no_task_uses_is_called_the_algorithms_own() -> None:
    """An algorithm (a plugin, say) whose default matches no task of the table must not be
    said to borrow it from one."""

    @dataclasses.dataclass
    class Plugin(DynaConfig):
        updates_per_step: int = 7

    borrowed = borrowed_defaults(Plugin, None, "paper", {})
    assert borrowed["updates_per_step"] == {
        "used": 7,
        "note": "no paper value; borrowed from this algorithm's default "
        "(no task in MBPO's per-task table uses it)",
    }
    assert borrowed["target_entropy"]["note"].endswith("SAC's default, -action_dim")


def test_unknown_family_uses_dataclass_defaults() -> None:
    for family in (None, "Pusher"):
        config, deviations = resolve_config(USBPOConfig, family, "paper", {})
        assert config == USBPOConfig()
        assert deviations == {}


@pytest.mark.parametrize("family", sorted(PAPER_TASKS))
def test_paper_table_applied_to_every_family(family: str) -> None:
    config, _ = resolve_config(USBPOConfig, family, "paper", {})
    for key, value in PAPER_TASKS[family].items():
        assert getattr(config, key) == value, key


@pytest.mark.parametrize("family", ["Hopper", "HalfCheetah", "Humanoid", "InvertedPendulum"])
def test_sac_takes_only_epoch_length_from_table(family: str) -> None:
    config, deviations = resolve_config(SACConfig, family, "paper", {})
    assert isinstance(config, SACConfig)
    assert config.updates_per_step == 1
    assert config.target_entropy is None
    expected_epoch = PAPER_TASKS[family].get("epoch_length", 1000)
    assert config.epoch_length == expected_epoch
    assert deviations == {}


def test_sac_inverted_pendulum_epoch_length() -> None:
    config, _ = resolve_config(SACConfig, "InvertedPendulum", "paper", {})
    assert config.epoch_length == 250
    assert config.updates_per_step == 1


# ---------------------------------------------------------------------------------------------
# presets and deviations


README = Path(__file__).resolve().parents[1] / "README.md"

# What README's preset table promises, per preset: each changed setting, its value, and the
# README's words for it.
DOCUMENTED_PRESETS = {
    "cpu-small": {
        "rollout_batch_size": (20_000, "rollout batch 20k (paper 100k)"),
        "initial_steps": (1000, "1000 initial steps (5000)"),
        "model_max_epochs": (50, "at most 50 model epochs per training"),
        "eval_episodes": (3, "3 eval episodes"),
    },
    "demo": {
        "rollout_batch_size": (10_000, "rollout batch 10k"),
        "initial_steps": (500, "500 initial steps"),
        "epoch_length": (250, "250-step epochs"),
        "model_max_epochs": (30, "at most 30 model epochs"),
        "eval_episodes": (3, "3 eval episodes"),
    },
}


@pytest.mark.parametrize("preset", sorted(DOCUMENTED_PRESETS))
def test_a_documented_preset_changes_what_the_readme_says_and_nothing_else(preset: str) -> None:
    """A run labelled with a preset used exactly the values the README gives for it: each
    recorded as a deviation from the paper, by that preset, and no other setting changed."""
    row = next(line for line in README.read_text().splitlines() if line.startswith(f"| `{preset}`"))
    promised = DOCUMENTED_PRESETS[preset]
    for _, words in promised.values():
        assert words in row, words
    config, deviations = resolve_config(USBPOConfig, "Hopper", preset, {})
    assert deviations == {
        key: {"paper": getattr(USBPOConfig(), key), "used": value, "by": f"preset {preset}"}
        for key, (value, _) in promised.items()
    }


def test_preset_records_deviations() -> None:
    config, deviations = resolve_config(USBPOConfig, "Hopper", "tiny", {})
    assert config.updates_per_step == 1
    assert config.hidden_size == 32
    assert config.rollout_schedule == (20, 150, 1, 15)  # not in the preset: paper value kept
    assert deviations["updates_per_step"] == {"paper": 20, "used": 1, "by": "preset tiny"}
    assert deviations["hidden_size"] == {"paper": 256, "used": 32, "by": "preset tiny"}
    assert deviations["model_max_epochs"] == {"paper": None, "used": 3, "by": "preset tiny"}
    # every preset key the class has is a deviation here, and nothing else is
    fields = {f.name for f in dataclasses.fields(USBPOConfig)}
    assert set(deviations) == set(PRESETS["tiny"]) & fields
    for key, entry in deviations.items():
        assert set(entry) == {"paper", "used", "by"}
        assert entry["used"] == getattr(config, key)
        assert entry["paper"] != entry["used"]


def test_preset_paper_value_relative_to_task() -> None:
    # the "paper" column of a deviation is the task's paper value, not the dataclass default
    _, deviations = resolve_config(USBPOConfig, "InvertedPendulum", "tiny", {})
    assert deviations["epoch_length"] == {"paper": 250, "used": 100, "by": "preset tiny"}
    assert deviations["updates_per_step"]["paper"] == 10


def test_preset_keys_missing_from_class_are_ignored_for_sac() -> None:
    config, deviations = resolve_config(SACConfig, "Hopper", "tiny", {})
    assert not hasattr(config, "rollout_batch_size")
    assert "rollout_batch_size" not in deviations
    assert "phase2_max_steps" not in deviations
    assert set(deviations) == {
        "initial_steps",
        "epoch_length",
        "hidden_size",
        "batch_size",
        "eval_episodes",
    }
    # SAC's paper G is already 1, so the tiny preset's 1 is no deviation
    assert config.updates_per_step == 1


def test_set_overrides_preset() -> None:
    overrides = parse_overrides(["hidden_size=64", "phase2_lr=5e-5"], USBPOConfig)
    config, deviations = resolve_config(USBPOConfig, "Hopper", "tiny", overrides)
    assert config.hidden_size == 64
    assert deviations["hidden_size"] == {"paper": 256, "used": 64, "by": "--set"}
    assert deviations["phase2_lr"] == {"paper": 1e-4, "used": 5e-5, "by": "--set"}
    # preset values not overridden keep their source
    assert deviations["batch_size"]["by"] == "preset tiny"


def test_set_back_to_paper_value_is_no_deviation() -> None:
    config, deviations = resolve_config(USBPOConfig, "Hopper", "tiny", {"updates_per_step": 20})
    assert config.updates_per_step == 20
    assert "updates_per_step" not in deviations
    assert "hidden_size" in deviations


def test_set_on_paper_preset() -> None:
    config, deviations = resolve_config(
        DynaConfig, "Walker2d", "paper", {"rollout_schedule": (1, 2, 1, 3)}
    )
    assert config.rollout_schedule == (1, 2, 1, 3)
    assert deviations == {
        "rollout_schedule": {"paper": (20, 150, 1, 1), "used": (1, 2, 1, 3), "by": "--set"}
    }


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("config_cls", [USBPOConfig, DynaConfig, SACConfig])
def test_every_preset_resolves_and_validates(preset: str, config_cls: type) -> None:
    config, deviations = resolve_config(config_cls, "Hopper", preset, {})
    config.validate()
    assert all(entry["by"] == f"preset {preset}" for entry in deviations.values())
    if preset == "paper":
        assert deviations == {}


def test_unknown_preset_rejected() -> None:
    with pytest.raises(UsageError, match="unknown preset 'huge'") as info:
        resolve_config(USBPOConfig, "Hopper", "huge", {})
    assert "tiny" in str(info.value)


# ---------------------------------------------------------------------------------------------
# validate


def test_defaults_validate() -> None:
    for cls in (PolicyConfig, SACConfig, DynaConfig, USBPOConfig):
        cls().validate()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_elites": 8}, "num_elites"),
        ({"real_ratio": -0.1}, "real_ratio"),
        ({"real_ratio": 1.5}, "real_ratio"),
        ({"phase2_terms": "all"}, "phase2_terms"),
        ({"model_weight_decay": (1e-4,) * 4}, "model_weight_decay"),
        ({"model_weight_decay": (1e-4,) * 6}, "model_weight_decay"),
        ({"model_hidden_layers": 3}, "model_weight_decay"),
        ({"updates_per_step": 0}, "updates_per_step"),
        ({"batch_size": -1}, "batch_size"),
        ({"ensemble_size": 0}, "ensemble_size"),
        ({"phase2_max_steps": 0}, "phase2_max_steps"),
        ({"initial_steps": -1}, "initial_steps"),
        ({"gamma": 0.0}, "gamma"),
        ({"tau": 1.5}, "tau"),
        ({"policy": "ppo"}, r"policy 'ppo' is not available \(choose: sac, td3\)"),
        ({"td3_policy_delay": 0}, "td3_policy_delay"),
        ({"td3_noise_clip": -0.5}, "td3_noise_clip"),
        ({"rollout_schedule": (150, 20, 1, 15)}, "rollout_schedule"),
        ({"rollout_schedule": (20, 150, 0, 15)}, "rollout_schedule"),
        ({"model_holdout_ratio": 1.0}, "model_holdout_ratio"),
    ],
)
def test_validate_rejects(changes: dict, message: str) -> None:
    config = dataclasses.replace(USBPOConfig(), **changes)
    with pytest.raises(UsageError, match=message):
        config.validate()


def test_validate_accepts_boundaries() -> None:
    dataclasses.replace(USBPOConfig(), num_elites=7, real_ratio=0.0).validate()
    dataclasses.replace(USBPOConfig(), real_ratio=1.0, gamma=1.0, tau=1.0).validate()
    for terms in ("both", "shift", "bias"):
        dataclasses.replace(USBPOConfig(), phase2_terms=terms).validate()


def test_resolve_config_validates_overrides() -> None:
    with pytest.raises(UsageError, match="num_elites"):
        resolve_config(USBPOConfig, "Hopper", "paper", {"num_elites": 9})
    with pytest.raises(UsageError, match="real_ratio"):
        resolve_config(DynaConfig, "Hopper", "tiny", {"real_ratio": -0.5})
    with pytest.raises(UsageError, match="phase2_terms"):
        resolve_config(USBPOConfig, "Hopper", "tiny", {"phase2_terms": "neither"})


def test_sac_validation_ignores_model_fields() -> None:
    # a SAC config has no model settings to check, and its own bad values are still caught
    SACConfig().validate()
    with pytest.raises(UsageError, match="epoch_length"):
        dataclasses.replace(SACConfig(), epoch_length=0).validate()
