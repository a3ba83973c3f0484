"""Preallocated circular replay buffers of torch tensors, sampled by index tensors."""

from __future__ import annotations

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
    ) -> None:
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.device = torch.device(device)
        self.generator = generator  # draws sample indices (the owning agent's stream)
        self.obs = torch.zeros(capacity, obs_dim, device=self.device)
        self.act = torch.zeros(capacity, act_dim, device=self.device)
        self.rew = torch.zeros(capacity, device=self.device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=self.device)
        self.done = torch.zeros(capacity, device=self.device)
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
        self.pointer = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.total_added += 1

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
        self.pointer = (self.pointer + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.total_added += n

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
