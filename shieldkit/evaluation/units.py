"""What identifies a unit of work: its seed, its sample range, and the digests that refuse a changed resume.

A unit is one attack, at one epsilon, against one defence, on one fixed range of
sample indices (a chunk). It is seeded from its identity alone, so its outcome does
not depend on the order units run in, on a resume, or on which rank takes it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from torch import Tensor, nn


def unit_seed(seed: int, *parts: Any) -> int:
    """A seed for one unit of work from the run's seed and the unit's identity (not its rank or order)."""
    text = json.dumps([seed, *parts], default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def chunk_ranges(n: int, size: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """Fixed sample ranges ``[start, end)``; rank ``r`` of ``world`` takes every ``world``-th one."""
    ranges = [(start, min(start + size, n)) for start in range(0, n, size)]
    return ranges[rank::world]


def model_digest(model: nn.Module) -> str:
    """A hash of a model's parameters and buffers (a changed model refuses to resume)."""
    hasher = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        hasher.update(name.encode())
        hasher.update(str(tuple(tensor.shape)).encode())
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def tensor_digest(*tensors: Tensor) -> str:
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def pick(indices: list[int], mask: Tensor) -> list[int]:
    """The entries of ``indices`` where ``mask`` (one flag per entry) is true."""
    return [index for index, keep in zip(indices, mask.tolist()) if keep]


def minus(indices: list[int], removed: list[int]) -> list[int]:
    """``indices`` without ``removed``, in order."""
    gone = set(removed)
    return [i for i in indices if i not in gone]
