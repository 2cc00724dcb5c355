"""Seeded, label-stratified index selection: the fixed val/test carve-outs and the limited-data subsets."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# Seed of every fixed carve-out; a constant, so val/test are the same images whatever the run seed is.
FIXED_SPLIT_SEED = 20_240_607
_UINT64_MASK = 2**64 - 1
_TIE_STREAM = 2**63


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's output function: a fixed bijection on uint64 that scatters neighbouring inputs."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hashed(count: int, seed: int, stream: int) -> np.ndarray:
    """`count` uint64 hashes fixed by (seed, stream): integer hashing, not a library generator whose stream
    may change between versions, so the fixed splits stay the same images after an upgrade."""
    salt = _splitmix64(_splitmix64(np.array([seed & _UINT64_MASK], dtype=np.uint64)) ^ np.uint64(stream))
    return _splitmix64(salt ^ np.arange(count, dtype=np.uint64))


def seeded_order(count: int, seed: int, stream: int) -> np.ndarray:
    """A permutation of range(count) fixed by (seed, stream)."""
    return np.argsort(_hashed(count, seed, stream), kind="stable")


def _allocate(counts: np.ndarray, n: int, tie_order: np.ndarray) -> np.ndarray:
    """Per-class sample counts proportional to `counts`, each the floor or ceiling of its exact share."""
    total = int(counts.sum())
    # Integer arithmetic (largest-remainder method), so no class can be rounded past its own size.
    share = counts.astype(np.int64) * n
    alloc = share // total
    remainder = share % total
    # Break ties in the remainder in seeded order, so they are not always won by label 0.
    order = tie_order[np.argsort(-remainder[tie_order], kind="stable")]
    alloc[order[: n - int(alloc.sum())]] += 1
    return alloc


def stratified_sample(labels: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(chosen, rest) sorted: `n` indices with class proportions kept (-1 is one class), each class shuffled
    by `seed` and its label, so that a larger `n` (nearly) holds a smaller."""
    label_array = labels.cpu().numpy()
    mask = np.zeros(len(label_array), dtype=bool)
    if n > 0:
        classes, counts = np.unique(label_array, return_counts=True)
        alloc = _allocate(counts, n, seeded_order(len(classes), seed, stream=_TIE_STREAM))
        for cls, k in zip(classes, alloc, strict=True):
            members = np.flatnonzero(label_array == cls)
            # Labels are >= -1, so label + 1 is a valid stream and never collides with the tie stream.
            mask[members[seeded_order(len(members), seed, stream=int(cls) + 1)[:k]]] = True
    return torch.from_numpy(np.flatnonzero(mask)), torch.from_numpy(np.flatnonzero(~mask))


def fixed_split(labels: Tensor, num_val: int, num_test: int) -> tuple[Tensor, Tensor, Tensor]:
    """Stratified (train, val, test) indices for data without an official split; fixed, not run-seeded."""
    test, rest = stratified_sample(labels, num_test, FIXED_SPLIT_SEED)
    val, train = stratified_sample(labels[rest], num_val, FIXED_SPLIT_SEED + 1)
    return rest[train], rest[val], test


def split_items(
    items: Tensor, labels: Tensor | None = None, val: float = 0.1, test: float = 0.2
) -> dict[str, tuple[Tensor, Tensor]]:
    """Each `fixed_split` part's (items, labels), `val` and `test` fractions (at least one item each)."""
    if labels is None:
        labels = torch.full((len(items),), -1, dtype=torch.long)
    sizes = [max(1, round(fraction * len(items))) for fraction in (val, test)]
    parts = zip(("train", "val", "test"), fixed_split(labels, *sizes), strict=True)
    return {split: (items[index], labels[index]) for split, index in parts}


def carve_validation(items: Tensor, labels: Tensor, max_val: int = 5000) -> dict[str, tuple[Tensor, Tensor]]:
    """An official train split's "train" and fixed stratified "val": `max_val` items, or 10% if fewer."""
    val, train = stratified_sample(labels, min(max_val, len(labels) // 10), FIXED_SPLIT_SEED)
    return {"train": (items[train], labels[train]), "val": (items[val], labels[val])}


def seeded_uniform(count: int, seed: int, stream: int) -> np.ndarray:
    """`count` floats in [0, 1) fixed by (seed, stream)."""
    return (_hashed(count, seed, stream) >> np.uint64(11)).astype(np.float64) / float(2**53)
