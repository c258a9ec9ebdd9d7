"""The masking checklist's units: measurements on the models, on the first chunk, after a defence's attacks.

Each writes one row (:class:`~shieldkit.evaluation.records.RandomnessRow`,
``GradientRow``, ``LargeEpsRow``, ``EffortRow``) that the checks in
:mod:`~shieldkit.evaluation.masking` read back in the reduce stage. Like attack
units, each is seeded from its own key and skipped when its row is already stored.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from shieldkit.data.imagedata import ImageData
from shieldkit.evaluation import masking
from shieldkit.evaluation.adaptive import DefensePlan
from shieldkit.evaluation.config import EvalConfig
from shieldkit.evaluation.records import AttackRow, CleanRow, EffortRow, LargeEpsRow
from shieldkit.evaluation.results import ResultsStore
from shieldkit.evaluation.suite import AttackEntry, effort_attack, strongest_white_box
from shieldkit.evaluation.targets import DEPLOYED, DefenseTargets, remedy_of
from shieldkit.evaluation.units import AttackOnTarget, pick, unit_seed


class MaskingMeasurements:
    """Runs the measurement units of one run's defences.

    Args:
        store: the run's rows (read for what is done, appended to).
        data: the evaluation data; config: the run's settings; device: where the model lives.
        white_box: the suite's white-box attacks (the strongest one measures large eps and more effort).
    """

    def __init__(self, store: ResultsStore, data: ImageData, config: EvalConfig, device: torch.device,
                 white_box: list[AttackEntry]):
        self.store, self.data, self.config, self.device = store, data, config, device
        self.white_box = white_box

    def run(self, plan: DefensePlan, targets: DefenseTargets, adaptive: list[AttackOnTarget], clean: CleanRow) -> None:
        """Every measurement of one defence on the chunk of ``clean`` (the first chunk)."""
        start, end = clean.chunk
        sample = list(range(start, min(end, start + masking.CHECK_SAMPLES)))
        correct = [i for i in clean.correct if i < start + masking.CHECK_SAMPLES]
        key = f"check|{plan.label}|randomness"
        if key not in self.store:
            x = self.data.x[sample].to(self.device)

            def forward(images: Tensor, seed: int) -> Tensor:
                with plan.seeded(seed):
                    return plan.deployed(images).float().cpu()

            seeds = (unit_seed(self.config.seed, key, 1), unit_seed(self.config.seed, key, 2))
            self.store.append(masking.measure_randomness(forward, x, seeds, key, plan.label))
        strongest = strongest_white_box(self.white_box)
        modes = [("naive", DEPLOYED, strongest)]
        if (found := targets.adaptive_check_target(adaptive)) is not None:
            role, entry = found
            modes.append(("adaptive", role, entry or strongest))
        for mode, role, entry in modes:
            key = f"check|{plan.label}|gradients|{mode}"
            model = targets.model(role)
            if key not in self.store and correct:
                index = torch.tensor(correct)
                plan.reseed(unit_seed(self.config.seed, key))
                self.store.append(masking.measure_gradients(model, self.data.x[index].to(self.device),
                                                            self.data.y[index].to(self.device), key, plan.label, mode))
            self.large_eps(plan, mode, correct, targets, role, entry)
        for mode in ("naive", "adaptive"):
            for eps in self.config.eps:
                self.more_effort(plan, mode, eps, clean, targets, adaptive)

    def large_eps(self, plan: DefensePlan, mode: str, correct: list[int], targets: DefenseTargets, role: str,
                  entry: AttackEntry | None) -> None:
        """The strongest white-box attack at a budget covering the whole pixel range must leave about nothing."""
        key = f"check|{plan.label}|large_eps|{mode}"
        if entry is None or key in self.store or not correct:
            return
        low, high = self.config.bounds
        size = self.data.x[0].numel()
        eps = {"linf": high - low, "l2": (high - low) * size ** 0.5, "l1": (high - low) * size}.get(
            self.config.norm, float(size))
        seed = unit_seed(self.config.seed, key)
        index = torch.tensor(correct)
        x, y = self.data.x[index].to(self.device), self.data.y[index].to(self.device)
        row = LargeEpsRow(key=key, defense=plan.label, mode=mode, attack=entry.label, eps=eps, samples=len(correct))
        try:
            attack = entry.build(eps, self.config.norm, self.config.bounds, seed)
            plan.reseed(seed)
            result = attack.run(targets.model(role), x, y)
            judged = plan.judge(result.x_adv, y, seed + 1)
            row.accuracy = judged.survival.mean().item()  # expected, for a randomised model
        except Exception as error:  # noqa: BLE001 - a crash here is itself a masking signal
            row.error = masking.one_line(error)
        self.store.append(row)

    def more_effort(self, plan: DefensePlan, mode: str, eps: float, clean: CleanRow, targets: DefenseTargets,
                    adaptive: list[AttackOnTarget]) -> None:
        """Carlini et al.'s "more iterations and restarts": the suite's strongest iterative attack with twice
        the steps and one more restart, on (up to CHECK_SAMPLES of) the first chunk's samples still robust
        in ``mode``; what it breaks is accuracy the suite had not converged on."""
        key = f"check|{plan.label}|more_effort|{mode}|{eps!r}"
        if key in self.store:
            return
        found = self.effort_attack(mode, targets, adaptive)
        if found is None:
            return  # adaptive with nothing to adapt: the naive row is the adaptive one
        entry, role = found
        start, end = clean.chunk
        stages = ("naive", "blackbox") if mode == "naive" else ("naive", "blackbox", "adaptive")
        fooled: set[int] = set()
        for row in self.store:
            if isinstance(row, AttackRow) and row.defense == plan.label and row.eps == eps \
                    and row.stage in stages and tuple(row.chunk) == (start, end):
                fooled.update(row.fooled)
        robust = [i for i in clean.correct if i not in fooled]
        defaults = {name: p.effective for name, p in entry.cls.effective_params().items()}
        steps = 2 * int(entry.params.get("steps", defaults.get("steps")) or 1)
        more = {"steps": steps}
        restarts = 1
        if "restarts" in defaults:
            restarts = more["restarts"] = int(entry.params.get("restarts", defaults["restarts"]) or 1) + 1
        attacked = robust[:masking.CHECK_SAMPLES]
        row = EffortRow(key=key, defense=plan.label, mode=mode, eps=eps, attack=entry.label,
                        target=remedy_of(role) or role, steps=steps, restarts=restarts, attacked=attacked,
                        robust=len(robust) / max(1, end - start))
        if attacked:
            seed = unit_seed(self.config.seed, key)
            index = torch.tensor(attacked)
            x, y = self.data.x[index].to(self.device), self.data.y[index].to(self.device)
            stronger = dataclasses.replace(entry, params={**entry.params, **more})
            try:
                attack = stronger.build(eps, self.config.norm, self.config.bounds, seed)
                plan.reseed(seed)
                result = attack.run(targets.model(role), x, y)
                row.fooled = pick(attacked, plan.judge(result.x_adv, y, seed + 1).fooled)
            except Exception as error:  # noqa: BLE001 - recorded; the check says it could not run
                row.error = masking.one_line(error)
        self.store.append(row)

    def effort_attack(self, mode: str, targets: DefenseTargets,
                      adaptive: list[AttackOnTarget]) -> tuple[AttackEntry, str] | None:
        """The attack the "more effort" check repeats in ``mode`` and the role of what it attacks."""
        if mode == "naive":
            entry = effort_attack(self.white_box)
            return None if entry is None else (entry, DEPLOYED)
        found = targets.adaptive_check_target(adaptive)
        if found is None:
            return None
        role, entry = found
        entry = entry or effort_attack(self.white_box)
        return None if entry is None else (entry, role)
