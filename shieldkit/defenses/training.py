"""The training loop the trainer defences share: seeding, progress bar, a checkpoint per epoch, resume.

A trainer defence only says how one mini-batch turns into a loss (``step``); this
module owns everything else, so that adversarial training, logit pairing,
distillation and feature denoising behave the same way: they train a deep copy of
the caller's model, are reproducible under ``seed`` (shuffling, dropout and any
random start of the attack), save ``<checkpoint_dir>/<name>.pt`` after every epoch
and, with ``resume=True``, continue from it exactly where they stopped.

Under ``torchrun`` (an initialised process group of more than one process) the
same loop is data-parallel: the training forwards go through
DistributedDataParallel (gradients averaged across ranks), each rank draws its
share of every epoch from a DistributedSampler, and only rank 0 writes
checkpoints (a resume reads rank 0's and hands it to every rank).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from shieldkit.core.attack import Attack
from shieldkit.core.defense import TrainerDefense
from shieldkit.core.errors import InvalidInputError, InvalidModelError, InvalidParameterError
from shieldkit.core.guard import ModelStateGuard
from shieldkit.core.seeding import seeded
from shieldkit.core.validation import check_bool, check_int, check_number
from shieldkit.infra import distributed
from shieldkit.infra.progress import progress_bar, progress_line, time_left

logger = logging.getLogger(__name__)

#: the loss of one mini-batch: ``step(model, x, y) -> scalar``; the model is in training mode.
Step = Callable[[nn.Module, Tensor, Tensor], Tensor]

_CHECKPOINT_FORMAT = 1


def as_training_data(owner: str, train_data: Any, bounds: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """``(x, y)`` from an ``ImageData`` or an ``(x, y)`` pair, checked before any training."""
    if hasattr(train_data, "x") and hasattr(train_data, "y"):
        x, y = train_data.x, train_data.y
    elif isinstance(train_data, (tuple, list)) and len(train_data) == 2:
        x, y = train_data
    else:
        raise InvalidInputError(
            f"{owner}.fit: train_data must be a shieldkit.data.ImageData or an (x, y) pair of tensors, "
            f"got {type(train_data).__name__}"
        )
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
        found = f"shape {tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise InvalidInputError(f"{owner}.fit: train_data images must be a float tensor [N, C, H, W], got {found}")
    if x.shape[0] == 0:
        raise InvalidInputError(f"{owner}.fit: train_data is empty (0 samples)")
    low, high = bounds
    if not torch.isfinite(x).all() or x.min().item() < low - 1e-6 or x.max().item() > high + 1e-6:
        raise InvalidInputError(f"{owner}.fit: train_data images must be finite and inside bounds {bounds}")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
        found = f"shape {tuple(y.shape)} {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        raise InvalidInputError(
            f"{owner}.fit: train_data labels must be an integer tensor [{x.shape[0]}] (one per image), got {found}"
        )
    if y.min().item() < 0:
        raise InvalidInputError(f"{owner}.fit: train_data labels must be >= 0, found {y.min().item()}")
    return x, y.long()


def build_attack(owner: str, attack: str | Attack, eps: float | None, attack_params: dict | None) -> Attack:
    """The attack a trainer crafts its examples with, built (and so validated) at construction.

    An unknown name raises :class:`~shieldkit.core.errors.UnknownNameError`, a bad
    parameter :class:`~shieldkit.core.errors.InvalidParameterError`, before any compute.
    """
    from shieldkit.plugins.registry import create_attack  # implementations sit above the registry

    if attack_params is not None and not isinstance(attack_params, dict):
        raise InvalidParameterError(f"{owner}: attack_params must be a dict, got {type(attack_params).__name__}")
    params = dict(attack_params or {})
    if isinstance(attack, Attack):
        if params:
            raise InvalidParameterError(f"{owner}: give attack_params only with an attack name, not an Attack instance")
        return attack
    if not isinstance(attack, str):
        raise InvalidParameterError(f"{owner}: attack must be a registered attack name or an Attack, got {attack!r}")
    if eps is not None:
        check_number(owner, "eps", eps, 0.0)
        if "eps" in params and params["eps"] != eps:
            raise InvalidParameterError(f"{owner}: eps={eps!r} and attack_params['eps']={params['eps']!r} disagree")
        params["eps"] = eps
    built = create_attack(attack, **params)
    if built.access != "gradient" and built.eps is None:
        logger.info("%s: training against %s, which has no eps budget", owner, built.name)
    return built


def check_fit_options(owner: str, epochs, batch_size, lr, checkpoint_dir, resume, quiet, seed) -> None:
    check_int(owner, "epochs", epochs, minimum=1)
    check_int(owner, "batch_size", batch_size, minimum=1)
    check_number(owner, "lr", lr, 0.0, strict=True)
    check_int(owner, "seed", seed, minimum=0)
    check_bool(owner, "resume", resume)
    check_bool(owner, "quiet", quiet)
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise InvalidParameterError(f"{owner}: checkpoint_dir must be a path or None, got {checkpoint_dir!r}")
    if resume and checkpoint_dir is None:
        raise InvalidParameterError(f"{owner}: resume=True needs checkpoint_dir (where the checkpoints are)")


def train(
    owner: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    step: Step,
    *,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    quiet: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
    stage: str = "model",
    config: dict | None = None,
    copy_model: bool = True,
) -> nn.Module:
    """Train a copy of ``model`` with Adam on ``step``'s loss; return it in eval mode.

    Args:
        owner: the defence's name (messages, logs, checkpoint contents).
        model: the starting point; never modified (a deep copy is trained) unless ``copy_model=False``.
        x, y: training images and labels.
        step: ``step(model, x_batch, y_batch) -> loss``.
        epochs, batch_size, lr: the usual.
        checkpoint_dir: save ``<stage>.pt`` here after every epoch (model, optimiser, RNG state).
        resume: continue from ``<checkpoint_dir>/<stage>.pt`` (a finished run returns at once).
        quiet: hide the progress bar, drawn on a terminal only; elsewhere each epoch's line (loss, time left)
            goes to the ``shieldkit.infra.progress`` logger unless ``quiet`` (at INFO either way).
        seed: fixes the sample order, dropout masks and any randomness in ``step``.
        device: where to train; ``None`` keeps the model's device.
        stage: the checkpoint's name (distillation trains a ``teacher`` then a ``student``).
        config: the defence's parameters, stored in the checkpoint; resuming with other ones is refused.

    Under DDP ``batch_size`` is per process (the global batch is ``world_size`` times larger).

    Returns:
        The trained model, in eval mode, on ``device``.
    """
    check_fit_options(owner, epochs, batch_size, lr, checkpoint_dir, resume, quiet, seed)
    trained = copy.deepcopy(model) if copy_model else model
    if device is None:
        tensors = list(trained.parameters()) + list(trained.buffers())
        device = tensors[0].device if tensors else torch.device("cpu")
    device = torch.device(device)
    trained.to(device)
    parameters = [p for p in trained.parameters() if p.requires_grad]
    if not parameters:
        raise InvalidParameterError(f"{owner}.fit: the model has no trainable parameters")
    optimizer = torch.optim.Adam(parameters, lr=lr)
    config = {"owner": owner, "stage": stage, "batch_size": batch_size, "lr": lr, "seed": seed, **(config or {})}
    path = Path(checkpoint_dir) / f"{stage}.pt" if checkpoint_dir is not None else None

    with seeded(seed, device):
        first_epoch = 1
        if resume and path is not None and distributed.broadcast_object(path.is_file()):
            first_epoch = _load_checkpoint(path, trained, optimizer, config, owner) + 1
            logger.info("%s: resuming %s from epoch %d (%s)", owner, stage, first_epoch, path)
        elif resume:
            logger.info("%s: no checkpoint at %s, training %s from the start", owner, path, stage)
        network = distributed.training_network(trained)
        loop_started = time.perf_counter()
        hidden = quiet or not distributed.is_main()  # one bar (or line per epoch) per run: rank 0's
        for epoch in range(first_epoch, epochs + 1):
            trained.train()
            started = time.perf_counter()
            order = distributed.epoch_order(x.shape[0], seed * 100003, epoch)
            count = order.numel()
            total = 0.0
            batches = range(0, count, batch_size)
            progress = progress_bar(batches, total=math.ceil(count / batch_size),
                                    desc=f"{owner} {stage} {epoch}/{epochs}", quiet=hidden)
            for start in progress:
                index = order[start:start + batch_size]
                xb, yb = x[index].to(device), y[index].to(device)
                loss = step(network, xb, yb)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{owner}.fit: the {stage}'s loss became {loss.item()} in epoch {epoch}; "
                                             "lower lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * index.numel()
                progress.set_postfix(loss=f"{loss.item():.4f}")
            left = time_left(time.perf_counter() - loop_started, epoch - first_epoch + 1, epochs - first_epoch + 1)
            progress_line(logger, hidden, "%s %s epoch %d/%d: loss %.4f, %.1f s%s", owner, stage, epoch, epochs,
                          total / count, time.perf_counter() - started, f", {left}" if left else "")
            if path is not None and distributed.is_main():
                _save_checkpoint(path, trained, optimizer, config, epoch)
    distributed.broadcast_buffers(trained)
    trained.eval()
    return trained


def _save_checkpoint(path: Path, model: nn.Module, optimizer, config: dict, epoch: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": _CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": _plain(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": torch.random.get_rng_state(),
    }
    from shieldkit.models.files import save_atomically

    save_atomically(state, path)  # an interrupted save never leaves a half-written checkpoint


def _load_checkpoint(path: Path, model: nn.Module, optimizer, config: dict, owner: str) -> int:
    # Under DDP only rank 0 reads the file (other nodes need not share the disk) and hands the state on.
    # Tensors, numbers and strings only (the config is stored as plain values): read without unpickling code.
    state = distributed.broadcast_object(torch.load(path, map_location="cpu", weights_only=True)
                                         if distributed.is_main() else None)
    if state.get("format") != _CHECKPOINT_FORMAT:
        raise InvalidParameterError(f"{owner}.fit: {path} is not a checkpoint this version of shieldkit wrote")
    saved, wanted = state["config"], _plain(config)
    if saved != wanted:
        changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise InvalidParameterError(
            f"{owner}.fit: cannot resume from {path}: it was written with other settings ({', '.join(changed)}); "
            "use another checkpoint_dir or the same settings"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.random.set_rng_state(state["rng"])
    return int(state["epoch"])


def _plain(config: dict) -> dict:
    """The config with values reduced to comparable builtins (attacks by their repr)."""
    plain = {}
    for key, value in config.items():
        plain[key] = value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)
    return plain


FIT_OPTIONS = ("epochs", "batch_size", "lr", "checkpoint_dir", "resume", "quiet", "seed", "device")


class LoopTrainer(TrainerDefense):
    """A trainer defence driven by :func:`train`: subclasses implement ``_train(model, x, y, options)``.

    ``fit(model, train_data, *, epochs=1, batch_size=128, lr=1e-3, checkpoint_dir=None,
    resume=False, quiet=True, seed=0, device=None)`` checks every option and the data
    before any compute, trains a deep copy of ``model`` and returns it in eval mode.
    """

    smoke_fit_options: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 4}
    fit_options: ClassVar[tuple[str, ...]] = FIT_OPTIONS

    def _fit(self, model: nn.Module, train_data: Any, **options: Any) -> nn.Module:
        merged = {"epochs": 1, "batch_size": 128, "lr": 1e-3, "checkpoint_dir": None, "resume": False,
                  "quiet": True, "seed": 0, "device": None, **options}
        check_fit_options(self.name, *(merged[k] for k in FIT_OPTIONS[:-1]))
        x, y = as_training_data(self.name, train_data, self.bounds)
        _check_model_output(self.name, model, x, y)
        return self._train(model, x, y, merged)

    def _train(self, model: nn.Module, x: Tensor, y: Tensor, options: dict) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement _train")


class AttackTrainer(LoopTrainer):
    """A loop trainer whose loss needs adversarial examples, crafted by ``attack_``.

    ``attack``, ``eps`` and ``attack_params`` are kept as given (they are the
    defence's parameters); ``attack_`` is built from them at construction, so an
    unknown name or a bad parameter fails before any training.
    """

    def _set_attack(self, attack: str | Attack, eps: float | None, attack_params: dict | None) -> None:
        self.attack, self.eps, self.attack_params = attack, eps, attack_params
        self.attack_ = build_attack(self.name, attack, eps, attack_params)


def _check_model_output(owner: str, model: nn.Module, x: Tensor, y: Tensor) -> None:
    """One forward pass on two samples, so a model that does not fit the data fails clearly and early."""
    probe = x[:2]
    tensors = list(model.parameters()) + list(model.buffers())
    if tensors:
        probe = probe.to(device=tensors[0].device)
    with ModelStateGuard(model), torch.no_grad():
        logits = model(probe)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != probe.shape[0]:
        found = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InvalidModelError(f"{owner}.fit: the model must return logits [B, K], got {found}")
    if int(y.max()) >= logits.shape[1]:
        raise InvalidInputError(
            f"{owner}.fit: train_data has label {int(y.max())} but the model has only {logits.shape[1]} outputs"
        )
