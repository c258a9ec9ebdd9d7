"""Preparing a defence before any unit runs: fitting, the diagnosis's remedies, and the adaptive stage's attacks.

Each function takes what it needs as arguments and returns data; the runner
calls them in :meth:`~shieldkit.evaluation.runner.Runner.execute`'s first step.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import torch
from torch import nn

from shieldkit.core.defense import DetectorDefense, TrainerDefense
from shieldkit.core.seeding import seeded
from shieldkit.data.imagedata import ImageData
from shieldkit.diagnosis import Diagnosis
from shieldkit.escalation import Remedy, plan_remedies
from shieldkit.evaluation.adaptive import DefensePlan
from shieldkit.evaluation.config import EvalConfig, digest
from shieldkit.evaluation.presets import REMEDY_ATTACK
from shieldkit.evaluation.suite import AttackEntry, DefenseEntry, fit_options, resolve_attacks
from shieldkit.evaluation.targets import DEPLOYED, VIEW, remedy_role
from shieldkit.evaluation.units import AttackOnTarget, model_digest, tensor_digest, unit_seed
from shieldkit.models.files import load_state_dict_file, save_model
from shieldkit.plugins.registry import get_registry

logger = logging.getLogger(__name__)


def fit_trainer(entry: DefenseEntry, defense: TrainerDefense, model: nn.Module, train_data: ImageData,
                out_dir: Path, seed: int, quiet: bool) -> nn.Module:
    """A copy of ``model`` fitted by the trainer defence, cached in ``out_dir/cache`` under a key of everything
    that changes it (the weights only, read back with ``weights_only=True``)."""
    key = digest({"name": entry.name, "params": entry.params, "fit": entry.fit, "seed": seed,
                  "model": model_digest(model), "train": tensor_digest(train_data.x[:2000], train_data.y[:2000])})
    cache = out_dir / "cache" / f"{entry.label.replace('/', '_')}-{key}.pt"
    if cache.is_file():
        # The network is the evaluated model's, whose digest is in the file's name.
        try:
            fitted = copy.deepcopy(model)
            fitted.load_state_dict(load_state_dict_file(cache, "cache"))
            logger.info("loaded the fitted %s model from %s", entry.label, cache)
            return fitted.eval()
        except Exception as error:  # noqa: BLE001 - a broken or foreign cache is refitted
            logger.warning("ignoring unreadable cache %s: %s", cache, error)
    logger.info("fitting %s on %d training samples", entry.label, len(train_data))
    student = copy.deepcopy(model)
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    options = dict(entry.fit)
    accepted = fit_options(defense)
    if "quiet" in accepted:
        options.setdefault("quiet", quiet)
    if {"checkpoint_dir", "resume"} <= accepted:  # a long fit killed half way resumes from its last epoch
        options.setdefault("checkpoint_dir", str(cache.with_suffix("")) + "-checkpoints")
        options.setdefault("resume", True)
    with seeded(unit_seed(seed, "fit", entry.label)):
        fitted = defense.fit(student, train_data, **options)
    fitted.eval()
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_model(fitted, cache, {"base": "the evaluated model", "model_digest": model_digest(model)})
    return fitted


def fit_detector(entry: DefenseEntry, defense: DetectorDefense, model: nn.Module, train_data: ImageData,
                 config: EvalConfig, device: torch.device) -> None:
    """Fit the detector's threshold on up to 1,000 clean training images at its false-positive rate."""
    fpr = entry.fit.get("fpr", config.fpr)
    clean = train_data.subset(min(1000, len(train_data)), seed=config.seed).x.to(device)
    with seeded(unit_seed(config.seed, "fit", entry.label)):
        defense.fit(model, clean, fpr=fpr)


def choose_remedies(plan: DefensePlan, found: Diagnosis, config: EvalConfig,
                    black_box: list[AttackEntry]) -> list[tuple[Remedy, str]]:
    """The remedies a diagnosis calls for, each with the label of the attack that runs through its view."""
    if not config.adaptive or not found.flags:
        return []
    if plan.kind not in ("none", "trainer"):
        # a shieldkit defence declares its adaptive view (BPDA/EOT/its own attacks); the escalations are for
        # models whose defence hides inside forward(), which only the diagnosis can see
        return []
    attack = REMEDY_ATTACK[config.suite][0]
    if config.norm not in get_registry().resolve("attack", attack).obj.norms:
        logger.warning("%s: no remedy attack supports norm %s; the diagnosis is reported only", plan.label,
                       config.norm)
        return []
    chosen = []
    in_suite = {entry.cls.family for entry in black_box}
    for remedy in plan_remedies(found, bounds=config.bounds, seed=unit_seed(config.seed, "surrogate")):
        if remedy.name == "direct" or (remedy.name == "score_based" and remedy.settings.attack in in_suite
                                       and remedy.build is None):
            continue  # the model's own gradients, or a score-based attack the suite already runs (one draw a query)
        family = remedy.settings.attack if remedy.name == "score_based" else attack
        chosen.append((remedy, f"{family} via {remedy.name}"))
    return chosen


def adaptive_attacks(plan: DefensePlan, config: EvalConfig, white_box: list[AttackEntry]) -> list[AttackOnTarget]:
    """The adaptive stage of one defence, in order: the defence's own attacks (on the deployed model), the
    suite's white-box attacks on its view (if it has one), then each remedy's attack through that remedy."""
    attacks = []
    if plan.extra_attacks:
        for entry in resolve_attacks(plan.extra_attacks, config.norm, config.eps, config.bounds):
            attacks.append(AttackOnTarget(dataclasses.replace(entry, label=f"{entry.label} (defence's own)"),
                                          DEPLOYED))
    if plan.view is not None:
        attacks += [AttackOnTarget(entry, VIEW) for entry in white_box]
    attack, params = REMEDY_ATTACK[config.suite]
    for remedy, label in plan.remedies:
        if remedy.name == "score_based":  # the deployed model itself, or its average over draws
            spec = (remedy.settings.attack, {"queries": remedy.settings.queries} if remedy.settings.queries else {})
            role = DEPLOYED if remedy.build is None else remedy_role(remedy.name)
        else:
            # APGD's losses are ce and dlr; DLR is the margin made scale-free, what a remedy asking
            # for a margin loss (outputs of untrusted scale) needs
            loss = {"margin": "dlr"}.get(remedy.settings.loss, remedy.settings.loss)
            spec = (attack, {**params, "loss": loss})
            role = remedy_role(remedy.name)
        (entry,) = resolve_attacks([spec], config.norm, config.eps, config.bounds)
        attacks.append(AttackOnTarget(dataclasses.replace(entry, label=label), role))
    return attacks
