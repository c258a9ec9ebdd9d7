"""Expectation over Transformation for an opaque randomised forward.

Reference:
    Athalye, Engstrom, Ilyas, Kwok. Synthesizing Robust Adversarial Examples. ICML 2018.
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from shieldkit.core.eot import eot_average
from shieldkit.core.validation import check_int, check_number
from shieldkit.escalation.view import EscalationView

#: The relative noise the averaged gradient is brought down to, and the most draws spent on it.
TARGET_NOISE = 0.25
MAX_DRAWS = 32


def eot_draws(gradient_noise: float | None, *, target: float = TARGET_NOISE, cap: int = MAX_DRAWS) -> int:
    """The number of draws to average so that the averaged gradient's relative noise is at most ``target``.

    ``gradient_noise`` is the relative noise of one draw's gradient,
    ``E||g - E g|| / ||E g||`` (what the diagnosis measures over repeated
    backward passes). Averaging ``n`` independent draws divides it by ``sqrt(n)``,
    so ``n = ceil((gradient_noise / target)^2)``, between 1 and ``cap``: beyond a
    few tens of draws an attack is better served by more steps, and a defence whose
    gradient is that noisy is handed to smoothing or the score-based attack too.
    ``None`` (not measured) gives ``cap // 4``, a middle ground.
    """
    check_number("eot_draws", "target", target, 0.0, strict=True)
    check_int("eot_draws", "cap", cap, minimum=1)
    if gradient_noise is None:
        return max(1, cap // 4)
    check_number("eot_draws", "gradient_noise", gradient_noise, 0.0)
    return int(min(cap, max(1, math.ceil((gradient_noise / target) ** 2))))


class EOTView(EscalationView):
    """The model's output averaged over ``draws`` forward passes, each with its own randomness.

    Each draw is a separate call of the model on the whole batch (a model may draw
    one random transformation per call), and autograd differentiates the average,
    so the gradient is the mean of the draws' gradients. The forward values are the
    expected output, whose argmax is the model's majority prediction.

    Args:
        model: the opaque randomised model.
        draws: forward passes averaged per call (see :func:`eot_draws`).
    """

    name = "eot"

    def __init__(self, model: nn.Module, draws: int):
        super().__init__(model)
        self.draws = check_int(self.owner, "draws", draws, minimum=1)

    def forward(self, x: Tensor) -> Tensor:
        return eot_average(lambda _: self.model(x), self.draws)

    def extra_repr(self) -> str:
        return f"draws={self.draws}"
