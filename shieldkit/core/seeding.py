"""shieldkit's one seeded-RNG helper: :func:`seeded`.

Every piece of shieldkit that must draw the same random numbers on every run (an
attack's random start, a defence's fit, a unit of the evaluation, a wrapped
library's own draws) runs inside ``seeded(seed, device)``. The caller's random
streams are forked and given back unchanged when the block ends, so seeding one
step never shifts the draws of another.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | str | None = None, *, every_library: bool = False) -> Iterator[None]:
    """Run the block on torch's global RNG seeded with ``seed``, and restore the caller's RNG state after it.

    Args:
        seed: the seed; ``None`` leaves the RNGs alone (the block draws from, and advances, the caller's
            stream: two unseeded attacks in a row draw different numbers).
        device: the device the block computes on; when it is a GPU its generator is forked too (the CPU
            generator always is).
        every_library: seed and restore NumPy's and Python's global RNGs as well, for code that draws from them
            (ART, torchattacks, the diagnosis's probes).
    """
    if seed is None:
        yield
        return
    device = torch.device(device) if device is not None else None
    gpus = [device] if device is not None and device.type == "cuda" else []
    numpy_state, python_state = (np.random.get_state(), random.getstate()) if every_library else (None, None)
    try:
        with torch.random.fork_rng(devices=gpus):
            if every_library:
                seed_every_library(seed)
            else:
                torch.manual_seed(seed)
            yield
    finally:
        if every_library:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def seed_every_library(seed: int) -> None:
    """Seed torch's, NumPy's and Python's global RNGs with ``seed`` (inside a :func:`seeded` block, which gives
    the caller's state back: a step that must redraw the same numbers several times calls this again)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
