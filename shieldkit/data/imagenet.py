"""ImageNet (ILSVRC 2012) validation images, streamed from disk: one image decoded per sample asked for.

The 50,000 validation images (6.4 GB as JPEG, 30 GB as float tensors at 224x224) are never
loaded at once: :func:`imagenet` returns a :class:`~shieldkit.data.streamed.StreamedData` over an
:class:`ImageFolderDataset`, which knows every file and label up front and decodes, resizes and
crops an image only when it is indexed.

Layout: the class-folder layout, ``<data>/imagenet/val/<wnid>/*.JPEG`` (``n01440764/`` ...
``n15075141/``), as the common ``valprep.sh`` script sorts ``ILSVRC2012_img_val.tar``. Class
indices follow the sorted folder names, the order every ImageNet classifier uses. A
``LOC_synset_mapping.txt`` beside the ``val/`` folder (lines ``n01440764 tench, Tinca tinca``)
gives the classes their first English names; without it they are named by their wnids.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from torch.utils.data import Dataset

from shieldkit.core.errors import DatasetNotFoundError, InvalidParameterError
from shieldkit.core.validation import check_int
from shieldkit.data.folder import IMAGE_SUFFIXES, class_files
from shieldkit.data.idx import data_root
from shieldkit.data.streamed import StreamedData

logger = logging.getLogger(__name__)

__all__ = ["SYNSET_MAPPING", "ImageFolderDataset", "imagenet"]

#: The file (beside the split's folder) that maps wnids to English names, as the ImageNet challenge ships it.
SYNSET_MAPPING = "LOC_synset_mapping.txt"

_WNID = re.compile(r"^n\d{8}$")
_SPLIT_ALIASES = {"val": "val", "validation": "val", "test": "val", "train": "train"}


class ImageFolderDataset(Dataset):
    """A map-style dataset over ``<root>/<class>/<image>``: files are listed up front, decoded on access.

    Classes are the sorted sub-folder names (label ``i`` is the ``i``-th); the images of each class
    are its files with an image suffix (``.JPEG``, ``.png``, ...), sorted by name. An image is read
    with Pillow, converted to RGB, resized (bilinear) so its shorter side is ``resize``, and
    centre-cropped to ``size x size``: the conventional evaluation transform of ImageNet
    classifiers (torchvision's ``Resize(256)`` then ``CenterCrop(224)``), without torchvision.

    Args:
        root: the folder holding one sub-folder per class.
        size: the side of the square crop.
        resize: the shorter side after resizing, ``>= size``.

    Attributes:
        classes: the class folder names, sorted.
        samples: ``(path, label)`` of every image, in order.
        targets: the label of every image (no image is decoded to know it).

    Shape:
        ``dataset[i]`` is ``(image, label)``: image ``[3, size, size]`` float32 in ``[0, 1]``, label an int.
    """

    def __init__(self, root: str | os.PathLike, *, size: int = 224, resize: int = 256):
        check_int("ImageFolderDataset", "size", size)
        check_int("ImageFolderDataset", "resize", resize)
        if resize < size:
            raise InvalidParameterError(f"ImageFolderDataset: resize must be >= size, got resize={resize} and "
                                        f"size={size}")
        _pillow("ImageFolderDataset")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"ImageFolderDataset: root {str(self.root)!r} is not a folder")
        self.size, self.resize = size, resize
        self.classes, self.samples = class_files(self.root)
        if not self.samples:
            raise DatasetNotFoundError(f"ImageFolderDataset: no images ({', '.join(IMAGE_SUFFIXES)}) in class "
                                       f"sub-folders of {str(self.root)!r}")
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return _load_image(path, self.size, self.resize), label

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(root={str(self.root)!r}, n={len(self)}, classes={len(self.classes)}, "
                f"size={self.size}, resize={self.resize})")


def _load_image(path: str | os.PathLike, size: int, resize: int) -> torch.Tensor:
    """One image as RGB, its shorter side resized (bilinear) to ``resize``, centre-cropped to ``size``.

    Shape:
        ``[3, size, size]`` float32 in ``[0, 1]``.
    """
    image_module = _pillow("imagenet")
    with image_module.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        # torchvision's Resize(int): the shorter side becomes `resize`, the longer keeps the aspect (truncated).
        if width <= height:
            new_width, new_height = resize, int(resize * height / width)
        else:
            new_width, new_height = int(resize * width / height), resize
        if (new_width, new_height) != (width, height):
            image = image.resize((new_width, new_height), image_module.BILINEAR)
        # torchvision's CenterCrop: the offsets rounded.
        left, top = int(round((new_width - size) / 2.0)), int(round((new_height - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(size, size, 3).permute(2, 0, 1).to(torch.float32).div_(255.0)


def _pillow(owner: str):
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(f"{owner} needs Pillow to decode images: pip install pillow") from error
    return Image


def imagenet(
    split: str = "test",
    root: str | os.PathLike | None = None,
    *,
    size: int = 224,
    resize: int = 256,
) -> StreamedData:
    """ImageNet (ILSVRC 2012) validation images in 1,000 classes, streamed from disk.

    Reads the class-folder layout ``<root>/imagenet/val/<wnid>/*.JPEG`` (``root`` may also be the
    ``imagenet/`` folder or the ``val/`` folder itself). Nothing is decoded up front: the result
    is a ``StreamedData`` whose samples are decoded (RGB), resized (shorter side ``resize``,
    bilinear) and centre-cropped (``size``) when they are read. Classes are the sorted wnid
    folders, named by ``LOC_synset_mapping.txt`` beside the ``val/`` folder when present.

    Conventional normalisation: ``--normalize imagenet`` (mean ``(0.485, 0.456, 0.406)``,
    std ``(0.229, 0.224, 0.225)``; :data:`~shieldkit.data.normalization.NORMALIZATIONS`).

    Args:
        split: ``"val"``; ``"test"`` (the default, as for every loader) is the same, since ImageNet's
            test labels are not public; ``"train"`` reads ``<root>/imagenet/train/<wnid>/`` if it was
            extracted in that layout.
        root: the data folder; ``None`` uses ``$SHIELDKIT_DATA``, else ``~/.cache/shieldkit/data``.
        size: the side of the centre crop.
        resize: the shorter side after resizing, ``>= size``.

    Returns:
        ``StreamedData`` named ``"imagenet"``, split ``"val"``, with every label known.

    Shape:
        each image ``[3, size, size]`` float32 in ``[0, 1]``; labels int64.

    Raises:
        DatasetNotFoundError: no folder of class folders was found (the message says where to put it).

    Reference:
        O. Russakovsky et al., "ImageNet Large Scale Visual Recognition Challenge", IJCV 115, 2015.
    """
    if split not in _SPLIT_ALIASES:
        raise InvalidParameterError(f"imagenet: split={split!r} is not valid; choose 'val' (or its alias "
                                    "'test') or 'train'")
    split = _SPLIT_ALIASES[split]
    check_int("imagenet", "size", size)
    check_int("imagenet", "resize", resize)
    if resize < size:
        raise InvalidParameterError(f"imagenet: resize must be >= size, got resize={resize} and size={size}")
    folder_root = data_root(root)
    folder = _split_folder(folder_root, split)
    if folder is None:
        raise DatasetNotFoundError(
            f"imagenet ({split} split): no folder of class folders at {str(folder_root / 'imagenet' / split)!r}. "
            f"Put the ILSVRC 2012 {split} images there in the class-folder layout ({split}/<wnid>/*.JPEG, e.g. "
            f"sorted by the common valprep.sh), optionally with {SYNSET_MAPPING} beside the {split}/ folder, "
            "or point the environment variable SHIELDKIT_DATA (or root=) at the folder that holds 'imagenet/' "
            "(root= may also be the split's folder itself); shieldkit does not download ImageNet."
        )
    dataset = ImageFolderDataset(folder, size=size, resize=resize)
    names = _synset_names(folder)
    classes = [names.get(wnid, wnid) for wnid in dataset.classes]
    logger.info("imagenet: %d %s images in %d classes under %s (streamed)", len(dataset), split,
                len(classes), folder)
    return StreamedData(dataset, classes=classes, name="imagenet", split=split, labels=dataset.targets)


def _split_folder(root: Path, split: str) -> Path | None:
    """``<root>/imagenet/<split>``, ``<root>/<split>``, or ``root`` itself when it is the class folders."""
    for candidate in (root / "imagenet" / split, root / split):
        if _holds_class_folders(candidate):
            return candidate
    if root.name == split or _all_wnids(root):
        return root if _holds_class_folders(root) else None
    return None


def _holds_class_folders(folder: Path) -> bool:
    return folder.is_dir() and any(entry.is_dir() for entry in folder.iterdir())


def _all_wnids(folder: Path) -> bool:
    """Whether every sub-folder is named like a wnid (so ``root`` is the split's folder, not a data folder)."""
    if not folder.is_dir():
        return False
    names = [entry.name for entry in folder.iterdir() if entry.is_dir()]
    return bool(names) and all(_WNID.match(name) for name in names)


def _synset_names(folder: Path) -> dict[str, str]:
    """``wnid -> first English name`` from ``LOC_synset_mapping.txt`` beside (or in) the split's folder."""
    for candidate in (folder.parent / SYNSET_MAPPING, folder / SYNSET_MAPPING):
        if candidate.is_file():
            names = {}
            for line in candidate.read_text(encoding="utf-8", errors="replace").splitlines():
                wnid, _, description = line.strip().partition(" ")
                if wnid and description:
                    names[wnid] = description.split(",")[0].strip()
            return names
    return {}
