"""``pretrained``: reference classifiers trained once, then loaded from a disk cache."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from shieldkit.core.seeding import seeded
from shieldkit.data.imagedata import ImageData
from shieldkit.infra.progress import progress_line
from shieldkit.models import training

logger = logging.getLogger(__name__)

__all__ = ["cache_root", "pretrained"]

# Bump when training or the cache layout changes, so stale weights are never reused.
_CACHE_FORMAT = 1
_BATCH_SIZE = 128
_LR = 1e-3


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$SHIELDKIT_CACHE``, else ``~/.cache/shieldkit``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get("SHIELDKIT_CACHE")
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "shieldkit"


def pretrained(
    name: str = "mnist_cnn",
    data: str = "mnist",
    *,
    epochs: int = 1,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    quiet: bool = True,
    n_train: int | None = None,
    root: str | os.PathLike | None = None,
) -> nn.Module:
    """A reference classifier trained on a dataset's train split, cached on disk.

    The first call trains (Adam, lr 1e-3, batch 128) and saves the weights under
    ``<cache_dir>/models/``, keyed by every argument that changes them; later calls
    with the same arguments load them in well under a second. The file is written
    to a temporary name and renamed, so an interrupted run never leaves a corrupt
    cache; an unreadable cache file is retrained and replaced.

    Args:
        name: a model factory (``"mnist_cnn"``, ``"mlp"``, ``"tiny_cnn"``; another
            registered model is built with its defaults). Channels, image size and
            class count are taken from the dataset.
        data: a dataset name (``"mnist"``, ``"fashion-mnist"``, ``"digits"``, ...).
        epochs: training epochs, at least 1.
        cache_dir: the cache folder (``None``: ``$SHIELDKIT_CACHE``, else ``~/.cache/shieldkit``).
        seed: fixes the initial weights, the training subset and the sample order.
        quiet: hide the training's progress: a bar on a terminal, elsewhere a line per epoch
            (:func:`~shieldkit.models.training.fit_classifier`).
        n_train: train on a random subset of this many samples (``None``: all).
        root: the data folder handed to the dataset loader.

    Returns:
        The trained model on the CPU, in eval mode.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"pretrained: epochs must be an int >= 1, got {epochs!r}")
    if n_train is not None and (
        isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1
    ):
        raise ValueError(f"pretrained: n_train must be None or an int >= 1, got {n_train!r}")
    if not isinstance(name, str) or not isinstance(data, str):
        raise TypeError(
            f"pretrained: name and data must be strings, got {type(name).__name__} and {type(data).__name__}"
        )
    data_name = data.strip().lower().replace("-", "_")
    train_data = _load_train_split(data_name, root)
    if n_train is not None:
        train_data = train_data.subset(n_train, seed=seed)

    build = _model_builder(name, train_data)
    key = {
        "format": _CACHE_FORMAT,
        "model": name,
        "model_params": build.params,
        "data": data_name,
        "epochs": epochs,
        "seed": seed,
        "n_train": n_train,
        "batch_size": _BATCH_SIZE,
        "lr": _LR,
    }
    path = _cache_path(cache_root(cache_dir), key)

    with seeded(seed):  # the initial weights depend on the seed only
        model = build()
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            logger.info("pretrained %s on %s: loaded %s", name, data_name, path)
            return model.eval()
        except Exception as error:  # a damaged or outdated file: retrain and overwrite it
            logger.warning("pretrained: cannot load %s (%s); training again", path, error)
            with seeded(seed):
                model = build()

    # with the epochs' lines where they show (a log): what is training, and why this run takes longer
    progress_line(logger, quiet, "pretrained %s on %s: training %d epoch(s) on %d samples (cached in %s)", name,
                  data_name, epochs, len(train_data), path)
    model = training.fit_classifier(
        model,
        train_data,
        epochs=epochs,
        batch_size=_BATCH_SIZE,
        lr=_LR,
        seed=seed,
        device="cpu",
        quiet=quiet,
    )
    _save_atomically(model.state_dict(), path)
    logger.info("pretrained %s on %s: saved %s", name, data_name, path)
    return model.eval()


def _load_train_split(data_name: str, root) -> ImageData:
    """The train split; native datasets directly, anything else through the registry."""
    from shieldkit.data import DATASETS, load

    native = {getattr(loader, "family", loader.__name__): loader for loader in DATASETS}
    if data_name in native:
        return native[data_name](split="train", root=root)
    return load(data_name, split="train", root=root)


class _Builder:
    """Builds the model sized for the data; ``params`` is what goes into the cache key."""

    def __init__(self, name: str, factory, params: dict):
        self.name, self.factory, self.params = name, factory, params

    def __call__(self) -> nn.Module:
        return self.factory(**self.params)


def _model_builder(name: str, data: ImageData) -> _Builder:
    from shieldkit.models.zoo import MODELS

    native = {getattr(factory, "family", factory.__name__): factory for factory in MODELS}
    channels, height, width = data.shape
    if name in native:
        factory = native[name]
        accepted = inspect.signature(factory).parameters
        sized = {
            "in_channels": channels,
            "num_classes": data.num_classes,
            "input_size": height,
            "in_features": channels * height * width,
        }
        if "input_size" in accepted and height != width:
            raise ValueError(
                f"pretrained: {name} needs square images, {data.name} has {height}x{width}"
            )
        return _Builder(name, factory, {k: v for k, v in sized.items() if k in accepted})
    try:
        from shieldkit.plugins.registry import create_model
    except ImportError as error:
        raise ValueError(
            f"pretrained: unknown model {name!r}; built-in ones are {sorted(native)}"
        ) from error
    return _Builder(name, lambda: create_model(name), {})


def _cache_path(root: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    n_label = "all" if key["n_train"] is None else str(key["n_train"])
    stem = f"{key['model']}-{key['data']}-e{key['epochs']}-s{key['seed']}-n{n_label}-{digest}"
    return root / "models" / f"{stem}.pt"


def _save_atomically(state: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename over ``path`` (a full disk is an OSError)."""
    from shieldkit.models.files import save_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(state, path)
