"""Hand-written adaptive attacks that know each defence of tests/support/defended_zoo.py: the references.

BPDA (straight-through backward of the known transform), EOT over the known noise,
the margin loss, many steps, each sample's best iterate judged on the real model.
Written against the zoo's source, never importing shieldkit: what the evaluation and
the escalation remedies (told nothing) are compared with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def margin_loss(outputs: torch.Tensor, y: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    own = outputs.gather(1, y[:, None]).squeeze(1)
    other = outputs.scatter(1, y[:, None], float("-inf")).amax(1)
    return (other - own).sum()


@torch.no_grad()
def correct(model: nn.Module, x, y, draws: int = 1, seed: int = 123) -> torch.Tensor:
    """Per-sample share of ``draws`` seeded forwards of the real model that classify correctly."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([(model(x).argmax(1) == y).float() for _ in range(draws)]).mean(0)


def _bpda(transform):
    return lambda base: (lambda x: base(x + (transform(x) - x).detach()))


def _median3(x: torch.Tensor) -> torch.Tensor:
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return padded.unfold(2, 3, 1).unfold(3, 3, 1).reshape(*x.shape, 9).median(-1).values


def _thermometer(x: torch.Tensor) -> torch.Tensor:
    return (x.unsqueeze(-1) > torch.arange(8) / 8).float().mean(-1)


#: What the hand-written reference differentiates for each zoo model (written knowing the
#: defence), and how many random draws it averages (EOT).
REFERENCES = {
    "undefended": (lambda base: base, 1),
    "quantize": (_bpda(lambda x: torch.round(x * 3) / 3), 1),
    "binarize": (_bpda(lambda x: (x > 0.5).float()), 1),
    "thermometer": (_bpda(_thermometer), 1),
    "numpy_round_trip": (_bpda(_median3), 1),
    "shattered_gradients": (_bpda(lambda x: x + 0.02 * torch.sin(1000 * x)), 1),
    "scaled_logits": (lambda base: base, 1),
    "softmax_output": (lambda base: base, 1),
    "random_resize_pad": (None, 8),  # the model itself (differentiable), averaged
    "gaussian_noise": (lambda base: (lambda x: base((x + 0.1 * torch.randn_like(x)).clamp(0, 1))), 8),
    "active_dropout": (None, 8),
    "input_seeded_noise": (lambda base: (lambda x: base((x + 0.25 * torch.randn_like(x)).clamp(0, 1))), 8),
}
RANDOM_JUDGED = {"random_resize_pad", "gaussian_noise", "active_dropout"}


def reference_attack(forward, model, x, y, eps: float, draws: int, judge_draws: int, steps: int = 30):
    """Hand-written L-inf PGD on the margin loss, EOT over ``draws``, keeping each sample's best iterate
    as judged on the real model."""
    torch.manual_seed(7)
    step = 2.5 * eps / steps
    best = correct(model, x, y, judge_draws)
    best_x = x.clone()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = sum(margin_loss(forward(x_adv), y) for _ in range(draws))
        (gradient,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * gradient.sign(), x - eps), x + eps).clamp(0, 1)
        now = correct(model, x_adv, y, judge_draws)
        better = now < best
        best, best_x[better] = torch.where(better, now, best), x_adv[better]
    return correct(model, best_x, y, judge_draws, seed=321)  # judged on fresh draws, not the selecting ones
