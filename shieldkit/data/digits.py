"""scikit-learn's bundled 8x8 handwritten digits: a dataset that needs no download."""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from shieldkit.data.imagedata import ImageData

__all__ = ["DIGITS_TRAIN_SIZE", "digits"]

#: Samples in the "train" split; the remaining 360 of the 1,797 form "test".
DIGITS_TRAIN_SIZE = 1437
_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _native_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images at their native 8x8 in [0, 1], and labels, in a fixed shuffled order."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "the 'digits' dataset needs scikit-learn: pip install 'shieldkit[digits]'"
        ) from error
    bunch = load_digits()
    # Pixel values are counts 0..16 of the original 4x4 blocks.
    x = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    # The file is ordered by writer; a seeded permutation mixes writers and keeps
    # each class at roughly its overall share in both splits.
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    return x[order], y[order]


def digits(
    split: str = "test", root: str | os.PathLike | None = None, *, size: int = 28
) -> ImageData:
    """scikit-learn's bundled 8x8 handwritten digits (1,797), resized.

    Ten classes.

    The split is fixed: after a permutation seeded with 0, the first 1,437 samples
    are ``"train"`` and the remaining 360 are ``"test"``.

    Args:
        split: ``"train"`` or ``"test"``.
        root: ignored (the data ships with scikit-learn); accepted so that every
            loader takes the same arguments.
        size: side of the returned images; 8 keeps the native resolution, any other
            value resizes bilinearly (28 matches MNIST-sized models).

    Returns:
        ``ImageData`` named ``"digits"`` with classes ``"0"`` ... ``"9"``.

    Shape:
        x ``[N, 1, size, size]`` float32 in ``[0, 1]``; y ``[N]`` int64.
    """
    if split not in ("train", "test"):
        raise ValueError(f"digits: split must be 'train' or 'test', got {split!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"digits: size must be an int >= 1, got {size!r}")
    x, y = _native_digits()
    chosen = slice(0, DIGITS_TRAIN_SIZE) if split == "train" else slice(DIGITS_TRAIN_SIZE, None)
    x, y = x[chosen], y[chosen].clone()
    if size == x.shape[-1]:
        x = x.clone()  # never hand out the cached tensor itself
    else:
        # Bilinear weights are convex, but float rounding can land a hair outside [0, 1].
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    return ImageData(x, y, classes=[str(d) for d in range(10)], name="digits", split=split)
