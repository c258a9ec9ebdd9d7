"""``examples/``: the first few samples' clean and adversarial images, written by the runner, read by the report.

One file per unit of work that attacked any of the first ``examples`` samples,
named by a hash of the unit's key. A file is written (atomically) before the
unit's row, so a resumed row always has its images. ``clean/images.pt`` holds
those samples' clean images and labels, so the report is drawn from the run
folder alone.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from shieldkit.models.files import save_atomically

FOLDER = "examples"


def save_examples(out_dir: Path, key: str, indices: list[int], x_adv: Tensor, predictions: list[int]) -> str:
    """Store the images of ``indices`` (rows of ``x_adv``) for the unit ``key``; returns the file name."""
    name = hashlib.sha256(key.encode()).hexdigest()[:20] + ".pt"
    folder = Path(out_dir) / FOLDER
    folder.mkdir(exist_ok=True)
    record = {"indices": list(indices), "x_adv": x_adv.detach().cpu().clone(), "pred": list(predictions)}
    save_atomically(record, folder / name)  # a full disk is an OSError here, not torch's zip-writer error
    return name


#: the first samples' clean images, in a folder of their own beside the units' files
CLEAN = Path("clean") / "images.pt"


def save_clean_examples(out_dir: Path, x: Tensor, y: Tensor) -> None:
    """Store the clean images ``x`` and labels ``y`` of the first samples (the ones the report shows)."""
    path = Path(out_dir) / FOLDER / CLEAN
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomically({"x": x.detach().cpu().clone(), "y": y.detach().cpu().clone()}, path)


def load_clean_examples(out_dir: Path) -> tuple[Tensor, Tensor] | None:
    """The first samples' clean images and labels, or ``None`` when the run stored none."""
    path = Path(out_dir) / FOLDER / CLEAN
    if not path.is_file():
        return None
    stored = torch.load(path, map_location="cpu", weights_only=True)
    return stored["x"], stored["y"]


@dataclass
class StoredExamples:
    """One file's content: sample indices, their adversarial images ``[k, C, H, W]`` and predictions."""

    indices: list[int]
    x_adv: Tensor
    pred: list[int]


def load_examples(out_dir: Path, name: str) -> StoredExamples:
    """The content of one file (read with ``weights_only``: tensors and lists, no code)."""
    stored = torch.load(Path(out_dir) / FOLDER / name, map_location="cpu", weights_only=True)
    return StoredExamples(list(stored["indices"]), stored["x_adv"], list(stored["pred"]))


def read_example_files(out_dir: Path, names: list[str]) -> dict[str, bytes]:
    """The bytes of the named files that exist (a rank sends its own to rank 0, whose disk may differ)."""
    folder = Path(out_dir) / FOLDER
    return {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}


def write_example_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write files read by :func:`read_example_files` elsewhere, keeping any already here."""
    folder = Path(out_dir) / FOLDER
    for name, content in files.items():
        if not (folder / name).is_file():
            folder.mkdir(exist_ok=True)
            temporary = folder / (name + ".tmp")
            temporary.write_bytes(content)
            os.replace(temporary, folder / name)
