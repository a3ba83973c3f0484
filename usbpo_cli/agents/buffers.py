"""Preallocated circular replay buffers of torch tensors, sampled by index tensors.

`ReplayBuffer` is one seed's ring buffer. `SeedBuffers` holds S of them (one per seed of a run
trained as one group) in shared tensors with a leading seed axis, so that a policy batch for
every seed is one gather per field; each seed's buffer is a view with its own position and its
own generator, drawing the indices a lone run of that seed draws."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class Batch(NamedTuple):
    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    next_obs: torch.Tensor
    done: torch.Tensor  # 1.0 where the transition terminated (not where it was truncated)


class ReplayBuffer:
    """Fixed-capacity ring buffer; the oldest transitions are overwritten first."""

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        device: torch.device | str,
        generator: torch.Generator | None = None,
        storage: Sequence[torch.Tensor] | None = None,
    ) -> None:
        """`storage`: the five tensors (obs, act, rew, next_obs, done) to keep the rows in,
        when the buffer is one seed's view of `SeedBuffers`; else they are allocated here."""
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.device = torch.device(device)
        self.generator = generator  # draws sample indices (the owning agent's stream)
        if storage is None:
            storage = _allocate(1, capacity, obs_dim, act_dim, self.device)
            storage = [store[0] for store in storage]
        self.obs, self.act, self.rew, self.next_obs, self.done = storage
        self.size = 0
        self.pointer = 0
        self.total_added = 0

    def __len__(self) -> int:
        return self.size

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return self.obs, self.act, self.rew, self.next_obs, self.done

    def add(
        self, obs: torch.Tensor, act: torch.Tensor, rew: float, next_obs: torch.Tensor, done: float
    ) -> None:
        i = self.pointer
        self.obs[i] = obs
        self.act[i] = act
        self.rew[i] = rew
        self.next_obs[i] = next_obs
        self.done[i] = done
        self.advance(1)

    def advance(self, n: int) -> None:
        """Move the ring past `n` rows just written at the pointer."""
        self.pointer = (self.pointer + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.total_added += n

    def add_batch(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        rew: torch.Tensor,
        next_obs: torch.Tensor,
        done: torch.Tensor,
    ) -> None:
        n = obs.shape[0]
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` survive anyway
            obs, act, rew, next_obs, done = (
                x[-self.capacity :] for x in (obs, act, rew, next_obs, done)
            )
            self.total_added += n - self.capacity
            n = self.capacity
        idx = (self.pointer + torch.arange(n, device=self.device)) % self.capacity
        for store, values in zip(self._fields(), (obs, act, rew, next_obs, done)):
            store[idx] = values.to(store.dtype)
        self.advance(n)

    def gather(self, idx: torch.Tensor) -> Batch:
        return Batch(
            self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.done[idx]
        )

    def sample_indices(self, n: int) -> torch.Tensor:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        return torch.randint(self.size, (n,), device=self.device, generator=self.generator)

    def sample(self, n: int) -> Batch:
        return self.gather(self.sample_indices(n))

    def recent_indices(self, n: int, window: int) -> torch.Tensor:
        """`n` random indices among the `window` most recently added transitions."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        window = max(1, min(window, self.size))
        offsets = torch.randint(window, (n,), device=self.device, generator=self.generator)
        return (self.pointer - 1 - offsets) % self.capacity

    def ordered(self) -> Batch:
        """All stored transitions, oldest first."""
        if self.size < self.capacity:
            return self.gather(torch.arange(self.size, device=self.device))
        idx = (self.pointer + torch.arange(self.capacity, device=self.device)) % self.capacity
        return self.gather(idx)

    def state_dict(self) -> dict:
        """The stored rows only (not the empty tail), plus the ring's position."""
        rows = {
            name: store[: self.size].cpu().clone()
            for name, store in zip(("obs", "act", "rew", "next_obs", "done"), self._fields())
        }
        return {
            "capacity": self.capacity,
            "size": self.size,
            "pointer": self.pointer,
            "total_added": self.total_added,
            **rows,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"buffer capacity {state['capacity']} != {self.capacity}")
        for name, store in zip(("obs", "act", "rew", "next_obs", "done"), self._fields()):
            store[: state["size"]] = state[name].to(self.device)
        self.size, self.pointer = state["size"], state["pointer"]
        self.total_added = state["total_added"]

    @classmethod
    def from_state_dict(
        cls,
        state: dict,
        device: torch.device | str,
        generator: torch.Generator | None = None,
    ) -> ReplayBuffer:
        """A buffer rebuilt from `state_dict()`, drawing its samples from `generator` (the
        owning agent's: a generator is not part of a buffer's state)."""
        obs_dim, act_dim = state["obs"].shape[1], state["act"].shape[1]
        buffer = cls(state["capacity"], obs_dim, act_dim, device, generator)
        buffer.load_state_dict(state)
        return buffer

    def resized(self, capacity: int) -> ReplayBuffer:
        """A buffer of the new capacity holding the newest transitions of this one (MBPO's
        reallocation when the rollout length grows)."""
        new = ReplayBuffer(capacity, self.obs_dim, self.act_dim, self.device, self.generator)
        data = self.ordered()
        new.add_batch(*data)
        new.total_added = self.total_added
        return new


def _allocate(
    seeds: int, capacity: int, obs_dim: int, act_dim: int, device: torch.device
) -> list[torch.Tensor]:
    """Zeroed obs, act, rew, next_obs and done stores with a leading seed axis."""
    return [
        torch.zeros(seeds, capacity, obs_dim, device=device),
        torch.zeros(seeds, capacity, act_dim, device=device),
        torch.zeros(seeds, capacity, device=device),
        torch.zeros(seeds, capacity, obs_dim, device=device),
        torch.zeros(seeds, capacity, device=device),
    ]


class SeedBuffers:
    """One ring buffer per seed (`generators[s]` draws seed s's sample indices), stored in
    shared tensors [S, capacity, ...]; `buffers[s]` is seed s's `ReplayBuffer` (a view)."""

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        device: torch.device | str,
        generators: Sequence[torch.Generator | None],
    ) -> None:
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.device = torch.device(device)
        self.stores = _allocate(len(generators), capacity, obs_dim, act_dim, self.device)
        self.buffers = [
            ReplayBuffer(capacity, obs_dim, act_dim, device, g, [store[s] for store in self.stores])
            for s, g in enumerate(generators)
        ]
        self._seed_rows = torch.arange(len(generators), device=self.device).unsqueeze(1)

    def __getitem__(self, seed: int) -> ReplayBuffer:
        return self.buffers[seed]

    def __len__(self) -> int:
        """The number of seeds."""
        return len(self.buffers)

    def sizes(self) -> list[int]:
        return [buffer.size for buffer in self.buffers]

    def add(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        rew: torch.Tensor,
        next_obs: torch.Tensor,
        done: torch.Tensor,
    ) -> None:
        """One transition per seed ([S, ...] each): the seeds of a run step together, so their
        rings stand at the same position and one write per field stores them all."""
        pointers = {buffer.pointer for buffer in self.buffers}
        if len(pointers) != 1:
            for s, buffer in enumerate(self.buffers):
                buffer.add(obs[s], act[s], rew[s], next_obs[s], done[s])
            return
        i = pointers.pop()
        for store, values in zip(self.stores, (obs, act, rew, next_obs, done)):
            store[:, i] = values
        for buffer in self.buffers:
            buffer.advance(1)

    def gather(self, idx: torch.Tensor) -> Batch:
        """Rows `idx[s]` of seed s's buffer, for every seed: each field [S, n, ...]."""
        rows = self._seed_rows
        return Batch(*(store[rows, idx] for store in self.stores))

    def sample(self, n: int) -> Batch:
        """`n` uniformly drawn rows of each seed's buffer, each seed's indices from its own
        generator: [S, n, ...] per field."""
        return self.gather(torch.stack([buffer.sample_indices(n) for buffer in self.buffers]))

    def resized(self, capacity: int) -> SeedBuffers:
        """Every seed's buffer reallocated at `capacity`, keeping its newest transitions."""
        generators = [buffer.generator for buffer in self.buffers]
        new = SeedBuffers(capacity, self.obs_dim, self.act_dim, self.device, generators)
        for old, fresh in zip(self.buffers, new.buffers):
            fresh.add_batch(*old.ordered())
            fresh.total_added = old.total_added
        return new
