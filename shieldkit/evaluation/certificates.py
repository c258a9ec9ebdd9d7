"""A certified defence's certificates against the attacks' examples: which examples disprove a certificate."""

from __future__ import annotations

import torch
from torch import Tensor

from shieldkit.core.threat import largest_distance
from shieldkit.data.imagedata import ImageData
from shieldkit.evaluation.adaptive import DefensePlan
from shieldkit.evaluation.config import EvalConfig
from shieldkit.evaluation.records import CertificateRow
from shieldkit.evaluation.units import pick


def disproved(plan: DefensePlan, certificate: CertificateRow, config: EvalConfig, data: ImageData, eps: float,
              candidates: list[int], fooled: list[int], x_adv: Tensor, seed: int) -> list[int]:
    """The fooled samples certified beyond ``eps`` whose adversarial example the defence confidently
    classifies as another class: each disproves its certificate (or the attack's budget).

    Args:
        plan: the certified defence; certificate: its certificates for the chunk of ``candidates``.
        eps: the unit's budget in the grid's norm; candidates: the attacked samples, in ``x_adv``'s order;
        fooled: those the attack fooled; x_adv: the attack's images; seed: seeds the defence's check.
    """
    start = certificate.chunk[0]
    reach = largest_distance(eps, config.norm, plan.defense.certifies, data.x[0].numel(),
                             config.bounds[1] - config.bounds[0])
    position = {index: i for i, index in enumerate(candidates)}
    suspects = [i for i in fooled if reach is not None and certificate.radii[i - start] > reach
                and certificate.predictions[i - start] == int(data.y[i])]
    if not suspects:
        return []
    rows = torch.tensor([position[i] for i in suspects])
    classes = torch.tensor([certificate.predictions[i - start] for i in suspects])
    with plan.seeded(seed):
        found = plan.defense.disproves(plan.classifier, x_adv[rows], classes)
    return pick(suspects, found)
