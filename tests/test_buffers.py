"""ReplayBuffer: ring overwrite, counters, sampling only stored rows, recency windows, resizing."""

from __future__ import annotations

import pytest
import torch

from usbpo_cli.agents.buffers import ReplayBuffer, SeedBuffers

OBS_DIM, ACT_DIM = 3, 2


def rows(start: int, stop: int) -> tuple[torch.Tensor, ...]:
    """Transitions numbered start..stop-1; every field encodes the number, so rows are traceable."""
    ids = torch.arange(start, stop, dtype=torch.float32)
    obs = ids.unsqueeze(-1).repeat(1, OBS_DIM)
    act = (ids + 0.5).unsqueeze(-1).repeat(1, ACT_DIM)
    rew = ids * 10.0
    next_obs = obs + 1000.0
    done = (ids % 2 == 0).float()
    return obs, act, rew, next_obs, done


def add_one_by_one(buffer: ReplayBuffer, start: int, stop: int) -> None:
    obs, act, rew, next_obs, done = rows(start, stop)
    for i in range(stop - start):
        buffer.add(obs[i], act[i], float(rew[i]), next_obs[i], float(done[i]))


def ids_of(obs: torch.Tensor) -> list[int]:
    return [int(v) for v in obs[:, 0].tolist()]


def assert_rows_consistent(buffer: ReplayBuffer, idx: torch.Tensor) -> None:
    """Every field of the gathered rows belongs to the same transition."""
    batch = buffer.gather(idx)
    ids = batch.obs[:, 0]
    assert torch.equal(batch.obs, ids.unsqueeze(-1).repeat(1, OBS_DIM))
    assert torch.equal(batch.act, (ids + 0.5).unsqueeze(-1).repeat(1, ACT_DIM))
    assert torch.equal(batch.rew, ids * 10.0)
    assert torch.equal(batch.next_obs, batch.obs + 1000.0)
    assert torch.equal(batch.done, (ids % 2 == 0).float())


def make(capacity: int) -> ReplayBuffer:
    return ReplayBuffer(capacity, OBS_DIM, ACT_DIM, "cpu")


def test_add_counters_before_and_after_wrap() -> None:
    buffer = make(5)
    assert (buffer.size, buffer.pointer, buffer.total_added, len(buffer)) == (0, 0, 0, 0)
    add_one_by_one(buffer, 0, 3)
    assert (buffer.size, buffer.pointer, buffer.total_added) == (3, 3, 3)
    add_one_by_one(buffer, 3, 5)
    assert (buffer.size, buffer.pointer, buffer.total_added) == (5, 0, 5)
    add_one_by_one(buffer, 5, 12)
    assert (buffer.size, buffer.pointer, buffer.total_added, len(buffer)) == (5, 2, 12, 5)


def test_add_ring_overwrite_keeps_newest() -> None:
    buffer = make(5)
    add_one_by_one(buffer, 0, 12)
    assert sorted(ids_of(buffer.obs)) == [7, 8, 9, 10, 11]
    assert_rows_consistent(buffer, torch.arange(5))
    # slot i holds the newest transition whose number is i modulo the capacity
    assert ids_of(buffer.obs) == [10, 11, 7, 8, 9]


def test_add_batch_ring_overwrite_keeps_newest() -> None:
    buffer = make(6)
    buffer.add_batch(*rows(0, 4))
    assert (buffer.size, buffer.pointer, buffer.total_added) == (4, 4, 4)
    buffer.add_batch(*rows(4, 9))  # wraps: 4, 5 at the end, 6, 7, 8 at the start
    assert (buffer.size, buffer.pointer, buffer.total_added) == (6, 3, 9)
    assert ids_of(buffer.obs) == [6, 7, 8, 3, 4, 5]
    assert_rows_consistent(buffer, torch.arange(6))


def test_add_batch_empty_is_a_no_op() -> None:
    buffer = make(4)
    buffer.add_batch(*rows(0, 0))
    assert (buffer.size, buffer.pointer, buffer.total_added) == (0, 0, 0)


def test_add_batch_larger_than_capacity_keeps_newest() -> None:
    buffer = make(4)
    buffer.add_batch(*rows(0, 2))
    buffer.add_batch(*rows(2, 13))  # 11 rows into a 4-row buffer
    assert buffer.size == 4
    assert buffer.total_added == 13
    assert buffer.pointer == 2  # a full lap of the ring leaves the pointer in place
    assert ids_of(buffer.ordered().obs) == [9, 10, 11, 12]
    assert_rows_consistent(buffer, torch.arange(4))


def test_add_and_add_batch_interleave() -> None:
    buffer = make(5)
    add_one_by_one(buffer, 0, 2)
    buffer.add_batch(*rows(2, 6))
    add_one_by_one(buffer, 6, 8)
    assert (buffer.size, buffer.pointer, buffer.total_added) == (5, 3, 8)
    assert ids_of(buffer.ordered().obs) == [3, 4, 5, 6, 7]


def test_sample_only_returns_stored_rows_before_full() -> None:
    torch.manual_seed(0)
    buffer = make(100)
    buffer.add_batch(*rows(0, 7))
    batch = buffer.sample(500)
    assert batch.obs.shape == (500, OBS_DIM)
    assert batch.act.shape == (500, ACT_DIM)
    assert batch.rew.shape == batch.done.shape == (500,)
    drawn = set(ids_of(batch.obs))
    assert drawn == set(range(7))
    # an empty (zero-filled) slot would read as id 0 too, but with act 0 instead of 0.5
    assert torch.all(batch.act >= 0.5)


def test_sample_only_returns_stored_rows_after_wrap() -> None:
    torch.manual_seed(1)
    buffer = make(8)
    buffer.add_batch(*rows(0, 21))
    idx = buffer.sample_indices(400)
    assert set(ids_of(buffer.gather(idx).obs)) == set(range(13, 21))
    assert_rows_consistent(buffer, idx)


def test_sample_empty_raises() -> None:
    buffer = make(4)
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample(3)
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample_indices(1)


def test_recent_indices_only_last_window() -> None:
    torch.manual_seed(2)
    buffer = make(50)
    buffer.add_batch(*rows(0, 20))
    idx = buffer.recent_indices(400, window=5)
    assert set(ids_of(buffer.gather(idx).obs)) == {15, 16, 17, 18, 19}


def test_recent_indices_across_wraparound() -> None:
    torch.manual_seed(3)
    buffer = make(10)
    buffer.add_batch(*rows(0, 8))
    buffer.add_batch(*rows(8, 13))  # pointer 3: the last 6 rows straddle the ring's end
    assert buffer.pointer == 3
    idx = buffer.recent_indices(600, window=6)
    assert set(ids_of(buffer.gather(idx).obs)) == {7, 8, 9, 10, 11, 12}
    assert_rows_consistent(buffer, idx)


def test_recent_indices_window_larger_than_size_is_clipped() -> None:
    torch.manual_seed(4)
    buffer = make(10)
    buffer.add_batch(*rows(0, 4))
    idx = buffer.recent_indices(300, window=1000)
    assert set(ids_of(buffer.gather(idx).obs)) == {0, 1, 2, 3}


def test_ordered_before_and_after_wrap() -> None:
    buffer = make(6)
    buffer.add_batch(*rows(0, 4))
    assert ids_of(buffer.ordered().obs) == [0, 1, 2, 3]
    buffer.add_batch(*rows(4, 15))
    ordered = buffer.ordered()
    assert ids_of(ordered.obs) == [9, 10, 11, 12, 13, 14]
    ids = ordered.obs[:, 0]
    assert torch.equal(ordered.rew, ids * 10.0)
    assert torch.equal(ordered.next_obs, ordered.obs + 1000.0)


def test_resized_smaller_keeps_newest() -> None:
    buffer = make(8)
    buffer.add_batch(*rows(0, 11))  # wrapped: holds 3..10
    small = buffer.resized(3)
    assert small.capacity == 3
    assert small.size == 3
    assert small.total_added == 11
    assert ids_of(small.ordered().obs) == [8, 9, 10]
    assert_rows_consistent(small, torch.arange(3))
    # the original is untouched
    assert ids_of(buffer.ordered().obs) == list(range(3, 11))


def test_resized_larger_keeps_all_and_continues() -> None:
    buffer = make(5)
    buffer.add_batch(*rows(0, 8))  # wrapped: holds 3..7
    big = buffer.resized(12)
    assert (big.capacity, big.size, big.total_added) == (12, 5, 8)
    assert ids_of(big.ordered().obs) == [3, 4, 5, 6, 7]
    big.add_batch(*rows(8, 12))
    assert ids_of(big.ordered().obs) == list(range(3, 12))
    assert big.total_added == 12
    # the recency window follows the new data, not the old ring layout
    idx = big.recent_indices(300, window=4)
    assert set(ids_of(big.gather(idx).obs)) == {8, 9, 10, 11}


def _row(seed: int, k: int) -> tuple[torch.Tensor, ...]:
    """Transition k of seed s, every field tagged with both: obs = (100 s + k, -k)."""
    v = 100.0 * seed + k
    return (
        torch.tensor([v, -k]),
        torch.tensor([v]),
        torch.tensor(v),
        torch.tensor([v + 0.5, -k]),
        torch.tensor(float(k % 2)),
    )


def _add_all(buffers: SeedBuffers, k: int) -> None:
    rows = [_row(s, k) for s in range(len(buffers))]
    buffers.add(*(torch.stack(field) for field in zip(*rows)))


def _obs_of(buffer: ReplayBuffer) -> list[float]:
    return buffer.ordered().obs[:, 0].tolist()


def test_seed_buffers_store_each_seeds_transition_in_its_own_ring() -> None:
    buffers = SeedBuffers(4, 2, 1, "cpu", [None, None, None])
    for k in range(6):  # wraps: each ring keeps its newest four
        _add_all(buffers, k)
    for s in range(3):
        assert _obs_of(buffers[s]) == [100.0 * s + k for k in (2, 3, 4, 5)]
        assert buffers[s].total_added == 6
        batch = buffers[s].ordered()
        assert batch.rew.tolist() == batch.act[:, 0].tolist() == _obs_of(buffers[s])
        assert batch.done.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_seed_buffers_add_to_rings_at_different_positions() -> None:
    """Model buffers of different seeds fill by different amounts (rollouts end at different
    steps), so their rings stand apart; one transition per seed must still land at each
    seed's own position."""
    buffers = SeedBuffers(4, 2, 1, "cpu", [None, None])
    _add_all(buffers, 0)
    buffers[0].add(*_row(0, 1))  # seed 0 one ahead
    _add_all(buffers, 2)
    assert _obs_of(buffers[0]) == [0.0, 1.0, 2.0]
    assert _obs_of(buffers[1]) == [100.0, 102.0]
    assert buffers[0].total_added == 3 and buffers[1].total_added == 2


def test_seed_buffers_resized_keep_each_seeds_newest_rows_and_count() -> None:
    buffers = SeedBuffers(4, 2, 1, "cpu", [None, None])
    for k in range(6):
        _add_all(buffers, k)
    smaller, larger = buffers.resized(3), buffers.resized(8)
    for s in range(2):
        assert _obs_of(smaller[s]) == [100.0 * s + k for k in (3, 4, 5)]
        assert _obs_of(larger[s]) == [100.0 * s + k for k in (2, 3, 4, 5)]
        assert smaller[s].total_added == larger[s].total_added == 6


def test_a_lone_buffer_allocates_its_capacity_and_no_more() -> None:
    """capacity x (obs + act + 1 + obs + 1) float32 values: 100 x (3 + 2 + 1 + 3 + 1) x 4 bytes."""
    buffer = ReplayBuffer(100, 3, 2, "cpu")
    fields = (buffer.obs, buffer.act, buffer.rew, buffer.next_obs, buffer.done)
    assert sum(field.untyped_storage().nbytes() for field in fields) == 100 * 10 * 4
