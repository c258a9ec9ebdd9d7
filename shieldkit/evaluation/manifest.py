"""``plan.json``: what the rows of a run mean, written before any attack runs.

The rows of ``results.jsonl`` say what each unit of work found; the manifest says
what the run was: the data's size and labels, the grid, the suite's attacks in
order, and per defence what the plan decided (its kind, adaptive view, EOT draws,
the remedies the diagnosis chose, a detector's fitted threshold, a certifier's
norm and parameters). :func:`~shieldkit.evaluation.summary.summarize` needs these
two and nothing else, so ``shieldkit report DIR`` rebuilds a run's summary and
reports from its folder with no model and no data loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shieldkit.core.component import jsonable
from shieldkit.core.errors import InvalidInputError
from shieldkit.data.imagedata import ImageData
from shieldkit.data.streamed import StreamedData
from shieldkit.escalation import GRADIENT_FREE_REMEDIES
from shieldkit.evaluation.adaptive import DefensePlan
from shieldkit.evaluation.config import EvalConfig
from shieldkit.evaluation.records import RESULTS_FORMAT, from_json, to_json
from shieldkit.evaluation.results import MANIFEST, write_json
from shieldkit.evaluation.suite import AttackEntry, DefenseEntry
from shieldkit.evaluation.summaries import DefenseIdentity, RunSetup, SuiteAttack


@dataclass
class RemedyManifest:
    """One escalation remedy a diagnosis chose: its name, the label of the attack run through it, and whether
    what that attack breaks counts as black-box evidence (score-based and transfer remedies)."""

    name: str
    attack: str
    gradient_free: bool


@dataclass
class DetectorManifest:
    """A detector's fitted false-positive rate and threshold."""

    fpr: float
    threshold: float | None


@dataclass
class CertifierManifest:
    """A certified defence's certificate norm and parameters."""

    norm: str
    params: dict[str, Any]


@dataclass
class DefenseManifest(DefenseIdentity):
    """One defence as the plan prepared it: its identity, then what the rows need to be read."""

    #: the adaptive mode attacks the deployed model itself (no view, no remedy): it reuses the naive measurements
    same_as_naive: bool
    remedies: list[RemedyManifest] = field(default_factory=list)
    detector: DetectorManifest | None = None
    certifier: CertifierManifest | None = None


@dataclass
class Manifest:
    """The run: data, grid, suite and defences (``plan.json``)."""

    config_hash: str
    data: str
    n: int
    #: pixels per image (C x H x W): a certificate's radius in another norm depends on it
    image_size: int
    #: the evaluated samples' labels, in order: certificates are judged against them
    labels: list[int]
    norm: str
    eps: list[float]
    bounds: tuple[float, float]
    cascade: bool
    seed: int
    checks: bool
    examples: int
    #: the suite's white-box then black-box attacks, in the order they run
    attacks: list[SuiteAttack]
    defenses: list[DefenseManifest]
    #: the model, data, device and versions: the report's header
    setup: RunSetup | None = None
    format: int = RESULTS_FORMAT


def build_manifest(config_hash: str, data: ImageData | StreamedData, config: EvalConfig,
                   attacks: list[AttackEntry], defenses: list[DefenseManifest], setup: RunSetup | None = None) -> Manifest:
    """The manifest of a run on ``data`` (the evaluated subset) with the suite's ``attacks`` in order."""
    return Manifest(
        config_hash=config_hash, data=data.name, n=len(data), image_size=int(data.x[0].numel()),
        labels=data.y.tolist(), norm=config.norm, eps=list(config.eps), bounds=tuple(config.bounds),
        cascade=config.cascade, seed=config.seed, checks=config.checks, examples=config.examples,
        attacks=[SuiteAttack(a.label, a.name, a.access, attack_settings(a, config)) for a in attacks],
        defenses=defenses, setup=setup)


def attack_settings(entry: AttackEntry, config: EvalConfig) -> dict[str, Any]:
    """Every setting of ``entry`` as the run builds it (its defaults included), less the grid's own."""
    try:
        built = entry.build(max(config.eps), config.norm, config.bounds, 0)
        params = built.get_params() if hasattr(built, "get_params") else dict(entry.params)
    except Exception:  # noqa: BLE001 - a report detail: the given parameters stand in
        params = dict(entry.params)
    return {key: value for key, value in jsonable(params).items() if key not in ("eps", "norm", "bounds", "seed")}


def defense_manifest(plan: DefensePlan, entry: DefenseEntry, fpr: float) -> DefenseManifest:
    """What the summary needs to know of one prepared defence (``fpr``: the run's, for a detector without one)."""
    record = DefenseManifest(
        label=plan.label, name=entry.name, kind=plan.kind, view=plan.view_description,
        adaptive_stage=plan.has_adaptive_stage, randomized=plan.randomized,
        # EOT draws: the defence's own, or those of an escalation remedy for a randomised opaque model
        eot=max([plan.eot, *(remedy.settings.draws for remedy, _ in plan.remedies)]),
        same_as_naive=plan.view is None and not plan.remedies,
        remedies=[RemedyManifest(remedy.name, label, remedy.name in GRADIENT_FREE_REMEDIES)
                  for remedy, label in plan.remedies])
    if plan.detector is not None:
        threshold = plan.detector.threshold
        record.detector = DetectorManifest(float(getattr(plan.detector, "fpr", fpr)),
                                           None if threshold is None else float(threshold))
    if plan.defense is not None and plan.defense.certifies is not None:
        record.certifier = CertifierManifest(plan.defense.certifies, jsonable(plan.defense.get_params()))
    return record


def write_manifest(out_dir: Path, manifest: Manifest) -> None:
    """Write ``plan.json`` atomically."""
    write_json(Path(out_dir) / MANIFEST, to_json(manifest))


def read_manifest(out_dir: Path) -> Manifest:
    """The manifest of the run in ``out_dir``; a missing or unreadable one is a one-line error."""
    path = Path(out_dir) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"{str(out_dir)!r} has no {MANIFEST}: not a run folder, or a run written by a "
                                "shieldkit older than the manifest (run it again)") from None
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise InvalidInputError(f"{path} is in results format {found}, this shieldkit reads format {RESULTS_FORMAT}")
    return from_json(Manifest, data)
