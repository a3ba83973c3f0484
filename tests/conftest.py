"""Shared test setup: one torch thread, so tests never oversubscribe the 2-core machine."""

import torch

torch.set_num_threads(1)
