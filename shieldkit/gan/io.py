"""Saving and loading generators, and sample grids as PNG files (a tiny zlib writer, no imaging library)."""

from __future__ import annotations

import math
import os
import struct
import tempfile
import zlib
from pathlib import Path

import torch
from torch import Tensor

from shieldkit.core.errors import InvalidParameterError
from shieldkit.gan.generators import Generator, build_generator

__all__ = ["image_grid", "load_generator", "save_generator", "save_atomically", "write_png"]

GENERATOR_FORMAT = 1


def save_atomically(state: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp:
            torch.save(state, tmp)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def save_generator(generator: Generator, path: str | os.PathLike, **extra: object) -> Path:
    """Save a generator's architecture, configuration and weights (reload with :func:`load_generator`)."""
    if not isinstance(generator, Generator) or not generator.arch:
        raise InvalidParameterError(
            f"save_generator: expected a shieldkit.gan generator, got {type(generator).__name__}"
        )
    state = {"format": GENERATOR_FORMAT, "arch": generator.arch, "config": dict(generator.config),
             "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()}, **extra}
    return save_atomically(state, path)


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Generator:
    """A generator saved by :func:`save_generator` or a ``train-generator`` checkpoint, in eval mode.

    Args:
        path: ``generator.pt``, ``checkpoint.pt`` or the output folder of
            ``shieldkit train-generator`` (its ``generator.pt`` is loaded).
        map_location: where to put the weights.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "generator.pt"
    if not path.is_file():
        raise FileNotFoundError(f"load_generator: no generator file at {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != GENERATOR_FORMAT or "arch" not in state:
        raise InvalidParameterError(f"load_generator: {path} is not a generator file written by shieldkit")
    generator = build_generator(state["arch"], state["config"])
    weights = state["state_dict"] if "state_dict" in state else state["modules"]["generator"]
    generator.load_state_dict(weights)
    return generator.to(map_location).eval()


def image_grid(images: Tensor, nrow: int = 8, padding: int = 2) -> Tensor:
    """Tile ``[N, C, H, W]`` images in ``[0, 1]`` into one ``[C, rows*(H+p)+p, nrow*(W+p)+p]`` image."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise InvalidParameterError(f"image_grid: images must be a tensor [N, C, H, W], got {type(images).__name__}")
    count, channels, height, width = images.shape
    nrow = max(1, min(nrow, count))
    rows = math.ceil(count / nrow)
    grid = images.new_ones(channels, rows * (height + padding) + padding, nrow * (width + padding) + padding)
    for index in range(count):
        top = padding + (index // nrow) * (height + padding)
        left = padding + (index % nrow) * (width + padding)
        grid[:, top:top + height, left:left + width] = images[index]
    return grid


def write_png(image: Tensor, path: str | os.PathLike) -> Path:
    """Write a ``[C, H, W]`` image in ``[0, 1]`` (C = 1 grey, 3 RGB) as an 8-bit PNG."""
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise InvalidParameterError(f"write_png: image must be [C, H, W] with C = 1 or 3, got {shape}")
    channels, height, width = image.shape
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu()
    rows = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), pixels.reshape(height, width * channels)], dim=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    payload = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.numpy().tobytes(), 9))
    payload += chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path
