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


def no_malloc_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither USBPO_KEEP_FREED_MEMORY nor glibc's own malloc variables set."""
    for name in (allocator.KEEP_FREED_MEMORY, *allocator.GLIBC_SETTINGS):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("answers", "plan"),
    [((1, 1), "keep"), ((0, 1), "refused by mallopt"), ((1, 0), "refused by mallopt")],
)
def test_the_thresholds_asked_of_glibc_and_its_answer(
    monkeypatch: pytest.MonkeyPatch, answers: tuple[int, int], plan: str
) -> None:
    """mallopt(M_MMAP_THRESHOLD = -3, 32 MiB) and mallopt(M_TRIM_THRESHOLD = -1, 1 GiB), as
    glibc's malloc.h numbers them; mallopt answers 1 when it took a value. Applied once: a
    second call reports the first outcome and asks nothing."""
    asked = []
    reply = iter(answers)

    class FakeLibc:
        def mallopt(self, parameter: int, value: int) -> int:
            asked.append((parameter, value))
            return next(reply)

    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: FakeLibc())
    no_malloc_settings(monkeypatch)
    assert allocator.keep_freed_memory() == plan
    assert asked == [(-3, 32 * 1024 * 1024), (-1, 1024**3)]
    assert allocator.keep_freed_memory() == plan and len(asked) == 2


def test_nothing_is_asked_of_malloc_when_it_is_not_to_be_touched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_libc(name):  # noqa: ANN001, ANN202
        raise AssertionError("malloc was touched")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_libc)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    for environ, plan in (
        ({allocator.KEEP_FREED_MEMORY: "0"}, "off"),
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, "user"),
    ):
        monkeypatch.setattr(allocator, "_applied", None)
        no_malloc_settings(monkeypatch)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        assert allocator.keep_freed_memory() == plan
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv(allocator.KEEP_FREED_MEMORY, "yes")
    with pytest.raises(UsageError):
        allocator.check_allocator()
