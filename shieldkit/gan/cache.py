"""Trained generators on demand: train once, cache on disk, and resolve a defence's ``generator=`` argument."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from torch import Tensor, nn

from shieldkit.core.errors import InvalidInputError, InvalidParameterError
from shieldkit.core.seeding import seeded
from shieldkit.gan.generators import VAE, Generator
from shieldkit.gan.io import load_generator, save_generator

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_STEPS", "pretrained_generator", "resolve_generator", "smoke_generator"]

# Bump when training or the file layout changes, so stale weights are never reused.
_CACHE_FORMAT = 2
#: generator updates of a cached generator when not given (VAE: about 10 epochs of MNIST).
DEFAULT_STEPS = {"vae": 5000, "wgan_gp": 20000, "dcgan": 10000}


def pretrained_generator(
    arch: str = "vae",
    data: str = "mnist",
    *,
    steps: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    quiet: bool = True,
    root: str | os.PathLike | None = None,
) -> Generator:
    """A generator trained on a dataset's train split, cached on disk (like ``shieldkit.models.pretrained``).

    The first call trains (see :func:`shieldkit.gan.train_generator`) and saves the
    weights under ``<cache_dir>/generators/``, keyed by every argument that changes
    them; later calls load them. A damaged file is retrained and replaced.

    Args:
        arch: ``"vae"`` (seconds to a minute on a CPU), ``"wgan_gp"`` or ``"dcgan"`` (GPU advised).
        data: a dataset name (``"mnist"``, ``"fashion_mnist"``, ...).
        steps: generator updates (``None``: :data:`DEFAULT_STEPS`).
        cache_dir: the cache folder (``None``: ``$SHIELDKIT_CACHE``, else ``~/.cache/shieldkit``).
        seed: fixes the weights, batch order and training noise.
        quiet: hide the progress bar.
        root: the data folder handed to the dataset loader.

    Returns:
        the generator on the CPU, in eval mode.
    """
    from shieldkit.data import load
    from shieldkit.gan.train import train_generator
    from shieldkit.models.cache import cache_root

    steps = DEFAULT_STEPS.get(arch, 0) if steps is None else steps
    key = {"format": _CACHE_FORMAT, "arch": arch, "data": data.strip().lower().replace("-", "_"),
           "steps": steps, "seed": seed}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root(cache_dir) / "generators" / f"{arch}-{key['data']}-{steps}-s{seed}-{digest}.pt"
    if path.is_file():
        try:
            return load_generator(path)
        except Exception as error:  # a damaged or outdated file: train again and overwrite it
            logger.warning("pretrained_generator: cannot load %s (%s); training again", path, error)
    logger.warning("pretrained_generator: training a %s on %s for %d steps (cached in %s)", arch, data, steps, path)
    generator = train_generator(arch, load(data, split="train", root=root), steps=steps, seed=seed, quiet=quiet)
    save_generator(generator, path)
    return generator.eval()


def resolve_generator(owner: str, spec: object, x: Tensor | None = None) -> nn.Module:
    """The generator a ``generator=`` argument names, checked against images ``x``.

    ``spec`` is a generator module (anything with ``latent_dim``), a path to a file
    or folder written by ``shieldkit train-generator`` / :func:`save_generator`, or
    ``None``: the cached MNIST VAE (trained on first use), for ``1 x 28 x 28`` images only.
    """
    from shieldkit.gan.projection import check_generator

    if spec is None:
        if x is not None and tuple(x.shape[1:]) != (1, 28, 28):
            raise InvalidInputError(
                f"{owner}: the default generator is a VAE for 1x28x28 MNIST images, but x has shape "
                f"{'x'.join(map(str, x.shape[1:]))}; pass generator= (a generator module, e.g. from "
                "shieldkit.gan.train_generator, or the path of a `shieldkit train-generator` output)"
            )
        return pretrained_generator("vae", "mnist")
    if isinstance(spec, (str, os.PathLike)):
        return check_generator(owner, load_generator(spec), x)
    return check_generator(owner, spec, x)


def check_generator_spec(owner: str, spec: object) -> object:
    """Validate a ``generator=`` argument at construction (before any compute)."""
    if spec is None or isinstance(spec, nn.Module):
        if spec is not None and not isinstance(getattr(spec, "latent_dim", None), int):
            raise InvalidParameterError(
                f"{owner}: generator must have an int attribute latent_dim, got {type(spec).__name__}"
            )
        return spec
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.exists():
            raise InvalidParameterError(f"{owner}: generator={str(spec)!r}: no such file or folder")
        return spec
    raise InvalidParameterError(
        f"{owner}: generator must be None, a generator module or a path to a saved generator, "
        f"got {type(spec).__name__}"
    )


def smoke_generator(image_shape: tuple[int, int, int] = (1, 16, 16)) -> VAE:
    """A tiny untrained VAE with fixed weights: the generator of the quick conformance runs."""
    with seeded(0):
        return VAE(image_shape, hidden=32, latent_dim=4).eval()
