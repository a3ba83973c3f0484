"""Freed memory kept for reuse (usbpo_cli/util/allocator.py): when it is set, what it does to
page faults, and that a bad choice is refused before anything is written."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import usbpo_inproc  # tests/ is on sys.path

from usbpo_cli.errors import UsageError
from usbpo_cli.util import allocator


@pytest.mark.parametrize(
    ("environ", "libc", "plan"),
    [
        ({}, "glibc", "keep"),
        ({allocator.KEEP_FREED_MEMORY: "1"}, "glibc", "keep"),
        ({allocator.KEEP_FREED_MEMORY: "0"}, "glibc", "off"),
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, "glibc", "user"),
        ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "glibc", "user"),
        ({}, "", "not glibc"),  # musl, macOS: nothing to set
    ],
)
def test_when_freed_memory_is_kept(environ: dict, libc: str, plan: str) -> None:
    assert allocator.allocator_plan(environ, libc) == plan


def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(UsageError, match="USBPO_KEEP_FREED_MEMORY='yes'"):
        allocator.allocator_plan({allocator.KEEP_FREED_MEMORY: "yes"}, "glibc")


# Five seeds' SAC updates at the paper preset's sizes (activations of 1.3-2.6 MB), each
# update's page faults counted: first as glibc's malloc serves them by default, then with
# freed memory kept. Medians, as an update now and then may still grow the heap.
CHILD = """
import resource, statistics
import torch
from usbpo_cli.agents.buffers import Batch
from usbpo_cli.agents.sac import SAC
from usbpo_cli.util import allocator

torch.set_num_threads(1)
seeds, n, obs, act = 5, 256, 11, 3
g = torch.Generator().manual_seed(0)
sac = SAC(obs, act, -torch.ones(act), torch.ones(act),
          generators=[torch.Generator().manual_seed(s) for s in range(seeds)])
batch = Batch(torch.randn(seeds, n, obs, generator=g), torch.rand(seeds, n, act, generator=g),
              torch.randn(seeds, n, generator=g), torch.randn(seeds, n, obs, generator=g),
              torch.zeros(seeds, n))

def faults(updates):
    counts = []
    for _ in range(updates):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        sac.update(batch)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(counts)

faults(5)
untouched = faults(20)
plan = allocator.keep_freed_memory()
faults(10)
print(plan, untouched, faults(20))
"""


def test_kept_memory_is_reused_without_page_faults() -> None:
    """Without the setting a five-seed update faults on hundreds of fresh pages (measured
    450-1,250); with it, the typical update touches none."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env={
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MALLOC_") and k != allocator.KEEP_FREED_MEMORY
        },
    ).stdout.split()
    plan, untouched, kept = out[-3], float(out[-2]), float(out[-1])
    if platform.libc_ver()[0] != "glibc":  # nothing to set, nothing to measure
        assert plan == "not glibc"
        return
    assert plan == "keep"
    assert untouched > 100, untouched
    assert kept <= 2, kept


def test_a_bad_choice_is_refused_before_a_run_writes_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(allocator.KEEP_FREED_MEMORY, "yes")
    result = usbpo_inproc(
        "train", "--env", "InvertedPendulum-v4", "--algo", "sac", "--steps", "10", cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "USBPO_KEEP_FREED_MEMORY='yes'" in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []
