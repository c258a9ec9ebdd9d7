"""Gradients of the Gaussian-smoothed model, forward values unchanged.

Reference:
    Salimans, Ho, Chen, Sidor, Sutskever. Evolution Strategies as a Scalable Alternative
    to Reinforcement Learning. 2017 (antithetic Gaussian estimator).
    Ilyas, Engstrom, Athalye, Lin. Black-box Adversarial Attacks with Limited Queries and
    Information. ICML 2018 (NES gradient estimates for attacks).
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldkit.core.validation import check_choice, check_int, check_number
from shieldkit.escalation.view import EscalationView

ESTIMATORS = ("zeroth_order", "autograd")
#: Images forwarded at once when the noisy copies of a batch are evaluated.
CHUNK = 4096


def _forward_in_chunks(model: nn.Module, x: Tensor) -> Tensor:
    return torch.cat([model(part) for part in x.split(CHUNK)])


class _AntitheticGradient(torch.autograd.Function):
    """Forward: the model's output. Backward: ``E[(v . (f(x + s n) - f(x - s n))) n] / (2 s)``."""

    @staticmethod
    def forward(ctx, x: Tensor, model: nn.Module, sigma: float, pairs: int) -> Tensor:
        with torch.no_grad():
            value = model(x)
            noise = torch.randn((pairs, *x.shape), dtype=x.dtype, device=x.device)
            shifted = (sigma * noise + x).flatten(0, 1)
            plus = _forward_in_chunks(model, shifted)
            minus = _forward_in_chunks(model, (x - sigma * noise).flatten(0, 1))
            differences = (plus - minus).view(pairs, *value.shape)
        ctx.save_for_backward(noise, differences)
        ctx.sigma = sigma
        return value

    @staticmethod
    def backward(ctx, upstream: Tensor):
        noise, differences = ctx.saved_tensors
        weights = (differences * upstream).sum(dim=-1)  # [pairs, B]
        gradient = (weights.view(*weights.shape, *([1] * (noise.dim() - 2))) * noise).mean(dim=0)
        return gradient / (2 * ctx.sigma), None, None, None


class SmoothedView(EscalationView):
    """The model's forward values with the gradient of ``g(x) = E[f(x + sigma n)]``, ``n ~ N(0, I)``.

    Two estimators of that gradient:

    - ``"zeroth_order"`` (the default): ``E[(f(x + sigma n) - f(x - sigma n)) n] / (2 sigma)``
      from ``samples`` noisy forwards in antithetic pairs, no backward pass through
      the model. It needs no gradient at all, so it also serves models whose
      gradients are missing, zero or non-finite, and its variance is bounded by the
      outputs, not by a shattered gradient's magnitude.
    - ``"autograd"``: autograd through the mean output over ``samples`` noisy copies,
      which is EOT over input jitter: it suits randomness seeded from the input
      (each copy draws its own), where the gradients themselves are fine.

    Args:
        model: the opaque model.
        sigma: noise scale, in pixel units; of the order of the structure to smooth over
            and below the attack's step.
        samples: noisy forwards per call (rounded up to an even number for antithetic pairs).
        estimator: ``"zeroth_order"`` or ``"autograd"``.
    """

    name = "smoothing"

    def __init__(self, model: nn.Module, *, sigma: float = 0.05, samples: int = 64, estimator: str = "zeroth_order"):
        super().__init__(model)
        self.sigma = check_number(self.owner, "sigma", sigma, 0.0, strict=True)
        self.samples = check_int(self.owner, "samples", samples, minimum=2)
        self.estimator = check_choice(self.owner, "estimator", estimator, ESTIMATORS)

    def forward(self, x: Tensor) -> Tensor:
        if self.estimator == "zeroth_order":
            return _AntitheticGradient.apply(x, self.model, self.sigma, (self.samples + 1) // 2)
        with torch.no_grad():
            value = self.model(x)
        noisy = (x.unsqueeze(0) + self.sigma * torch.randn((self.samples, *x.shape), dtype=x.dtype, device=x.device))
        smoothed = _forward_in_chunks(self.model, noisy.flatten(0, 1)).view(self.samples, *value.shape).mean(dim=0)
        return value + (smoothed - smoothed.detach())

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, samples={self.samples}, estimator={self.estimator!r}"
