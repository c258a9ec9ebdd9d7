"""Defensive distillation (Papernot et al. 2016): a student trained on a hot teacher's soft labels."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core.validation import check_number
from shieldkit.defenses.training import LoopTrainer, train


class Distillation(LoopTrainer):
    """Train a teacher at temperature ``T``, then a student on its soft labels at ``T``; deploy at ``T = 1``.

    Both networks have the caller's architecture and start from copies of the
    model given to ``fit`` (an untrained model gives Papernot et al.'s setting).
    The student's logits end up about ``T`` times larger than a normally trained
    network's, so at ``T = 1`` its softmax saturates and the gradient of the
    cross-entropy underflows to zero: FGSM- and JSMA-style attacks, which
    differentiate the softmax, fail. Nothing is gained against attacks on the
    logits themselves (Carlini and Wagner's margin loss), which is the
    documented weakness: this defence masks gradients, it does not add robustness.

    Args:
        temperature: ``T``, at least 1 (Papernot et al. use 100 on MNIST).
        **common: ``bounds``, ``seed``.

    ``fit`` takes the options of every trainer; ``epochs`` applies to the teacher
    and to the student each. Checkpoints are ``teacher.pt`` and ``student.pt``.

    Reference:
        Papernot, McDaniel, Wu, Jha, Swami. Distillation as a Defense to Adversarial
        Perturbations against Deep Neural Networks. IEEE S&P 2016.
        Carlini, Wagner. Defensive Distillation is Not Robust to Adversarial Examples. 2016.
    """

    family = "distillation"
    smoke_params: ClassVar[dict[str, Any]] = {"temperature": 10.0}

    def __init__(self, *, temperature: float = 100.0, **common):
        super().__init__(**common)
        self.temperature = check_number(self.name, "temperature", temperature, 1.0)

    def _train(self, model: nn.Module, x: Tensor, y: Tensor, options: dict) -> nn.Module:
        temperature = self.temperature
        config = self.get_params()

        def teacher_step(net: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
            return F.cross_entropy(net(xb) / temperature, yb)

        teacher = train(self.name, model, x, y, teacher_step, stage="teacher", config=config, **options)
        soft_labels = _soft_labels(teacher, x, temperature, options["batch_size"])
        del teacher

        # Soft labels go through the loop as the "labels" of each batch: their row index.
        index = torch.arange(x.shape[0])

        def student_step(net: nn.Module, xb: Tensor, rows: Tensor) -> Tensor:
            targets = soft_labels[rows.cpu()].to(xb.device)
            log_probs = F.log_softmax(net(xb) / temperature, dim=1)
            return -(targets * log_probs).sum(dim=1).mean()

        student_options = {**options, "seed": options["seed"] + 1}
        return train(self.name, copy.deepcopy(model), x, index, student_step, stage="student", config=config,
                     copy_model=False, **student_options)


@torch.no_grad()
def _soft_labels(teacher: nn.Module, x: Tensor, temperature: float, batch_size: int) -> Tensor:
    """The teacher's softmax at ``temperature`` for every training image ``[N, K]`` (on the CPU)."""
    device = next(teacher.parameters()).device
    rows = [F.softmax(teacher(x[i:i + batch_size].to(device)) / temperature, dim=1).cpu()
            for i in range(0, x.shape[0], batch_size)]
    return torch.cat(rows)
