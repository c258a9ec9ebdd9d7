"""Views that give the loss something to climb when the outputs are probabilities or saturated logits.

Both are monotone per sample, so the argmax (and success on the view) is the model's.

Reference:
    Carlini, Wagner. Towards Evaluating the Robustness of Neural Networks. IEEE S&P 2017
    (the margin loss, and why cross-entropy on a softmax output fails).
    Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks. ICML 2020 (the scale-invariant DLR loss, the softmax-output check).
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldkit.escalation.view import EscalationView


class LogProbabilityView(EscalationView):
    """``log p`` of a model that returns probabilities.

    Cross-entropy on probabilities treats them as logits: ``softmax(p)`` is nearly
    uniform and its gradient is tiny and badly conditioned. Their logarithm is the
    model's log-softmax (its logits up to a per-sample constant), so any loss sees
    logits again. A probability that underflowed to 0 is held at the smallest
    positive float (no gradient there: use a margin loss, which reads the others).
    """

    name = "log_probabilities"

    def forward(self, x: Tensor) -> Tensor:
        probabilities = self.model(x)
        return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()


class NormalizedLogitsView(EscalationView):
    """Logits divided per sample by their (detached) spread across classes.

    Logits scaled by a large factor saturate the softmax: cross-entropy's gradient
    is exactly zero in float arithmetic although the logits' own gradient is
    perfectly useful. Dividing each sample's logits by a positive constant (their
    standard deviation, not differentiated) keeps the argmax and the gradient's
    direction and brings the softmax back to where it has a slope.
    """

    name = "normalized_logits"

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        spread = logits.detach().std(dim=1, keepdim=True).clamp_min(torch.finfo(logits.dtype).tiny)
        return logits / spread
