"""Salt-and-pepper noise: a decision-based attack that sets random pixels to the bounds."""

import torch
from torch import Tensor, nn

import shieldkit as sk
from shieldkit.core.validation import check_int, check_number
from shieldkit.exemptions import EfficacyExemption


class SaltPepper(sk.Attack):
    """Set a random share ``amount`` of pixels to ``low`` or ``high``; keep, per sample, the first draw that fools.

    Args:
        amount: share of pixels (per channel position) to corrupt, in (0, 1].
        restarts: draws per sample; samples already fooled keep their first fooling draw.
    """

    family = "salt_pepper"
    norms = ("l0",)
    bounded = False
    targeted = False
    access = "decision"
    randomized = True
    smoke_params = {"restarts": 2}
    # A noise baseline, not an optimiser: the conformance kit skips its "fools a trained model" run on the
    # digits CNN, and still fails it if it ever returns its input unchanged.
    efficacy_exemption = EfficacyExemption(
        "random pixels set to 0 or 1, not optimised: a noise baseline (0/16 digits fooled at amount 0.1)")

    def __init__(self, *, amount: float = 0.05, restarts: int = 10, **common):
        super().__init__(**common)
        self.amount = check_number(self.name, "amount", amount, 0.0, 1.0, strict=False)
        if self.amount == 0:
            raise sk.InvalidParameterError(f"{self.name}: amount must be > 0, got amount=0")
        self.restarts = check_int(self.name, "restarts", restarts, minimum=1)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        low, high = self.bounds
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            corrupt = torch.rand_like(x[:, :1]) < self.amount
            salt = torch.rand_like(x[:, :1]) < 0.5
            noisy = torch.where(corrupt, torch.where(salt, high, low), x)
            with torch.no_grad():
                now_fooled = model(noisy).argmax(dim=1) != y
            take = now_fooled & ~fooled
            best[take] = noisy[take]
            fooled |= now_fooled
            if fooled.all():
                break
        # Samples never fooled still return the last draw: a perturbed image, as the caller asked.
        best[~fooled] = noisy[~fooled]
        return best
