"""A transfer-attack view: the model's outputs, differentiated through a distilled surrogate.

Reference:
    Papernot, McDaniel, Goodfellow, Jha, Celik, Swami. Practical Black-Box Attacks against
    Machine Learning. AsiaCCS 2017 (a substitute fitted to the model's answers).
    Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015 (soft labels).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core.errors import InvalidInputError, InvalidParameterError
from shieldkit.core.seeding import seeded
from shieldkit.core.validation import check_bounds, check_images, check_int, check_number
from shieldkit.escalation.view import EscalationView

logger = logging.getLogger(__name__)


def small_cnn(in_channels: int, num_classes: int) -> nn.Module:
    """Two strided convolutions and a linear layer: cheap to fit, any image size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, num_classes),
    )


def soft_labels(outputs: Tensor) -> Tensor:
    """The class distribution a model's outputs stand for: themselves when they are probabilities,
    else the softmax of per-sample normalised logits (saturated logits would give one-hot labels)."""
    if bool((outputs >= 0).all()) and bool(torch.allclose(outputs.sum(dim=1), torch.ones_like(outputs[:, 0]), atol=1e-3)):
        return outputs / outputs.sum(dim=1, keepdim=True)
    spread = outputs.std(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.softmax(outputs / spread * 2.0, dim=1)


@torch.no_grad()
def _query(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    return torch.cat([model(part) for part in x.split(batch_size)])


def distill_surrogate(
    model: nn.Module,
    x: Tensor,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    copies: int = 8,
    noise: float = 0.2,
    epochs: int = 5,
    seed: int = 0,
) -> nn.Module:
    """A small CNN fitted to ``model``'s soft labels on ``x`` and noisy copies of it.

    The model is queried (no gradient) on ``x`` and ``copies`` copies with uniform
    noise of up to ``noise`` (a share of the pixel range, growing from the first
    copy to the last so the surrogate sees the neighbourhood an attack explores),
    then the CNN is trained with the KL divergence to those labels (Adam). Cost:
    ``(copies + 1) * len(x)`` images forwarded through the model.

    Args:
        model: the opaque model.
        x: the images available to the attacker ``[B, C, H, W]``.
        bounds: the pixel range.
        copies: noisy copies per image.
        noise: the largest uniform noise, as a share of the pixel range.
        epochs: passes over the queried images.
        seed: fixes the noise, the surrogate's initial weights and the batch order
            (torch's global RNG is left as it was).
    """
    owner = "distill_surrogate"
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"{owner}: model must be an nn.Module, got {type(model).__name__}")
    low, high = check_bounds(bounds, owner)
    check_images(x, (low, high), "x")
    check_int(owner, "copies", copies, minimum=0)
    check_number(owner, "noise", noise, 0.0, 1.0)
    check_int(owner, "epochs", epochs, minimum=1)
    check_int(owner, "seed", seed, minimum=0)
    x = x.detach()
    with seeded(seed, x.device):
        scales = torch.linspace(noise / max(copies, 1), noise, copies) * (high - low)
        noisy = [x] + [(x + (torch.rand_like(x) * 2 - 1) * float(s)).clamp(low, high) for s in scales]
        images = torch.cat(noisy)
        targets = soft_labels(_query(model, images).float())
        if not torch.isfinite(targets).all():
            raise InvalidInputError(f"{owner}: the model returned non-finite outputs; there is nothing to distil")
        surrogate = small_cnn(x.shape[1], targets.shape[1]).to(device=x.device, dtype=x.dtype)
        optimiser = torch.optim.Adam(surrogate.parameters(), lr=3e-3)
        for epoch in range(epochs):
            order = torch.randperm(images.shape[0], device=x.device)
            for batch in order.split(64):
                log_probabilities = F.log_softmax(surrogate(images[batch]), dim=1)
                loss = F.kl_div(log_probabilities, targets[batch], reduction="batchmean")
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            logger.debug("surrogate epoch %d: KL %.4f", epoch + 1, loss.item())
    agreement = (_query(surrogate, images).argmax(1) == targets.argmax(1)).float().mean().item()
    logger.info("distilled surrogate: agrees with the model on %.1f%% of %d images", 100 * agreement, len(images))
    surrogate.agreement = agreement
    return surrogate.eval().requires_grad_(False)


class SurrogateView(EscalationView):
    """The model's forward values, differentiated through ``surrogate`` (a transfer attack).

    ``output = s(x) + (f(x) - s(x)).detach()``: the values are the model's, the
    gradient the surrogate's logits'. Use a margin-type loss, which reads only which
    classes are on top, not the scale of the model's outputs.

    Args:
        model: the opaque model.
        surrogate: a differentiable model of the same classes (:func:`distill_surrogate`).
    """

    name = "surrogate"

    def __init__(self, model: nn.Module, surrogate: nn.Module):
        super().__init__(model)
        if not isinstance(surrogate, nn.Module):
            raise InvalidParameterError(f"{self.owner}: surrogate must be an nn.Module, got {type(surrogate).__name__}")
        self.surrogate = surrogate

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            value = self.model(x)
        estimate = self.surrogate(x)
        if estimate.shape != value.shape:
            raise InvalidInputError(
                f"{self.owner}: the surrogate returns shape {tuple(estimate.shape)}, the model {tuple(value.shape)}"
            )
        return estimate + (value - estimate).detach()
