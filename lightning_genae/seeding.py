"""Every random stream drawn from a run's seed, named: numpy's `SeedSequence` with the seed as entropy and the
stream's name and index as its spawn key, so different streams are independent and each draws alike."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _seed_sequence(seed: int, stream: str, index: tuple[int, ...]) -> np.random.SeedSequence:
    name = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    return np.random.SeedSequence(seed, spawn_key=(name, *index))


def int_seed(seed: int, stream: str, *index: int) -> int:
    """The stream `stream` of `seed` at `index` as one integer in [0, 2**32): numpy's seed range, which
    `seed_everything` takes; a CPU torch generator uses 32 bits of its seed in any case."""
    return int(_seed_sequence(seed, stream, index).generate_state(1)[0])


def generator(seed: int, stream: str, *index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator of the stream `stream` of `seed` at `index` (64 bits), on `device`: the CPU, so a
    stream draws the same numbers on every accelerator, unless its draws are made where its tensors are."""
    state = _seed_sequence(seed, stream, index).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state))
