"""Your own images: a folder with one sub-folder of pictures per class."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from shieldkit.data.imagedata import ImageData

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "class_files", "image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def class_files(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The class-folder layout, read without opening a picture: ``(classes, [(image path, label), ...])``,
    the classes being ``folder``'s sub-folders in sorted order and the images their files with an
    :data:`IMAGE_SUFFIXES` suffix. The one reader of the layout (``image_folder``, ``ImageFolderDataset``
    and the command line's ``--data`` check)."""
    classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    files = [(path, label) for label, name in enumerate(classes) for path in sorted((folder / name).iterdir())
             if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    return classes, files


def image_folder(
    split: str = "test",
    root: str | os.PathLike | None = None,
    *,
    size: int | None = 28,
    channels: int | None = 1,
) -> ImageData:
    """Your own images: a folder with one sub-folder of pictures per class.

    Reads ``<root>/[<split>/]<class>/*.png`` (and other Pillow formats), resized.

    When ``<root>/<split>/`` exists the classes are read from there; otherwise
    ``<root>`` itself holds the class folders and ``split`` only labels the result.
    Classes are the sub-folder names in sorted order; images are read with Pillow.

    Args:
        split: which sub-folder to read (``"train"``, ``"test"``, ...), if present.
        root: the folder; required.
        size: every image is resized (bilinear) to ``size x size``; ``None``: the images' own
            size (they must all have the same).
        channels: 1 (grayscale) or 3 (RGB); ``None``: 3 if any image is in colour, else 1.

    Returns:
        ``ImageData`` named after the folder.

    Shape:
        x ``[N, channels, size, size]`` float32 in ``[0, 1]``; y ``[N]`` int64.
    """
    if root is None:
        raise ValueError(
            "image_folder: root is required (the folder holding one sub-folder per class)"
        )
    if channels not in (1, 3, None):
        raise ValueError(f"image_folder: channels must be 1, 3 or None, got {channels!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"image_folder: size must be an int >= 1 or None, got {size!r}")
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("image_folder needs Pillow: pip install pillow") from error

    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"image_folder: root {str(base)!r} is not a folder")
    if (base / split).is_dir():
        base = base / split
    else:
        logger.info(
            "image_folder: no %r sub-folder in %s; reading the class folders there", split, base
        )
    classes, files = class_files(base)
    if not files:
        raise FileNotFoundError(
            f"image_folder: no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders of {str(base)!r}"
        )

    if channels is None or size is None:
        channels, size = _inferred(files, channels, size, Image)
    mode = "L" if channels == 1 else "RGB"
    images = []
    for path, _ in files:
        with Image.open(path) as image:
            image = image.convert(mode)
            if image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        images.append(pixels.view(size, size, channels).permute(2, 0, 1))
    x = torch.stack(images).to(torch.float32).div_(255.0)
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ImageData(x, y, classes=classes, name=Path(root).expanduser().name, split=split)


def _inferred(files: list, channels: int | None, size: int | None, image_module) -> tuple[int, int]:
    """Channels and size read from the images' headers (no pixels are decoded)."""
    colour, sizes = False, set()
    for path, _ in files:
        with image_module.open(path) as image:
            colour = colour or image.mode not in ("1", "L", "LA", "I", "I;16", "F")
            sizes.add(image.size)
    if size is None:
        if len(sizes) != 1 or len({s for pair in sizes for s in pair}) != 1:
            shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
            raise ValueError(f"image_folder: the images are not all square and of one size ({shown}); "
                             "pass size= to resize them")
        size = next(iter(sizes))[0]
    return (channels or (3 if colour else 1)), size
