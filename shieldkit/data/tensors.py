"""Your own images as arrays: a ``.npz`` file (NumPy) or a ``.pt`` file (a dict of tensors).

Layout (one file, read without running code: ``numpy.load(allow_pickle=False)``,
``torch.load(weights_only=True)``):

- ``x``: the images, ``[N, C, H, W]``, ``[N, H, W, C]`` (channels last, C = 1 or 3) or
  ``[N, H, W]`` (grey); ``uint8`` in ``[0, 255]`` or floating in ``[0, 1]``;
- ``y``: integer labels ``[N]`` in ``[0, K)``;
- optionally ``classes``: ``K`` class names (strings; ``.npz`` only);
- for separate splits, ``x_train``/``y_train`` and ``x_test``/``y_test`` (any split name)
  instead of ``x``/``y``; a file with only ``x``/``y`` gives that data for every split.

``[N, C, H, W]`` versus ``[N, H, W, C]`` is read from the shape (a channel axis of size 1
or 3 first, else last); ``layout="nchw"`` or ``"nhwc"`` says it when the shape cannot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from shieldkit.core.validation import check_choice
from shieldkit.data.imagedata import ImageData

__all__ = ["TENSOR_SUFFIXES", "tensor_file"]

TENSOR_SUFFIXES = (".npz", ".pt", ".pth")
_CHANNELS = (1, 3)


def tensor_file(split: str = "test", root: str | os.PathLike | None = None, *, path: str | os.PathLike | None = None,
                layout: str | None = None) -> ImageData:
    """Images and labels from a ``.npz`` or ``.pt`` file (layout in the module docstring).

    Args:
        split: which ``x_<split>``/``y_<split>`` pair to read, when the file has splits.
        root: the file (``path`` is the same; ``root`` lets ``load("tensor_file", root=...)`` work).
        path: the file.
        layout: ``"nchw"``, ``"nhwc"`` or ``None`` (from the shape).

    Returns:
        ``ImageData`` named after the file: x ``[N, C, H, W]`` float32 in ``[0, 1]``, y ``[N]`` int64.
    """
    where = path if path is not None else root
    if where is None:
        raise ValueError("tensor_file: path is required (a .npz or .pt file)")
    file = Path(where).expanduser()
    if layout is not None:
        layout = check_choice("tensor_file", "layout", layout, ("nchw", "nhwc"))
    if not file.is_file():
        raise FileNotFoundError(f"data: no such file {str(file)!r}")
    arrays = _read(file)
    x_key, y_key = (f"x_{split}", f"y_{split}") if f"x_{split}" in arrays else ("x", "y")
    missing = [key for key in (x_key, y_key) if key not in arrays]
    if missing:
        raise ValueError(f"data: {str(file)!r} has no {' or '.join(map(repr, missing))} (it holds "
                         f"{', '.join(sorted(arrays)) or 'nothing'}); give x and y, or x_{split} and y_{split}")
    x = images_from_array(arrays[x_key], layout, f"{file.name}:{x_key}")
    y = torch.as_tensor(arrays[y_key])
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1:
        raise ValueError(f"data: {file.name}:{y_key} must be integer labels [N], got {y.dtype} {tuple(y.shape)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"data: {file.name} has {x.shape[0]} images in {x_key} but {y.shape[0]} labels in {y_key}")
    classes = arrays.get("classes")
    classes = [str(c) for c in classes.tolist()] if classes is not None else None
    try:
        return ImageData(x, y.long(), classes=classes, name=file.stem, split=split)
    except (TypeError, ValueError) as error:
        raise ValueError(f"data: {str(file)!r}: {error}") from None


def _read(file: Path) -> dict[str, Any]:
    if file.suffix.lower() == ".npz":
        import numpy as np

        try:
            with np.load(file, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except ValueError as error:  # object arrays need pickle, which is refused
            raise ValueError(f"data: cannot read {str(file)!r} without pickle: {error}") from None
    try:
        content = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - anything but plain tensors is refused
        raise ValueError(f"data: {str(file)!r} is not a dict of tensors saved with torch.save "
                         f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    if not isinstance(content, Mapping):
        raise ValueError(f"data: {str(file)!r} holds a {type(content).__name__}; save a dict {{'x': ..., 'y': ...}}")
    return dict(content)


def images_from_array(array: Any, layout: str | None, what: str) -> torch.Tensor:
    """``array`` (NumPy or tensor; layouts and dtypes of the module docstring) as float32 ``[N, C, H, W]``."""
    x = torch.as_tensor(array)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4:
        if layout is None:
            first, last = x.shape[1] in _CHANNELS, x.shape[-1] in _CHANNELS
            if first == last:
                raise ValueError(f"data: cannot tell the channel axis of {what} {tuple(x.shape)}; "
                                 "pass layout='nchw' or 'nhwc'")
            layout = "nchw" if first else "nhwc"
        if layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"data: {what} must be images [N, C, H, W], [N, H, W, C] or [N, H, W], "
                         f"got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.contiguous().float().div_(255.0)
    if not x.dtype.is_floating_point:
        raise ValueError(f"data: {what} must be uint8 in [0, 255] or floating in [0, 1], got {x.dtype}")
    return x.contiguous().float()
