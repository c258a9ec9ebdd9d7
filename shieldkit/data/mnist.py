"""MNIST and Fashion-MNIST, read from their original IDX files (see :mod:`shieldkit.data.idx`)."""

from __future__ import annotations

import os

import torch

from shieldkit.data.idx import load_idx_split
from shieldkit.data.imagedata import ImageData

__all__ = ["FASHION_MNIST_CLASSES", "MNIST_CLASSES", "fashion_mnist", "mnist"]

MNIST_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _idx_image_data(
    dataset: str, classes: tuple[str, ...], split: str, root, download: bool
) -> ImageData:
    images, labels = load_idx_split(dataset, split, root, download=download)
    # Converting copies, so the cached uint8 tensors stay untouched whatever the
    # caller does to the returned ones.
    x = images.unsqueeze(1).to(torch.float32).div_(255.0)
    y = labels.to(torch.int64)
    return ImageData(x, y, classes=classes, name=dataset, split=split)


# What the two loaders' docstrings share; each fills in its own summary, folder, classes and reference.
_LOADER_DOC = """{summary}

    60,000 train and 10,000 test images.

    Args:
        split: ``"train"`` or ``"test"``.
        root: the data folder; files may sit in ``<root>/{folder}/`` or directly in
            ``<root>``. ``None`` uses ``$SHIELDKIT_DATA``, else ``~/.cache/shieldkit/data``.
        download: fetch missing files from the public mirrors (checked by MD5).

    Returns:
        ``ImageData`` named ``"{name}"`` with classes ``"{first}"`` ... ``"{last}"``.

    Shape:
        x ``[N, 1, 28, 28]`` float32 in ``[0, 1]``; y ``[N]`` int64.

    Reference:
        {reference}
    """


def _documented(summary: str, folder: str, classes: tuple[str, ...], reference: str):
    """Give an IDX loader its docstring, from the template both loaders share."""

    def document(loader):
        loader.__doc__ = _LOADER_DOC.format(summary=summary, folder=folder, name=loader.__name__,
                                            first=classes[0], last=classes[-1], reference=reference)
        return loader

    return document


@_documented(
    "MNIST handwritten digits: 28x28 grayscale, 10 classes.", "mnist", MNIST_CLASSES,
    'Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of handwritten digits".',
)
def mnist(
    split: str = "test", root: str | os.PathLike | None = None, *, download: bool = False
) -> ImageData:
    return _idx_image_data("mnist", MNIST_CLASSES, split, root, download)


@_documented(
    "Fashion-MNIST: 28x28 grayscale Zalando article photos in 10 classes.", "fashion-mnist", FASHION_MNIST_CLASSES,
    'H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning '
    'Algorithms", arXiv:1708.07747, 2017.',
)
def fashion_mnist(
    split: str = "test", root: str | os.PathLike | None = None, *, download: bool = False
) -> ImageData:
    return _idx_image_data("fashion_mnist", FASHION_MNIST_CLASSES, split, root, download)
