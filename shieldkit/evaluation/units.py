"""The units of work: what identifies one, the plan that lists them, and the digests that refuse a changed resume.

A unit (:class:`Unit`) is one attack, at one epsilon, against one defence, on one
fixed range of sample indices (a chunk), run on the model of one role (deployed,
the declared view, a remedy's view). :func:`plan_units` lists a defence's units
once, in the order they run; a rank of a process group keeps its share with
:func:`shard_units`, a filter. A unit is seeded from its identity alone
(:meth:`Unit.seed`), so its outcome does not depend on the order units run in, on a
resume, or on which rank takes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from shieldkit.data.imagedata import ImageData
from shieldkit.data.streamed import StreamedData
from shieldkit.evaluation.suite import AttackEntry

#: the stages of a chunk, in the order they run (the module docstring of runner.py says what each does)
STAGES = ("naive", "blackbox", "adaptive")


@dataclass(frozen=True)
class AttackOnTarget:
    """One attack of the suite and the role of the model it attacks (:mod:`~shieldkit.evaluation.targets`)."""

    entry: AttackEntry
    role: str


@dataclass(frozen=True)
class Unit:
    """One attack at one eps against one defence on one chunk ``[start, end)`` of the samples.

    Which samples it attacks is not part of it: the cascade gives it those the earlier units of its chunk
    left robust, read from their rows when it runs.
    """

    defense: str
    stage: str
    attack: AttackOnTarget
    eps: float
    chunk: tuple[int, int]

    @property
    def key(self) -> str:
        """The key of the unit's row in results.jsonl."""
        return f"attack|{self.defense}|{self.eps!r}|{self.stage}|{self.attack.entry.label}|{self.chunk[0]}"

    def seed(self, run_seed: int) -> int:
        """The unit's seed: from the run's seed and the unit's identity only."""
        return unit_seed(run_seed, self.defense, self.stage, self.attack.entry.label, self.eps, self.chunk[0])


def plan_units(defense: str, naive: list[AttackOnTarget], blackbox: list[AttackOnTarget],
               adaptive: list[AttackOnTarget], eps: tuple[float, ...] | list[float],
               chunks: list[tuple[int, int]]) -> list[Unit]:
    """Every unit of one defence, in the order they run: per eps, per chunk, the stages in :data:`STAGES` order."""
    stages = (("naive", naive), ("blackbox", blackbox), ("adaptive", adaptive))
    return [Unit(defense, stage, attack, value, chunk)
            for value in eps for chunk in chunks for stage, attacks in stages for attack in attacks]


def rank_chunks(chunks: list[tuple[int, int]], rank: int, world: int) -> list[tuple[int, int]]:
    """The chunks rank ``rank`` of ``world`` owns: every ``world``-th one, from its rank on."""
    return chunks[rank::world]


def shard_units(units: list[Unit], chunks: list[tuple[int, int]], rank: int, world: int) -> list[Unit]:
    """The units rank ``rank`` of ``world`` runs: those on its chunks (:func:`rank_chunks`)."""
    mine = set(rank_chunks(chunks, rank, world))
    return [unit for unit in units if unit.chunk in mine]


def unit_seed(seed: int, *parts: Any) -> int:
    """A seed for one unit of work from the run's seed and the unit's identity (not its rank or order)."""
    text = json.dumps([seed, *parts], default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def chunk_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """Fixed sample ranges ``[start, end)`` of ``size`` samples (the last may be shorter), fixed by ``n`` alone."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def model_digest(model: nn.Module) -> str:
    """A hash of a model's state dict (a changed model refuses to resume): every entry, whatever its type.

    A quantised model's state dict holds quantised tensors, dtypes and tuples of packed parameters beside plain
    tensors; each is hashed by its values (:func:`_update`).
    """
    hasher = hashlib.sha256()
    for name, value in model.state_dict().items():
        hasher.update(name.encode())
        _update(hasher, value)
    return hasher.hexdigest()[:16]


def _update(hasher: Any, value: Any) -> None:
    """Feed one state-dict entry to ``hasher``: a tensor by shape, dtype and values (a quantised one by its
    integer values, scale and zero point), a tuple or list entry by entry, anything else by its repr."""
    if isinstance(value, Tensor):
        tensor = value.detach().cpu()
        hasher.update(str(tuple(tensor.shape)).encode())
        if tensor.is_quantized:
            if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                hasher.update(f"{tensor.q_scale()},{tensor.q_zero_point()}".encode())
            else:
                _update(hasher, tensor.q_per_channel_scales())
                _update(hasher, tensor.q_per_channel_zero_points())
            tensor = tensor.int_repr()
        hasher.update(_raw_bytes(tensor))
    elif isinstance(value, (tuple, list)):
        hasher.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _update(hasher, item)
    else:
        hasher.update(repr(value).encode())


def data_digest(data: ImageData | StreamedData) -> str:
    """What a resume compares of the evaluation data: every image and label of data held in memory; of data
    streamed from a dataset every label and the first images, so that checking reads one chunk, not the set."""
    if isinstance(data, StreamedData):
        return tensor_digest(data.fingerprint_images(), data.y)
    return tensor_digest(data.x, data.y)


def tensor_digest(*tensors: Tensor) -> str:
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(_raw_bytes(tensor.detach().cpu()))
    return hasher.hexdigest()[:16]


def _raw_bytes(tensor: Tensor) -> bytes:
    """A CPU tensor's values as bytes (bfloat16 too, which NumPy has no type for)."""
    tensor = tensor.contiguous()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    return tensor.numpy().tobytes()


def pick(indices: list[int], mask: Tensor) -> list[int]:
    """The entries of ``indices`` where ``mask`` (one flag per entry) is true."""
    return [index for index, keep in zip(indices, mask.tolist()) if keep]


def minus(indices: list[int], removed: list[int]) -> list[int]:
    """``indices`` without ``removed``, in order."""
    gone = set(removed)
    return [i for i in indices if i not in gone]
