"""Reading runs back and summarising them: hand-made run folders with known values, so every
mean, std, IQM, CI and probability of improvement is checked against a number worked out by hand,
and every malformed input gives a one-line UsageError that names the file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from usbpo_cli.errors import UsageError
from usbpo_cli.experiments import aggregate

ENVS = {"Hopper-v4": 0.0, "Walker2d-v4": 1000.0}  # env -> offset added to every return
LABELS = {"usbpo": 100.0, "mbpo": 50.0, "sac": 10.0}  # label -> return gained per evaluation
SEEDS = 5
EVALS = 4
STEP = 1000
HEADER = "env_step,epoch,eval_return_mean,eval_return_std,train_return,wall_time_s,delta,t_env"


def eval_return(env: str, label: str, seed: int, i: int) -> float:
    """Return at the i-th evaluation (1-based): linear in i, shifted by 10 per seed."""
    return ENVS.get(env, 0.0) + LABELS.get(label, 1.0) * i + 10.0 * seed


def write_run(root: Path, env: str, label: str, seed: int, lines: list[str] | None = None) -> Path:
    """A run folder as `usbpo train` leaves it (only the columns the tests need)."""
    folder = root / "exp" / env / label / f"seed{seed}"
    folder.mkdir(parents=True)
    config = {"algo": label, "env_id": env, "seed": seed, "steps": EVALS * STEP, "config": {}}
    (folder / "config.json").write_text(json.dumps(config))
    if lines is None:
        lines = [HEADER]
        for i in range(1, EVALS + 1):
            value = eval_return(env, label, seed, i)
            lines.append(f"{i * STEP},{i},{value!r},1.0,{value - 1!r},{i * 0.5},,0.01")
    (folder / "progress.csv").write_text("\n".join(lines) + "\n")
    return folder / "progress.csv"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 envs x 3 labels x 5 seeds x 4 evaluations."""
    base = tmp_path_factory.mktemp("runs")
    for env in ENVS:
        for label in LABELS:
            for seed in range(SEEDS):
                write_run(base, env, label, seed)
    return base


@pytest.fixture(scope="module")
def runs(root: Path) -> pd.DataFrame:
    return aggregate.load_runs(root)


# ----------------------------------------------------------------------------- loading


def test_load_runs_identifies_every_run(runs: pd.DataFrame) -> None:
    assert len(runs) == len(ENVS) * len(LABELS) * SEEDS * EVALS
    assert set(runs["env"]) == set(ENVS)
    assert set(runs["label"]) == set(LABELS)
    assert sorted(runs["seed"].unique()) == list(range(SEEDS))
    assert runs["env_step"].dtype == np.int64
    assert runs["delta"].isna().all()  # empty cells are NaN, not errors
    row = runs[(runs["env"] == "Walker2d-v4") & (runs["label"] == "mbpo") & (runs["seed"] == 3)]
    assert row["eval_return_mean"].tolist() == [
        eval_return("Walker2d-v4", "mbpo", 3, i) for i in (1, 2, 3, 4)
    ]


def test_identity_falls_back_to_config_json(tmp_path: Path) -> None:
    folder = tmp_path / "my-run"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"algo": "usbpo", "env_id": "Hopper-v4", "seed": 7})
    )
    (folder / "progress.csv").write_text(f"{HEADER}\n1000,1,5.0,0,,,,\n")
    runs = aggregate.load_runs(tmp_path)
    assert runs[["env", "label", "seed"]].iloc[0].tolist() == ["Hopper-v4", "usbpo", 7]


def test_folder_names_take_precedence_and_env_id_comes_from_config(tmp_path: Path) -> None:
    path = write_run(tmp_path, "hopper", "usbpo-lr3e-4", 2)
    config = {"algo": "usbpo", "env_id": "Hopper-v4", "seed": 2}
    (path.parent / "config.json").write_text(json.dumps(config))
    runs = aggregate.load_runs(tmp_path)
    assert runs[["env", "label", "seed", "env_id"]].iloc[0].tolist() == [
        "hopper",
        "usbpo-lr3e-4",
        2,
        "Hopper-v4",
    ]


# ----------------------------------------------------------------------------- per-seed scores


def test_final_and_auc_per_seed(runs: pd.DataFrame) -> None:
    scores = aggregate.final_and_auc(runs)
    assert len(scores) == len(ENVS) * len(LABELS) * SEEDS
    one = scores[
        (scores["env"] == "Hopper-v4") & (scores["label"] == "sac") & (scores["seed"] == 4)
    ]
    assert one["final"].item() == pytest.approx(10 * 4 + 40)
    assert one["auc"].item() == pytest.approx(10 * 2.5 + 40)  # mean of i = 1..4 is 2.5


def test_summary_table_known_mean_std_iqm(runs: pd.DataFrame) -> None:
    for metric, factor in (("final", 4.0), ("auc", 2.5)):
        table = aggregate.summary_table(runs, metric, n_resamples=500)
        assert list(table.columns) == [
            "env",
            "label",
            "n",
            "mean",
            "std",
            "iqm",
            "ci_low",
            "ci_high",
        ]
        assert len(table) == len(ENVS) * len(LABELS)
        row = table[(table["env"] == "Walker2d-v4") & (table["label"] == "usbpo")].iloc[0]
        expected = 1000 + 100 * factor + 20  # seeds add 0, 10, ..., 40: mean 20
        assert row["n"] == SEEDS
        assert row["mean"] == pytest.approx(expected)
        assert row["std"] == pytest.approx(10 * np.sqrt(2.5))  # sample std of 0, 10, ..., 40
        assert row["iqm"] == pytest.approx(expected)  # middle three of a symmetric set
        assert row["ci_low"] <= row["iqm"] <= row["ci_high"]


def test_summary_table_rejects_unknown_metric(runs: pd.DataFrame) -> None:
    with pytest.raises(UsageError, match="final, auc"):
        aggregate.summary_table(runs, "median")


def test_ci_orders_a_clearly_better_label(runs: pd.DataFrame) -> None:
    table = aggregate.summary_table(runs, "final", n_resamples=500).set_index(["env", "label"])
    for env in ENVS:
        assert table.loc[(env, "usbpo"), "ci_low"] > table.loc[(env, "mbpo"), "ci_high"]
        assert table.loc[(env, "mbpo"), "ci_low"] > table.loc[(env, "sac"), "ci_high"]


def test_tidy_results_columns_and_rows(runs: pd.DataFrame) -> None:
    tidy = aggregate.tidy_results(runs)
    assert list(tidy.columns[:4]) == ["env", "algo", "seed", "env_step"]
    assert list(tidy.columns[4:]) == HEADER.split(",")[1:]  # metrics in the CSV's own order
    assert len(tidy) == len(ENVS) * len(LABELS) * SEEDS * EVALS
    assert set(tidy["algo"]) == set(LABELS)


# ----------------------------------------------------------------------------- statistics


def test_iqm_hand_value() -> None:
    # sorted: -50, 1, 2, 3, 4, 5, 6, 100; trim 2 from each end -> mean of 2, 3, 4, 5
    assert aggregate.iqm([100.0, 1.0, 3.0, 4.0, 5.0, 6.0, -50.0, 2.0]) == pytest.approx(3.5)
    assert aggregate.iqm(np.arange(8.0)) == stats.trim_mean(np.arange(8.0), 0.25)


def normal_scores(n: int) -> np.ndarray:
    """n scores spread like a standard normal, deterministically (quantiles, no RNG)."""
    return stats.norm.ppf((np.arange(n) + 0.5) / n)


def test_bootstrap_ci_contains_iqm_and_narrows_with_more_seeds() -> None:
    widths = []
    for n in (5, 50):
        scores = normal_scores(n)
        low, high = aggregate.bootstrap_ci([scores], aggregate.iqm, n_resamples=1000)
        assert low <= aggregate.iqm(scores) <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_bootstrap_ci_is_stratified_and_reproducible() -> None:
    # Two tasks on very different scales: a stratified resample always holds 3 of each, so the
    # pooled mean stays between the tasks; the interval is the same for the same seed.
    tasks = [np.array([0.0, 1.0, 2.0]), np.array([100.0, 101.0, 102.0])]
    low, high = aggregate.bootstrap_ci(tasks, np.mean, n_resamples=500, seed=3)
    assert 49.0 < low <= 51.0 <= high < 53.0
    assert aggregate.bootstrap_ci(tasks, np.mean, n_resamples=500, seed=3) == (low, high)


def test_bootstrap_ci_edge_cases() -> None:
    assert all(np.isnan(aggregate.bootstrap_ci([np.array([1.0])], aggregate.iqm)))
    assert aggregate.bootstrap_ci([np.full(4, 2.0)], aggregate.iqm) == (2.0, 2.0)


def test_probability_of_improvement() -> None:
    assert aggregate.probability_of_improvement(np.array([5.0, 6, 7]), np.array([1.0, 2])) == 1.0
    assert aggregate.probability_of_improvement(np.array([1.0, 2]), np.array([5.0, 6])) == 0.0
    same = np.array([1.0, 2.0, 3.0])
    assert aggregate.probability_of_improvement(same, same) == 0.5
    # pairs (x, y): (1,0) >, (1,1) =, (1,2) <, (3,0) >, (3,1) >, (3,2) > -> (4 + 0.5) / 6
    x, y = np.array([1.0, 3.0]), np.array([0.0, 1.0, 2.0])
    assert aggregate.probability_of_improvement(x, y) == pytest.approx(4.5 / 6)
    assert aggregate.probability_of_improvement(x, y) == pytest.approx(
        stats.mannwhitneyu(x, y).statistic / (len(x) * len(y))
    )


def test_probability_of_improvement_ci_across_envs() -> None:
    x = [np.array([1.0, 3.0, 2.0]), np.array([0.0, 5.0, 1.0])]
    y = [np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])]
    estimate, low, high = aggregate.probability_of_improvement_ci(x, y, n_resamples=500)
    expected = np.mean([aggregate.probability_of_improvement(a, b) for a, b in zip(x, y)])
    assert estimate == pytest.approx(expected)
    assert 0.0 <= low <= estimate <= high <= 1.0


# ----------------------------------------------------------------------------- errors


def test_missing_or_file_root(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        aggregate.load_runs(tmp_path / "nope")
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        aggregate.load_runs(file)
    with pytest.raises(UsageError, match="no progress.csv found"):
        aggregate.load_runs(tmp_path)


GOOD_ROW = "1000,1,5.0,0,4,0.5,,0.01"
BAD_FILES = {
    "empty": ([""], "is empty"),
    "header only": ([HEADER], "no evaluation rows"),
    "truncated mid-row": ([HEADER, GOOD_ROW, "2000,2,6."], "truncated or malformed row at line 3"),
    "missing columns": (["env_step,epoch", "1000,1"], "missing required column.*eval_return_mean"),
    "non-numeric step": ([HEADER, "abc,1,5.0,0,4,0.5,,"], "env_step must be a finite number"),
    "non-numeric return": ([HEADER, "1000,1,oops,0,4,0.5,,"], "eval_return_mean must be"),
    "empty return": ([HEADER, "1000,1,,0,4,0.5,,"], "eval_return_mean must be"),
    "bad quoting": ([HEADER, '1000,1,"5.0"x,0,4,0.5,,'], "unparsable CSV"),
    "step goes back": ([HEADER, GOOD_ROW, GOOD_ROW], "env_step does not increase at line 3"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_csv_names_the_file(tmp_path: Path, case: str) -> None:
    lines, message = BAD_FILES[case]
    path = write_run(tmp_path, "Hopper-v4", "usbpo", 0, lines)
    if case == "empty":
        path.write_text("")
    with pytest.raises(UsageError, match=message) as error:
        aggregate.load_runs(tmp_path)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_binary_file_names_the_file(tmp_path: Path) -> None:
    path = write_run(tmp_path, "Hopper-v4", "usbpo", 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(UsageError, match="unparsable") as error:
        aggregate.load_runs(tmp_path)
    assert str(path) in str(error.value)


def test_unknown_layout_without_config_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "loose"
    folder.mkdir()
    (folder / "progress.csv").write_text(f"{HEADER}\n{GOOD_ROW}\n")
    with pytest.raises(UsageError, match="cannot tell env, label and seed") as error:
        aggregate.load_runs(tmp_path)
    assert str(folder / "progress.csv") in str(error.value)


def test_two_runs_with_one_identity_are_refused(tmp_path: Path) -> None:
    write_run(tmp_path / "a", "Hopper-v4", "usbpo", 0)
    write_run(tmp_path / "b", "Hopper-v4", "usbpo", 0)
    with pytest.raises(UsageError, match="two runs claim env Hopper-v4, label usbpo, seed 0"):
        aggregate.load_runs(tmp_path)


# ----------------------------------------------------------------------------- found by mutation
# Each test below failed with a planted bug that the tests above let through.


def test_a_malformed_first_row_or_one_bad_value_among_good_ones_is_refused(tmp_path: Path) -> None:
    path = write_run(tmp_path / "a", "Hopper-v4", "usbpo", 0, [HEADER, "1000,1,5.0", GOOD_ROW])
    with pytest.raises(UsageError, match="malformed row at line 2"):
        aggregate.load_progress([path])
    rows = [HEADER, GOOD_ROW, "2000,2,inf,0,4,1.0,,0.01", "3000,3,7.0,0,4,1.5,,0.01"]
    path = write_run(tmp_path / "b", "Hopper-v4", "usbpo", 0, rows)
    with pytest.raises(UsageError, match=r"eval_return_mean must be a finite number.*line 3"):
        aggregate.load_progress([path])


def test_steps_that_rise_by_one_are_read_and_a_later_fall_is_named_at_its_line(
    tmp_path: Path,
) -> None:
    rows = [HEADER, "1,1,5.0,0,4,0.5,,0.01", "2,2,6.0,0,4,1.0,,0.01"]
    frame = aggregate.load_progress([write_run(tmp_path / "a", "Hopper-v4", "usbpo", 0, rows)])
    assert frame["env_step"].tolist() == [1, 2] and frame["env_step"].dtype == np.int64
    for folder, steps in (("b", (100, 200, 300, 250, 400)), ("c", (1, 2, 3, 2))):
        rows = [HEADER] + [f"{s},{i},5.0,0,4,0.5,,0.01" for i, s in enumerate(steps)]
        path = write_run(tmp_path / folder, "Hopper-v4", "usbpo", 0, rows)
        with pytest.raises(UsageError, match="does not increase at line 5"):  # header: line 1
            aggregate.load_progress([path])


def test_odd_steps_are_integers_and_a_fractional_step_is_kept_as_written(tmp_path: Path) -> None:
    rows = [HEADER, "1001,1,5.0,0,4,0.5,,0.01", "2001,2,6.0,0,4,1.0,,0.01"]
    frame = aggregate.load_progress([write_run(tmp_path / "a", "Hopper-v4", "usbpo", 0, rows)])
    assert frame["env_step"].dtype == np.int64
    rows = [HEADER, "1000,1,5.0,0,4,0.5,,0.01", "1500.5,2,6.0,0,4,1.0,,0.01"]
    frame = aggregate.load_progress([write_run(tmp_path / "b", "Hopper-v4", "usbpo", 0, rows)])
    assert frame["env_step"].tolist() == [1000.0, 1500.5]


def test_an_optional_column_with_some_text_is_kept_as_text(tmp_path: Path) -> None:
    rows = [HEADER + ",note", GOOD_ROW + ",warm", "2000,2,6.0,0,4,1.0,,0.01,1.5"]
    frame = aggregate.load_progress([write_run(tmp_path, "Hopper-v4", "usbpo", 0, rows)])
    assert frame["note"].tolist() == ["warm", "1.5"]


def test_probability_of_improvement_needs_scores_on_both_sides_and_as_many_tasks() -> None:
    for x, y in (([], [1.0]), ([1.0], [])):
        with pytest.raises(ValueError, match="at least one score"):
            aggregate.probability_of_improvement(np.array(x), np.array(y))
    one = [np.array([1.0, 2.0])]
    for xs, ys in ((one, one * 2), (one * 2, one), ([], [])):
        with pytest.raises(ValueError, match="same, non-zero number of tasks"):
            aggregate.probability_of_improvement_ci(xs, ys)


def _stratified_bootstrap(tasks: list[np.ndarray], statistic, n: int, seed: int) -> np.ndarray:
    """The percentile bootstrap written out: each task's scores resampled with replacement on
    their own, `statistic` of every resample."""
    rng = np.random.default_rng(seed)
    return np.array(
        [
            statistic([rng.choice(task, size=len(task), replace=True) for task in tasks])
            for _ in range(n)
        ]
    )


def test_probability_of_improvement_ci_agrees_with_a_bootstrap_written_here() -> None:
    x = [np.array([1.0, 3.0, 2.0, 4.0]), np.array([0.0, 5.0, 1.0])]
    y = [np.array([0.0, 1.0, 2.0, 2.5]), np.array([1.0, 2.0, 3.0, 0.5])]

    def average(tasks: list[np.ndarray]) -> float:
        half = len(tasks) // 2
        pairs = zip(tasks[:half], tasks[half:])
        return float(np.mean([aggregate.probability_of_improvement(a, b) for a, b in pairs]))

    estimate, low, high = aggregate.probability_of_improvement_ci(x, y, n_resamples=4000)
    draws = _stratified_bootstrap(x + y, average, 4000, seed=7)
    expected_low, expected_high = np.percentile(draws, [2.5, 97.5])
    assert estimate == pytest.approx(average(x + y))
    assert low < estimate < high
    assert low == pytest.approx(expected_low, abs=0.04)
    assert high == pytest.approx(expected_high, abs=0.04)
    # two scores a task are enough for an interval; one is not
    two = aggregate.probability_of_improvement_ci([x[0][:2]], [y[0][:2]], n_resamples=200)
    assert np.isfinite(two[1]) and np.isfinite(two[2])
    lone = aggregate.probability_of_improvement_ci([x[0][:1]], [y[0]], n_resamples=200)
    assert np.isnan(lone[1]) and np.isnan(lone[2])


def test_constant_scores_give_a_point_interval_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a summary prints no warning a user must puzzle over
        assert aggregate.bootstrap_ci([np.full(3, 2.0), np.full(2, 4.0)], np.mean) == (2.8, 2.8)
        ones, zeros = [np.ones(3)], [np.zeros(2)]
        assert aggregate.probability_of_improvement_ci(ones, zeros) == (1.0, 1.0, 1.0)


def test_summary_says_how_likely_the_reference_beats_each_algo_by_hand(tmp_path: Path) -> None:
    finals = {"usbpo": [3.0, 5.0, 7.0], "mbpo": [1.0, 4.0, 6.0], "sac": [8.0, 9.0, 0.0]}
    for label, values in finals.items():
        for seed, value in enumerate(values):
            rows = [HEADER, f"1000,1,{value - 1},0,4,0.5,,0.01", f"2000,2,{value},0,4,1.0,,0.01"]
            write_run(tmp_path, "Hopper-v4", label, seed, rows)
    summary = aggregate.grid_summary(aggregate.load_runs(tmp_path), n_resamples=200)
    p = dict(zip(summary["algo"], summary["p_usbpo_better"]))
    # usbpo 3, 5, 7 against mbpo 1, 4, 6: 3 > 1; 5 > 1, 4; 7 > all three -> 6 of 9 pairs
    assert p["mbpo"] == pytest.approx(6 / 9)
    # against sac 8, 9, 0: each usbpo score beats only the 0 -> 3 of 9 pairs
    assert p["sac"] == pytest.approx(3 / 9)
    assert np.isnan(p["usbpo"])
