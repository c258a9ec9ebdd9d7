"""Datasets as ``ImageData`` (or ``StreamedData``, read by chunk): images in ``[0, 1]`` with integer labels.

``load("mnist", split="test")`` goes through the registry, so datasets added by
plugins load the same way as the built-in ones listed in :data:`DATASETS`.
"""

from __future__ import annotations

import os

from shieldkit.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    cifar10,
    cifar100,
)
from shieldkit.data.digits import digits
from shieldkit.data.folder import image_folder
from shieldkit.data.idx import DatasetNotFoundError, data_root
from shieldkit.data.imagedata import ImageData
from shieldkit.data.imagenet import ImageFolderDataset, imagenet
from shieldkit.data.mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, fashion_mnist, mnist
from shieldkit.data.normalization import NORMALIZATIONS, named_normalization
from shieldkit.data.streamed import StreamedData, as_eval_data
from shieldkit.data.tensors import tensor_file

__all__ = [
    "CIFAR100_COARSE_CLASSES",
    "CIFAR100_FINE_CLASSES",
    "CIFAR10_CLASSES",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "DatasetNotFoundError",
    "ImageData",
    "ImageFolderDataset",
    "NORMALIZATIONS",
    "StreamedData",
    "as_eval_data",
    "cifar10",
    "cifar100",
    "data_root",
    "digits",
    "fashion_mnist",
    "image_folder",
    "imagenet",
    "load",
    "mnist",
    "named_normalization",
    "tensor_file",
]

#: The built-in dataset loaders, registered by the native plugin under their function names.
DATASETS = (digits, mnist, fashion_mnist, cifar10, cifar100, imagenet, image_folder, tensor_file)


def load(
    name: str, split: str = "test", root: str | os.PathLike | None = None, **kwargs
) -> ImageData:
    """Load a registered dataset by name (``"mnist"``, ``"fashion-mnist"``, ``"digits"``, ...).

    Args:
        name: the dataset's registered name; hyphens and underscores are interchangeable.
        split: ``"train"`` or ``"test"``.
        root: the data folder (``None``: ``$SHIELDKIT_DATA``, else ``~/.cache/shieldkit/data``).
        **kwargs: the loader's own options, e.g. ``download=True`` or ``size=8``.

    Returns:
        The dataset as ``ImageData``, or as ``StreamedData`` (read one chunk at a time) for folders too large
        for memory, e.g. ``imagenet``.
    """
    from shieldkit.plugins.registry import create_dataset

    return create_dataset(name, split=split, root=root, **kwargs)
