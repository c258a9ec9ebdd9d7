"""shieldkit's one EOT average: :func:`eot_average`.

Expectation over Transformation (Athalye et al., ICML 2018) attacks a randomised
model through the mean over several draws of its randomness. The three places that
average draws (a defence's attack view, the escalation's EOT view of an opaque
model, PGD's ``eot`` option) all call :func:`eot_average`, so they sum in the same
order and divide once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import Tensor

Drawn = TypeVar("Drawn", Tensor, tuple[Tensor, ...])


def eot_average(draw: Callable[[int], Drawn], draws: int) -> Drawn:
    """The mean of ``draw(0), ..., draw(draws - 1)``: a tensor, or a tuple of tensors averaged element-wise.

    Each call is one draw of the model's randomness (a fresh forward pass). When the draws are outputs
    inside autograd, the gradient of the average is the average of the draws' gradients; PGD instead
    averages per-draw loss gradients (``draw`` returns ``(gradient, logits)``), which keeps one graph alive
    at a time.
    """
    total = draw(0)
    for index in range(1, draws):
        more = draw(index)
        total = tuple(a + b for a, b in zip(total, more)) if isinstance(total, tuple) else total + more
    return tuple(t / draws for t in total) if isinstance(total, tuple) else total / draws
