"""The run's summary: typed records of what ``summary.json`` holds and the reports render.

:func:`~shieldkit.evaluation.summary.summarize` builds a :class:`RunSummary` from the
rows (:mod:`~shieldkit.evaluation.records`) and the manifest; the masking checks return
:class:`CheckOutcome` records; the report sections render the summary. Their JSON
form is :func:`~shieldkit.evaluation.records.to_json`'s, versioned by ``RESULTS_FORMAT``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shieldkit.evaluation.records import MODES, RESULTS_FORMAT, DiagnosisRow, eps_key, to_json


@dataclass
class AttackStats:
    """One attack's totals in one stage at one epsilon against one defence."""

    stage: str
    attack: str
    name: str
    access: str
    attacked: int = 0
    fooled: int = 0
    seconds: float = 0.0
    forwards: int = 0
    backwards: int = 0
    queries: int = 0
    errors: int = 0


@dataclass
class ExampleRef:
    """Where the report finds the adversarial image of one sample: the first unit that fooled it."""

    stage: str
    attack: str
    file: str


@dataclass
class BlackBoxExtra:
    """Samples black-box attacks fooled that no white-box attack did (the ``black_box`` check's signal)."""

    naive: int
    adaptive: int


@dataclass
class EpsSummary:
    """One defence at one epsilon: worst-case robust accuracy per mode with its interval, per-attack totals, examples.

    For a randomised model (``judging_draws > 1`` on the defence) ``naive``/``adaptive`` are expected accuracies:
    the mean over samples of the probability of a correct answer at the sample's worst point.

    ``detection_rate``, ``classifier_only`` and ``correct_or_detected`` are set for detectors only.
    """

    clean_correct: int
    naive: float
    adaptive: float
    black_box_extra: BlackBoxExtra
    attacks: list[AttackStats]
    examples: dict[str, ExampleRef]
    #: per attack label, the samples it broke first (stages in order, the suite's order within each):
    #: the report's "attack that broke it" table; every sample counted once
    broken_by: dict[str, int] = field(default_factory=dict)
    #: per mode, the 95% confidence interval of its robust accuracy (the defence's ``interval_method``)
    interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: a randomised model's majority-vote robust accuracy per mode (``naive``/``adaptive`` are expected accuracies)
    majority: dict[str, float] | None = None
    detection_rate: float | None = None
    classifier_only: float | None = None
    correct_or_detected: float | None = None
    omit_when_none: ClassVar[tuple[str, ...]] = ("majority", "detection_rate", "classifier_only",
                                                 "correct_or_detected")

    def accuracy(self, mode: str) -> float:
        return self.naive if mode == "naive" else self.adaptive


@dataclass
class DetectorSummary:
    fpr_fitted: float
    fpr_measured: float
    threshold: float | None


@dataclass
class CheckOutcome:
    """One gradient-masking check of one defence in one mode; ``passed`` is ``None`` when it could not run."""

    check: str
    passed: bool | None
    value: Any
    reason: str
    mode: str = ""

    @property
    def failed(self) -> bool:
        return self.passed is False


@dataclass
class CertifiedAtEps:
    """The certificate at the radius one epsilon of the grid implies, beside the attacks' number there.

    ``radius`` is the largest distance in the certificate's norm that a perturbation
    within ``eps`` in the grid's norm can have (``eps * sqrt(d)`` for an L-inf grid
    and an L2 certificate); ``certified`` the share of samples certified correct
    beyond it (a lower bound on robust accuracy); ``naive``/``adaptive`` the
    attacks' robust accuracy (upper bounds); ``disproved`` the samples an attack
    broke inside their certified radius, per mode. ``radius`` and ``certified`` are
    ``None`` where the grid's norm gives no bound in the certificate's.
    """

    radius: float | None
    certified: float | None
    naive: float
    adaptive: float
    disproved: dict[str, list[int]]


@dataclass
class CertifiedSummary:
    """A certified defence's certificates over the evaluated samples."""

    norm: str
    params: dict[str, Any]
    abstained: float
    forwards: int
    queries: int
    seconds: float
    curve: list[tuple[float, float]]
    at_eps: dict[str, CertifiedAtEps]


@dataclass
class DefenseIdentity:
    """What a defence is in a run, fixed by the plan: written in plan.json (``DefenseManifest``) and repeated,
    field for field, at the head of its summary (``DefenseSummary``)."""

    label: str
    name: str
    kind: str
    view: str
    adaptive_stage: bool
    randomized: bool
    #: EOT draws: the defence's own, or the most an escalation remedy averages
    eot: int

    def identity(self) -> dict[str, Any]:
        """The identity's fields and values (to build a summary from a manifest)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(DefenseIdentity)}


@dataclass
class DefenseSummary(DefenseIdentity):
    """Everything the report says about one defence: its identity (from the manifest), then its figures."""

    n: int
    clean_accuracy: float
    eps: dict[str, EpsSummary]
    errors: dict[str, list[str]]
    #: 95% confidence interval of the clean accuracy
    clean_interval: tuple[float, float] = (0.0, 1.0)
    #: forwards judging each point (1: deterministic; more: a randomised model, its accuracies are expected ones)
    judging_draws: int = 1
    #: how the intervals were computed (:mod:`~shieldkit.evaluation.intervals`)
    interval_method: str = ""
    #: a randomised model's majority-vote clean accuracy
    clean_majority: float | None = None
    detector: DetectorSummary | None = None
    certified: CertifiedSummary | None = None
    seconds: float = 0.0
    estimated_full_seconds: float = 0.0
    checks: list[CheckOutcome] = field(default_factory=list)
    #: the diagnosis of the attack target and the remedies it chose (``None`` on runs without one)
    diagnosis: DiagnosisRow | None = None

    def flags(self, mode: str) -> list[CheckOutcome]:
        """The failed checks of one mode: what casts doubt on that mode's numbers."""
        return [check for check in self.checks if check.mode == mode and check.failed]

    omit_when_none: ClassVar[tuple[str, ...]] = ("detector", "certified", "diagnosis", "clean_majority")

    def json_extra(self) -> dict[str, Any]:
        return {"flags": {mode: to_json(self.flags(mode)) for mode in MODES}}


@dataclass
class SuiteAttack:
    label: str
    name: str
    access: str
    #: every constructor setting of the attack as the run builds it (defaults included), less the grid's own
    #: ``eps``, ``norm``, ``bounds`` and ``seed``
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSetup:
    """The evaluated model, as the report names it."""

    #: where it came from: ``"file model.pt2"``, ``"registered mnist_cnn"``, ``"factory pkg.mod:build"``, ``"Python object"``
    source: str
    #: its class (the user's, inside shieldkit's own output adapter)
    architecture: str
    digest: str
    parameters: int
    #: how the logits are read from its output (:data:`~shieldkit.core.outputs.OUTPUT_KINDS`)
    output: str
    #: the mode it was handed over in (``"train"`` or ``"eval"``); it is always evaluated in eval mode
    handed_over_in: str
    #: the normalisation the run put in front of it (``"mean ... / std ..."``), or what shieldkit knows of it
    normalization: str


@dataclass
class DataSetup:
    """The evaluated data, as the report names it."""

    name: str
    split: str
    #: samples evaluated, and the size of the set they were drawn from
    n: int
    total: int
    #: one image's (C, H, W)
    shape: list[int]
    classes: int


@dataclass
class RunSetup:
    """What was measured: the model, the data, the device and the versions (the report's header)."""

    model: ModelSetup
    data: DataSetup
    device: str
    precision: str
    batch_size: int
    #: shieldkit, torch, python and the peer libraries' versions (``None``: not installed)
    versions: dict[str, str | None]
    #: when the run started (UTC, ISO 8601)
    started: str
    #: a clean accuracy under this share is warned about (``min_clean_accuracy``; ``None``: twice chance only)
    clean_floor: float | None = None


@dataclass
class TimeSummary:
    attack_seconds: float
    estimated_full_grid_seconds: float
    saved_seconds: float
    saved_share: float


@dataclass
class RunSummary:
    """The whole run (``summary.json``)."""

    config_hash: str
    n: int
    data: str
    norm: str
    eps: list[float]
    cascade: bool
    seed: int
    attacks: list[SuiteAttack]
    defenses: list[DefenseSummary]
    time: TimeSummary
    #: the model, data, device and versions (``None`` in runs written before it was recorded)
    setup: RunSetup | None = None
    #: what a reader must know before reading any number: a wrong setup's symptoms (:func:`setup_warnings`)
    warnings: list[str] = field(default_factory=list)
    format: int = RESULTS_FORMAT
    omit_when_none: ClassVar[tuple[str, ...]] = ("setup",)

    def defense(self, label: str) -> DefenseSummary:
        for record in self.defenses:
            if record.label == label:
                return record
        raise KeyError(f"no defence {label!r} in this report; it has {', '.join(d.label for d in self.defenses)}")

    @property
    def eps_keys(self) -> list[str]:
        return [eps_key(e) for e in self.eps]

    @property
    def largest_eps_key(self) -> str:
        return eps_key(max(self.eps))
