"""ReplayBuffer's ring, against what a ring buffer of capacity C must hold after a stream of
transitions 1, 2, ..., T (numbered from 1, so a never-written, zero-filled slot reads as 0):

- it stores exactly the newest min(T, C) transitions: len = min(T, C), total_added = T;
- `ordered()` lists them oldest first, every field of a row from the same transition;
- the next write goes to `pointer`: the slot after the newest row, which once the ring is full
  holds the oldest row (the one the next add overwrites);
- `recent_indices(n, w)` only points at the newest min(w, len) rows, and reaches each of them;
- `sample` only returns stored rows, never a slot that was never written.

tests/test_buffers.py checks fixed cases; here a hand trace through `add` wraps and a seam-
crossing `add_batch`, and a long mixed stream of `add` and `add_batch` (empty batches, batches
of exactly C, batches over C) is checked after every operation against the newest-min(T, C)
list, including a state_dict round trip of a wrapped ring.
"""

from __future__ import annotations

import random

import torch

from usbpo_cli.agents.buffers import ReplayBuffer

OBS_DIM, ACT_DIM = 2, 1


def fields(ids: list[int]) -> tuple[torch.Tensor, ...]:
    """Transitions with these numbers; every field encodes the number k."""
    k = torch.tensor(ids, dtype=torch.float32)
    obs = torch.stack([k, -k], dim=-1)
    return obs, (k + 0.5).unsqueeze(-1), 10.0 * k, obs + 1000.0, (k % 3 == 0).float()


def add_one(buffer: ReplayBuffer, k: int) -> None:
    obs, act, rew, next_obs, done = fields([k])
    buffer.add(obs[0], act[0], float(rew[0]), next_obs[0], float(done[0]))


def numbers(obs: torch.Tensor) -> list[int]:
    return [int(v) for v in obs[:, 0].tolist()]


def assert_rows_whole(buffer: ReplayBuffer, idx: torch.Tensor) -> None:
    """Every field of the gathered rows comes from one and the same transition."""
    expected = fields(numbers(buffer.obs[idx]))
    for got, want in zip(buffer.gather(idx), expected):
        assert torch.equal(got, want)


def test_hand_trace_of_add_wraps_and_a_seam_crossing_batch() -> None:
    """Capacity 4. Adds 1..6 one at a time: slots (5, 6, 3, 4), pointer 2 (slot of 3, the
    oldest), ordered 3, 4, 5, 6. Then a batch 7..9 starting at slot 2 crosses the seam: 7, 8 go
    to slots 2, 3 and 9 to slot 0: slots (9, 6, 7, 8), pointer 1, ordered 6, 7, 8, 9. Then one
    add (10) goes to slot 1."""
    buffer = ReplayBuffer(4, OBS_DIM, ACT_DIM, "cpu")
    trace = [  # after adding k: (len, total_added, pointer, slots' numbers, ordered numbers)
        (1, 1, 1, [1, 0, 0, 0], [1]),
        (2, 2, 2, [1, 2, 0, 0], [1, 2]),
        (3, 3, 3, [1, 2, 3, 0], [1, 2, 3]),
        (4, 4, 0, [1, 2, 3, 4], [1, 2, 3, 4]),
        (4, 5, 1, [5, 2, 3, 4], [2, 3, 4, 5]),
        (4, 6, 2, [5, 6, 3, 4], [3, 4, 5, 6]),
    ]
    for k, (size, total, pointer, slots, ordered) in enumerate(trace, start=1):
        add_one(buffer, k)
        assert (len(buffer), buffer.total_added, buffer.pointer) == (size, total, pointer)
        assert numbers(buffer.obs) == slots
        assert numbers(buffer.ordered().obs) == ordered
    buffer.add_batch(*fields([7, 8, 9]))
    assert (len(buffer), buffer.total_added, buffer.pointer) == (4, 9, 1)
    assert numbers(buffer.obs) == [9, 6, 7, 8]
    ordered = buffer.ordered()
    assert numbers(ordered.obs) == [6, 7, 8, 9]
    for got, want in zip(ordered, fields([6, 7, 8, 9])):
        assert torch.equal(got, want)
    add_one(buffer, 10)
    assert (len(buffer), buffer.total_added, buffer.pointer) == (4, 10, 2)
    assert numbers(buffer.obs) == [9, 10, 7, 8]
    assert numbers(buffer.ordered().obs) == [7, 8, 9, 10]


def test_recent_indices_right_after_the_ring_closes() -> None:
    """Capacity 5 filled by exactly 5 adds, then 5 more: the pointer is back at slot 0, so the
    newest row sits in the last slot. A window of 1 is that newest row (10) only; a window of 3
    is 8, 9, 10, in slots 2, 3, 4; a window of 5 (or more) is all of 6..10."""
    torch.manual_seed(0)
    buffer = ReplayBuffer(5, OBS_DIM, ACT_DIM, "cpu")
    for k in range(1, 11):
        add_one(buffer, k)
    assert buffer.pointer == 0
    newest = buffer.recent_indices(50, window=1)
    assert newest.tolist() == [4] * 50
    assert numbers(buffer.obs[newest]) == [10] * 50
    idx = buffer.recent_indices(600, window=3)
    assert set(idx.tolist()) == {2, 3, 4}
    assert set(numbers(buffer.obs[idx])) == {8, 9, 10}
    for window in (5, 6, 100):
        assert set(numbers(buffer.obs[buffer.recent_indices(600, window)])) == set(range(6, 11))


def test_a_long_mixed_stream_matches_the_newest_rows_after_every_operation() -> None:
    """After each of 120 operations (3 adds, then random ones: an add, or a batch of 0, 1,
    C - 1, C, C + 1, 2C + 3 or a random size) on a 7-slot ring, against the list of all numbers
    added so far: len, total_added, the ordered rows (newest min(T, C), oldest first, fields
    whole), the pointer (= len before the ring is full, else the slot of the oldest row), recent
    windows of 1, 3 and C + 2 rows, and samples (stored rows only, no never-written slot)."""
    rng = random.Random(0)
    torch.manual_seed(0)
    capacity = 7
    buffer = ReplayBuffer(capacity, OBS_DIM, ACT_DIM, "cpu")
    stream: list[int] = []
    wrapped_batches = 0
    for step in range(120):
        if step < 3 or rng.random() < 0.4:  # single adds first: a partly filled ring
            stream.append(len(stream) + 1)
            add_one(buffer, stream[-1])
        else:
            n = rng.choice([0, 1, capacity - 1, capacity, capacity + 1, 2 * capacity + 3])
            n = rng.randint(0, 2 * capacity) if rng.random() < 0.3 else n
            batch = list(range(len(stream) + 1, len(stream) + n + 1))
            wrapped_batches += buffer.pointer + min(n, capacity) > capacity
            stream.extend(batch)
            buffer.add_batch(*fields(batch))
        kept = stream[-capacity:]
        assert len(buffer) == len(kept)
        assert buffer.total_added == len(stream)
        ordered = buffer.ordered()
        assert numbers(ordered.obs) == kept
        for got, want in zip(ordered, fields(kept)):
            assert torch.equal(got, want)
        if not kept:
            continue
        if len(kept) < capacity:
            assert buffer.pointer == len(kept)
        else:
            assert int(buffer.obs[buffer.pointer, 0]) == kept[0]
        for window in (1, 3, capacity + 2):
            idx = buffer.recent_indices(200, window)
            assert set(numbers(buffer.obs[idx])) == set(kept[-window:])
            assert_rows_whole(buffer, idx)
        sample = buffer.sample(200)
        drawn = set(numbers(sample.obs))
        assert drawn <= set(kept) and 0 not in drawn
        assert (sample.act >= 1.5).all()  # a zero-filled slot would have act 0
    assert len(stream) > 10 * capacity and wrapped_batches >= 5
    sample = buffer.sample_indices(2000)
    assert set(sample.tolist()) == set(range(capacity))  # every slot of a full ring is drawn


def test_state_dict_round_trip_of_a_wrapped_ring_continues_the_same_ring() -> None:
    """A ring of capacity 6 fed 1..11 as one oversized batch (6..11 in slots 0..5, pointer 0),
    then 12..15 one by one (slots 12, 13, 14, 15, 10, 11, pointer 4), saved and restored, holds
    the same rows in the same order and writes the next rows (16, 17 as one batch) to the same
    slots 4, 5 as the original: both then order 12..17."""
    buffer = ReplayBuffer(6, OBS_DIM, ACT_DIM, "cpu")
    buffer.add_batch(*fields(list(range(1, 12))))
    for k in range(12, 16):
        add_one(buffer, k)
    assert numbers(buffer.obs) == [12, 13, 14, 15, 10, 11]
    assert (buffer.pointer, buffer.total_added) == (4, 15)
    restored = ReplayBuffer.from_state_dict(buffer.state_dict(), "cpu")
    assert (restored.pointer, len(restored), restored.total_added) == (4, 6, 15)
    assert numbers(restored.ordered().obs) == list(range(10, 16))
    for ring in (buffer, restored):
        ring.add_batch(*fields([16, 17]))
        assert numbers(ring.obs) == [12, 13, 14, 15, 16, 17]
        assert numbers(ring.ordered().obs) == list(range(12, 18))
