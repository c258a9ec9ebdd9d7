"""The hand-written adaptive attack the defence tests and bench/bench_defenses.py measure shieldkit against.

Independent of shieldkit's attacks and attack views on purpose: only the deployed model's own transform
and classifier are used, so a bug in an attack view cannot make both sides agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_pgd(deployed, x, y, *, eps=0.3, steps=10, step_size=0.05, draws=1, seed=0):
    """An adaptive attack written here, independent of shieldkit's attacks and attack views.

    L-inf PGD on the summed cross-entropy (Madry et al.), random start: forward through the deployed
    model's own transform and classifier; through a non-differentiable transform the backward pass is
    the identity (BPDA, Athalye et al. 2018: ``x + (t(x) - x).detach()``); a randomised transform's
    gradient is summed over ``draws`` fresh draws (EOT). tests/component/test_defenses.py, tests/e2e/test_evaluate.py and
    bench/bench_defenses.py (which measures the figures the tests hold) all run this one loop.
    """
    defense, model = deployed.defense, deployed.model
    generator = torch.Generator().manual_seed(seed)
    x_adv = (x + (2 * torch.rand(x.shape, generator=generator) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        gradient = torch.zeros_like(x)
        for _ in range(draws):
            if defense.differentiable:
                transformed = defense.transform(x_adv)
            else:
                with torch.no_grad():
                    value = defense.transform(x_adv)
                transformed = x_adv + (value - x_adv.detach())
            loss = F.cross_entropy(model(transformed), y, reduction="sum")
            gradient += torch.autograd.grad(loss, x_adv)[0]
        x_adv = torch.min(torch.max(x_adv.detach() + step_size * gradient.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()
