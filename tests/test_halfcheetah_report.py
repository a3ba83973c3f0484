"""benchmarks/halfcheetah_report.py prints the numbers RESULTS.md's HalfCheetah section quotes:
checked on hand-made run folders and a hand-made published curve, against values worked out
by hand (means, a linear interpolation, a probability of improvement over all pairs, phase
sums in hours)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = "HalfCheetah-v4"


@pytest.fixture(scope="module")
def report():  # noqa: ANN201 (a module)
    spec = importlib.util.spec_from_file_location(
        "halfcheetah_report", ROOT / "benchmarks" / "halfcheetah_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(root: Path, algo: str, seed: int, returns: list[float]) -> None:
    """A run evaluated every 5000 steps after 5000 random ones, each row 1800 s of policy
    updates and 360 s of phase 1; its wall time is the sum of the rows' 2160 s."""
    out = root / ENV / algo / f"seed{seed}"
    out.mkdir(parents=True)
    config = {"algo": algo, "env_id": ENV, "seed": seed, "config": {"initial_steps": 5000}}
    (out / "config.json").write_text(json.dumps(config))
    steps = [5000 * (i + 1) for i in range(len(returns))]
    pd.DataFrame(
        {
            "env_step": steps,
            "eval_return_mean": returns,
            "wall_time_s": [2160.0 * (i + 1) for i in range(len(returns))],
            "t_policy": 1800.0,
            "t_model_phase1": 360.0,
        }
    ).to_csv(out / "progress.csv", index=False)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    runs = tmp_path / "grid"
    # finals: usbpo 10, 20, 30; mbpo 0, 5, 40
    for seed, (mid, final) in enumerate([(1000.0, 10.0), (2000.0, 20.0), (3000.0, 30.0)]):
        write_run(runs, "usbpo", seed, [0.0, mid, 0.0, final])
    for seed, (at10k, final) in enumerate([(1000.0, 0.0), (2000.0, 5.0), (3000.0, 40.0)]):
        write_run(runs, "mbpo", seed, [0.0, at10k, 0.0, final])
    write_run(runs, "sac", 0, [0.0, 7.0, 8.0, 9.0])
    reference = tmp_path / "reference" / "erl_lib"
    (reference / "mbpo").mkdir(parents=True)
    (reference / "sac").mkdir()
    # MBPO: a mean curve 1500 at 9800 steps (band 1000-2000), 3500 at 10500
    rows = [(9800.0, 1000.0, 0), (9800.0, 2000.0, 1), (10500.0, 3000.0, 0), (10500.0, 4000.0, 1)]
    mbpo = pd.DataFrame(rows, columns=["step", "reward", "seed"]).assign(time=0.0)
    mbpo.to_csv(reference / "mbpo" / "HalfCheetah.csv", index=False)
    # SAC: evaluated at 10k and 20k only
    rows = [(10000.0, 100.0, 0), (10000.0, 300.0, 1), (20000.0, 50.0, 0), (20000.0, 70.0, 1)]
    sac = pd.DataFrame(rows, columns=["step", "reward", "seed"]).assign(time=0.0)
    sac.to_csv(reference / "sac" / "HalfCheetah.csv", index=False)
    return runs, tmp_path / "reference"


def row(lines: list[str], start: str) -> list[str]:
    [found] = [line for line in lines if line.startswith(start)]
    return [cell.strip() for cell in found.strip("|").split("|")]


def test_our_curves_are_read_against_the_published_mean_at_the_same_steps(
    report, folders: tuple[Path, Path]
) -> None:
    runs, reference = folders
    lines = report.published(report.load_runs(runs), reference)
    cells = row(lines, "| mbpo | 10000 |")
    # ours: (1000 + 2000 + 3000) / 3; published: nearest point 9800 (mean 1500, band 1000 to
    # 2000), interpolated 1500 + (200 / 700) x 2000 = 2071.4
    assert cells[2:] == ["2000 (1000, 2000, 3000)", "1500 (9800)", "2071", "1000 to 2000"]
    assert row(lines, "| sac | 10000 |")[2:] == ["7 (7)", "200 (10000)", "200", "100 to 300"]
    assert row(lines, "| sac | 15000 |")[3] == "(not evaluated there)"
    assert row(lines, "| sac | 20000 |")[2:] == ["9 (9)", "60 (20000)", "60", "50 to 70"]


def test_summary_gives_the_probability_of_improvement_over_all_seed_pairs(
    report, folders: tuple[Path, Path]
) -> None:
    runs, _ = folders
    lines = report.summary(report.load_runs(runs))
    mbpo = row(lines, "| mbpo |")
    # finals 0, 5, 40: mean 15, std sqrt(((15)^2 + 10^2 + 25^2) / 2) = 21.8
    assert mbpo[1] == "3 (20000, 20000, 20000)" and mbpo[2] == "15 ± 22"
    # USB-PO's 10, 20, 30 beat 0 and 5 and lose to 40: 6 of 9 pairs
    assert mbpo[5].startswith("0.67 [")
    # AUC (mean of the four evaluations): usbpo 252.5, 505, 757.5 against mbpo's 250, 501.25,
    # 760: 252.5 beats one, 505 two, 757.5 two: 5 of 9 pairs
    assert mbpo[6].startswith("0.56 [")
    assert row(lines, "| sac |")[5] == "1.00"  # one SAC seed (9): no interval
    assert row(lines, "| usbpo |")[5:] == ["-", "-"]


def test_wall_time_is_the_last_row_and_each_phase_the_sum_of_its_rows(
    report, folders: tuple[Path, Path]
) -> None:
    runs, _ = folders
    lines = report.wall_times(report.load_runs(runs))
    cells = row(lines, "| mbpo seed1 |")
    # 4 rows: wall 4 x 2160 s = 2.40 h; phase 1 4 x 360 s = 0.40 h; policy 4 x 1800 s = 2.00 h
    assert cells[1:3] == ["20000", "2.40"]
    assert cells[3:9] == ["0.00", "0.40", "0.00", "0.00", "2.00", "0.00"]
    assert cells[9] == "83%"  # 2.00 / 2.40
    # after the 5000 random steps (row at 5000: 2160 s) to the last row (20000: 8640 s):
    # 6480 s over 15000 env steps = 432 s per 1000
    assert cells[10] == "432"


def test_usbpo_is_set_against_mbpo_at_each_learning_step_both_have(
    report, folders: tuple[Path, Path]
) -> None:
    runs, _ = folders
    lines = report.head_to_head(report.load_runs(runs))
    # 5000 is the end of the random exploration: not a learning step
    assert not [line for line in lines if line.startswith("| 5000 |")]
    # 10000: usbpo 1000, 2000, 3000 (mean 2000) against mbpo 1000, 2000, 3000 (mean 2000)
    assert row(lines, "| 10000 |")[1:] == [
        "2000 (1000, 2000, 3000)",
        "2000 (1000, 2000, 3000)",
        "+0",
    ]
    # 20000: usbpo 10, 20, 30 (mean 20) against mbpo 0, 5, 40 (mean 15)
    assert row(lines, "| 20000 |")[1:] == ["20 (10, 20, 30)", "15 (0, 5, 40)", "+5"]


def test_each_mbpo_evaluation_is_placed_below_inside_or_above_the_published_band(
    report, folders: tuple[Path, Path]
) -> None:
    runs, reference = folders
    lines = report.within_band(report.load_runs(runs), reference)
    # Only 10000 lies in [10k, the curve's last step 10500]. The band there, interpolated
    # between 9800 (1000 to 2000) and 10500 (3000 to 4000), 200/700 of the way: 1571 to 2571,
    # mean 2071. The seeds' 1000, 2000, 3000 are below, inside, above.
    assert row(lines, "| 10000 |")[1:] == ["1571 to 2571 (2071)", "1000 v", "2000", "3000 ^"]
    assert not [line for line in lines if line.startswith(("| 5000 |", "| 15000 |"))]
    assert "- seed 0: 0 of 1 evaluations inside the band, 1 below, 0 above" in lines
    assert "- seed 1: 1 of 1 evaluations inside the band, 0 below, 0 above" in lines
    assert "- seed 2: 0 of 1 evaluations inside the band, 0 below, 1 above" in lines
