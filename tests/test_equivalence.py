"""Same seed, same CSV: tiny runs of every algorithm must reproduce the progress.csv rows
recorded from main before the layered redesign (issue 14), so moving code between modules,
splitting classes or moving random streams into per-agent generators cannot change a result
unnoticed.

The recorded files are in `tests/data/equivalence/<algo>.csv`; `python
tests/test_equivalence.py --record` rewrites them (do that only for a change that is meant to
alter results, and say so in the commit). Timing columns (`wall_time_s`, `t_*`) are dropped.
Values are compared to 1e-5 relative rather than bit for bit: a CPU with other vector units
runs other matrix kernels, whose last bits differ (the rows were recorded on an AVX2-only AMD
EPYC, one torch thread).
"""

from __future__ import annotations

import csv
import math
import sys
import tempfile
from pathlib import Path

import pytest
from cli_helpers import usbpo  # tests/ is on sys.path

ALGOS = ("usbpo", "mbpo", "cmlo", "pdml", "sac", "td3", "ppo", "alm")
RECORDED = Path(__file__).parent / "data" / "equivalence"
ENV, STEPS, SEED = "InvertedPendulum-v4", 300, 3


def tiny_run_rows(algo: str, folder: Path) -> list[dict[str, str]]:
    """progress.csv of a tiny run of `algo`, without its timing columns."""
    out = folder / algo
    args = ["train", "--env", ENV, "--algo", algo, "--seed", str(SEED), "--steps", str(STEPS)]
    result = usbpo(*args, "--preset", "tiny", "--quiet", "--out", str(out), cwd=folder)
    assert result.returncode == 0, result.stderr
    with open(out / "progress.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {k: v for k, v in row.items() if k != "wall_time_s" and not k.startswith("t_")}
        for row in rows
    ]


def read_recorded(algo: str) -> list[dict[str, str]]:
    with open(RECORDED / f"{algo}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def same_value(recorded: str, now: str) -> bool:
    if recorded == now:
        return True
    try:
        a, b = float(recorded), float(now)
    except ValueError:
        return False
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-8)


@pytest.mark.parametrize("algo", ALGOS)
def test_tiny_run_reproduces_recorded_csv(algo: str, tmp_path: Path) -> None:
    recorded, now = read_recorded(algo), tiny_run_rows(algo, tmp_path)
    assert len(recorded) >= 2, "a recording needs rows after learning starts"
    assert [list(r) for r in now] == [list(r) for r in recorded], "columns differ"
    assert len(now) == len(recorded)
    for index, (old, new) in enumerate(zip(recorded, now, strict=True)):
        differ = {k: (old[k], new[k]) for k in old if not same_value(old[k], new[k])}
        assert not differ, f"{algo} row {index}: {differ}"


def record() -> None:
    RECORDED.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for algo in ALGOS:
            rows = tiny_run_rows(algo, Path(tmp))
            with open(RECORDED / f"{algo}.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            print(f"{algo}: {len(rows)} rows")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_equivalence.py --record")
    record()
