"""Training generators: VAE (negative ELBO), WGAN-GP (Defense-GAN's defaults) and DCGAN.

:func:`train_generator` owns the loop (seeding, progress bar, checkpoints, exact
resume, a PNG grid of samples); each architecture only says how one training
step goes (:mod:`shieldkit.gan.objectives`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shieldkit.core.errors import InvalidInputError, InvalidParameterError
from shieldkit.core.seeding import seeded
from shieldkit.core.validation import check_choice, check_int, check_number
from shieldkit.gan.generators import ARCHITECTURES, Generator
from shieldkit.gan.io import (
    GENERATOR_FORMAT,
    image_grid,
    save_atomically,
    save_generator,
    write_png,
)
from shieldkit.gan.objectives import DEFAULTS, OBJECTIVES
from shieldkit.infra.progress import progress_bar, progress_line, time_left

logger = logging.getLogger(__name__)

__all__ = ["BatchStream", "train_generator"]

CHECKPOINT, GENERATOR_FILE, SAMPLES = "checkpoint.pt", "generator.pt", "samples.png"


class BatchStream:
    """An endless stream of shuffled mini-batches whose position can be saved and restored exactly."""

    def __init__(self, x: Tensor, batch_size: int, seed: int):
        self.x, self.batch_size, self.seed = x, batch_size, seed
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.x.shape[0], generator=generator)

    def __next__(self) -> Tensor:
        if self.position + self.batch_size > self.x.shape[0]:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation()
        index = self._order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self.x[index]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()


def _images_of(data: Any) -> Tensor:
    """The images of an ``ImageData``, an ``(x, y)`` pair or a tensor, checked."""
    if hasattr(data, "x") and isinstance(data.x, Tensor):
        x = data.x
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x = data[0]
    else:
        x = data
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4 or x.shape[0] == 0:
        found = f"shape {tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise InvalidInputError(f"train_generator: data must hold float images [N, C, H, W] in [0, 1], got {found}")
    if not torch.isfinite(x).all() or x.min().item() < -1e-6 or x.max().item() > 1 + 1e-6:
        raise InvalidInputError("train_generator: data images must be finite and inside [0, 1]")
    return x


def train_generator(
    arch: str,
    data: Any,
    *,
    steps: int,
    batch_size: int | None = None,
    lr: float | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int = 500,
    quiet: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
    generator_params: dict | None = None,
    samples: int = 64,
) -> Generator:
    """Train a generator on images and return it in eval mode.

    Args:
        arch: ``"vae"`` (784-400-20 VAE, Adam 1e-3, batch 128), ``"wgan_gp"`` (the
            Defense-GAN generator and critic: 5 critic steps per generator step,
            gradient penalty 10, Adam 1e-4 with betas (0.5, 0.9), batch 50) or
            ``"dcgan"`` (non-saturating GAN loss, Adam 2e-4 with betas (0.5, 0.999), batch 64).
        data: ``ImageData``, an ``(x, y)`` pair or images ``[N, C, H, W]`` in ``[0, 1]``.
        steps: generator updates in total (a resumed run continues up to ``steps``).
        batch_size, lr: override the architecture's defaults.
        out: folder for ``checkpoint.pt`` (full training state), ``generator.pt``
            (load with :func:`shieldkit.gan.load_generator`) and ``samples.png``.
        resume: continue from ``out/checkpoint.pt`` when it exists; the same
            settings give the same weights as an uninterrupted run.
        checkpoint_every: save a checkpoint every this many steps (and at the end).
        quiet: hide the progress bar, drawn on a terminal only; elsewhere a line every tenth of the steps
            (losses, time left) goes to the ``shieldkit.infra.progress`` logger unless ``quiet`` (at INFO either
            way).
        seed: fixes the initial weights, the batch order and all training noise.
        device: where to train (``None``: CPU).
        generator_params: constructor arguments of the generator (``latent_dim``, ``hidden``, ...);
            the image shape is taken from ``data``.
        samples: images in the sample grid.

    Returns:
        the trained generator (a :class:`~shieldkit.gan.generators.Generator`), in eval mode.
    """
    owner = "train_generator"
    check_choice(owner, "arch", arch, tuple(ARCHITECTURES))
    check_int(owner, "steps", steps, minimum=1)
    check_int(owner, "checkpoint_every", checkpoint_every, minimum=1)
    check_int(owner, "seed", seed, minimum=0)
    check_int(owner, "samples", samples, minimum=1)
    hyper = dict(DEFAULTS[arch])
    if batch_size is not None:
        hyper["batch_size"] = check_int(owner, "batch_size", batch_size, minimum=1)
    if lr is not None:
        hyper["lr"] = check_number(owner, "lr", lr, 0.0, strict=True)
    if resume and out is None:
        raise InvalidParameterError(f"{owner}: resume=True needs out (the folder holding checkpoint.pt)")
    if generator_params is not None and not isinstance(generator_params, dict):
        raise InvalidParameterError(f"{owner}: generator_params must be a dict, got {type(generator_params).__name__}")
    x = _images_of(data)
    device = torch.device(device) if device is not None else torch.device("cpu")
    out = Path(out) if out is not None else None

    with seeded(seed, device):
        objective = OBJECTIVES[arch](x.shape[1:], hyper, generator_params or {}, device)
        stream = BatchStream(x, hyper["batch_size"], seed)
        step = 0
        path = out / CHECKPOINT if out is not None else None
        if resume and path is not None and path.is_file():
            step = _load_checkpoint(path, objective, stream, arch, hyper)
            logger.info("%s: resuming %s from step %d (%s)", owner, arch, step, path)
        generator, first = objective.generator, step
        started = time.perf_counter()
        progress = progress_bar(range(first, steps), total=steps, initial=first, desc=f"train {arch}", quiet=quiet,
                                leave=True)
        for step in progress:
            done = step + 1
            losses = objective.step(lambda: next(stream).to(device))
            if not all(map(math.isfinite, losses.values())):
                raise FloatingPointError(f"{owner}: {arch} losses became {losses} at step {done}; lower lr")
            progress.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
            if done % max(1, steps // 10) == 0 or done == steps:
                left = time_left(time.perf_counter() - started, done - first, steps - first)
                progress_line(logger, quiet, "%s %s step %d/%d: %s (%.1f s%s)", owner, arch, done, steps,
                              ", ".join(f"{k} {v:.4g}" for k, v in losses.items()), time.perf_counter() - started,
                              f", {left}" if left else "")
            if path is not None and (done % checkpoint_every == 0 or done == steps):
                _save_checkpoint(path, objective, stream, arch, hyper, done)
        progress.close()
        generator.eval()
        if out is not None:
            save_generator(generator, out / GENERATOR_FILE, steps=max(first, steps))
            grid_latents = torch.randn(samples, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                images = generator(grid_latents.to(device)).cpu()
            write_png(image_grid(images, nrow=int(samples**0.5 + 0.5)), out / SAMPLES)
    return generator


def _save_checkpoint(path: Path, objective, stream: BatchStream, arch: str, hyper: dict, step: int) -> None:
    state = {
        "format": GENERATOR_FORMAT,
        "arch": arch,
        "config": dict(objective.generator.config),
        "training": dict(hyper),
        "step": step,
        "modules": {name: module.state_dict() for name, module in objective.modules.items()},
        "optimizers": {name: opt.state_dict() for name, opt in objective.optimizers.items()},
        "stream": stream.state_dict(),
        "rng": torch.random.get_rng_state(),
    }
    save_atomically(state, path)


def _load_checkpoint(path: Path, objective, stream: BatchStream, arch: str, hyper: dict) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != GENERATOR_FORMAT or "modules" not in state:
        raise InvalidParameterError(f"train_generator: {path} is not a checkpoint written by train_generator")
    wanted = {"arch": arch, "config": dict(objective.generator.config), "training": dict(hyper)}
    saved = {key: state.get(key) for key in wanted}
    if saved != wanted:
        changed = [key for key in wanted if saved[key] != wanted[key]]
        raise InvalidParameterError(
            f"train_generator: cannot resume from {path}: it was written with other settings "
            f"({', '.join(changed)}: {[saved[k] for k in changed]}); use another out folder or the same settings"
        )
    for name, module in objective.modules.items():
        module.load_state_dict(state["modules"][name])
    for name, optimizer in objective.optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    stream.load_state_dict(state["stream"])
    torch.random.set_rng_state(state["rng"])
    return int(state["step"])
