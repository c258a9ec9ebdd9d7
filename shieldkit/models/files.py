"""A user's model saved to a file: recognising such an argument and loading it.

``shieldkit evaluate --model`` and ``shieldkit train --model`` take either a
registered model name or a file: a whole module saved with ``torch.save(model,
path)`` or a TorchScript file (``.ts``).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

#: File endings that mark a ``--model`` argument as a file rather than a registered name.
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ts")


def looks_like_model_file(value: str | os.PathLike) -> bool:
    """Whether a ``--model`` argument names a file (by its ending, a folder part, or because it exists)."""
    text = str(value)
    return Path(text).suffix in MODEL_FILE_SUFFIXES or "/" in text or Path(text).exists()


def load_model_file(path: str | os.PathLike, what: str = "--model") -> nn.Module:
    """The module saved in ``path``, in eval mode, or a one-line ``ValueError`` naming ``what``."""
    import torch

    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: no such file {path!r}")
    try:
        model = torch.jit.load(path) if path.endswith(".ts") else torch.load(path, map_location="cpu",
                                                                             weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is a usage error
        raise ValueError(f"{what}: cannot load {path!r}: {error}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{what}: {path!r} holds a {type(model).__name__}, not a model; save the whole "
                         "module with torch.save(model, path)")
    return model.eval()
