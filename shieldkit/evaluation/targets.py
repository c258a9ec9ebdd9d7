"""Which model a unit of work attacks: one place, by role.

Every unit attacks one model of its defence, named by its role:

- ``deployed``: the model as deployed. Naive and black-box units, a defence's own
  adaptive attacks (they read ``model.defense``) and the score-based remedy.
- ``view``: the defence's declared adaptive view (BPDA, EOT, surrogate, or its
  ``adaptive_view()``), when it has one.
- ``remedy:<name>``: an escalation remedy's view of the attack target
  (:mod:`shieldkit.escalation`), for a model whose defence hides inside ``forward()``.

:class:`DefenseTargets` builds these once per defence (a remedy's view on first use,
seeded, so a resume builds the same) and hands out the model for a role.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from shieldkit.core.component import component_params
from shieldkit.evaluation.adaptive import DefensePlan
from shieldkit.evaluation.suite import AttackEntry
from shieldkit.evaluation.units import AttackOnTarget, unit_seed

DEPLOYED = "deployed"
VIEW = "view"
_REMEDY = "remedy:"


def remedy_role(name: str) -> str:
    """The role of an attack that runs through the remedy ``name``'s view."""
    return _REMEDY + name


def remedy_of(role: str) -> str | None:
    """The remedy a role names, or ``None`` for ``deployed`` and ``view``."""
    return role[len(_REMEDY):] if role.startswith(_REMEDY) else None


class DefenseTargets:
    """The models the units of one defence attack, by role.

    Args:
        plan: the prepared defence.
        remedy_images: gives the clean images a remedy's view may be fitted on (a surrogate is distilled on
            them); called only when a remedy's view is first built.
        seed: the run's seed (a remedy's view is built under ``unit_seed(seed, "remedy", label, name)``).
    """

    def __init__(self, plan: DefensePlan, remedy_images: Callable[[], Tensor], seed: int):
        self.plan = plan
        self.remedy_images = remedy_images
        self.seed = seed
        self.remedy_views: dict[str, nn.Module] = {}

    def model(self, role: str) -> nn.Module:
        """The model a unit with ``role`` attacks."""
        remedy = remedy_of(role)
        if remedy is not None:
            return self.remedy_view(remedy)
        if role == VIEW and self.plan.view is not None:
            return self.plan.view
        if role in (DEPLOYED, VIEW):
            return self.plan.deployed
        raise ValueError(f"unknown target role {role!r}")

    def remedy_view(self, name: str) -> nn.Module:
        """The remedy's view of the attack target, built once (seeded: a resume builds the same)."""
        if name not in self.remedy_views:
            remedy = next(r for r, _ in self.plan.remedies if r.name == name)
            with self.plan.seeded(unit_seed(self.seed, "remedy", self.plan.label, name)):
                self.remedy_views[name] = remedy.view(self.plan.attack_target, self.remedy_images())
        return self.remedy_views[name]

    def adaptive_check_target(self, adaptive: list[AttackOnTarget]) -> tuple[str, AttackEntry | None] | None:
        """What the adaptive mode's masking checks attack: the defence's view (with the suite's attacks,
        ``None`` here), else the first remedy's view with its iterative white-box attack (the plan lists the
        likeliest first), else nothing: the adaptive mode is the naive one. Returns the role and the attack."""
        if self.plan.view is not None:
            return VIEW, None
        for attack in adaptive:
            entry = attack.entry
            if remedy_of(attack.role) is not None and entry.white_box and "steps" in component_params(entry.cls):
                return attack.role, entry
        return None
