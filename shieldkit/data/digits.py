"""scikit-learn's 8x8 handwritten digits, shipped inside shieldkit: a dataset that needs no download.

The images and labels are packaged as ``digits.npz`` (written from scikit-learn by
``python -m shieldkit.data._make_digits``) and read with NumPy alone, so a bare
``pip install shieldkit`` has them.
"""

from __future__ import annotations

import functools
import importlib.resources
import os

import numpy as np
import torch
import torch.nn.functional as F

from shieldkit.core.errors import ShieldkitError
from shieldkit.core.validation import check_choice, check_int
from shieldkit.data.imagedata import ImageData

__all__ = ["DIGITS_COUNT", "DIGITS_TRAIN_SIZE", "digits"]

#: Samples in the "train" split; the remaining 360 of the 1,797 form "test".
DIGITS_TRAIN_SIZE = 1437
_SPLIT_SEED = 0
DIGITS_COUNT = 1797
_DATA_FILE = "digits.npz"


def _packaged_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The packaged images (``uint8 [1797, 8, 8]``, 0..16) and labels (``uint8 [1797]``), in scikit-learn's order."""
    resource = importlib.resources.files("shieldkit.data").joinpath(_DATA_FILE)
    try:
        with resource.open("rb") as file, np.load(file, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, KeyError, ValueError) as error:
        # A file left out of the wheel or damaged: the install is broken, not the user's input.
        raise ShieldkitError(f"digits: the packaged data file {_DATA_FILE} of shieldkit.data cannot be read "
                             f"({error}); reinstall shieldkit") from error
    if images.shape != (DIGITS_COUNT, 8, 8) or labels.shape != (DIGITS_COUNT,):
        raise ShieldkitError(f"digits: the packaged data file {_DATA_FILE} holds images {images.shape} and labels "
                             f"{labels.shape}, not {DIGITS_COUNT} 8x8 images; reinstall shieldkit")
    return images, labels


@functools.lru_cache(maxsize=1)
def _native_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images at their native 8x8 in [0, 1], and labels, in a fixed shuffled order."""
    images, labels = _packaged_arrays()
    # Pixel values are counts 0..16 of the original 4x4 blocks.
    x = torch.from_numpy(images.astype(np.float32)).div_(16.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    # The file is ordered by writer; a seeded permutation mixes writers and keeps
    # each class at roughly its overall share in both splits.
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    return x[order], y[order]


def digits(
    split: str = "test", root: str | os.PathLike | None = None, *, size: int = 28
) -> ImageData:
    """scikit-learn's 8x8 handwritten digits (1,797), packaged with shieldkit, resized.

    Ten classes.

    The split is fixed: after a permutation seeded with 0, the first 1,437 samples
    are ``"train"`` and the remaining 360 are ``"test"``.

    Args:
        split: ``"train"`` or ``"test"``.
        root: ignored (the data ships inside shieldkit); accepted so that every
            loader takes the same arguments.
        size: side of the returned images; 8 keeps the native resolution, any other
            value resizes bilinearly (28 matches MNIST-sized models).

    Returns:
        ``ImageData`` named ``"digits"`` with classes ``"0"`` ... ``"9"``.

    Shape:
        x ``[N, 1, size, size]`` float32 in ``[0, 1]``; y ``[N]`` int64.
    """
    check_choice("digits", "split", split, ("train", "test"))
    check_int("digits", "size", size, minimum=1)
    x, y = _native_digits()
    chosen = slice(0, DIGITS_TRAIN_SIZE) if split == "train" else slice(DIGITS_TRAIN_SIZE, None)
    x, y = x[chosen], y[chosen].clone()
    if size == x.shape[-1]:
        x = x.clone()  # never hand out the cached tensor itself
    else:
        # Bilinear weights are convex, but float rounding can land a hair outside [0, 1].
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    return ImageData(x, y, classes=[str(d) for d in range(10)], name="digits", split=split)
