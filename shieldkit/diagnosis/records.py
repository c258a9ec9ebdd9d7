"""The diagnosis's data: one :class:`Finding` per check, gathered in a :class:`Diagnosis`, with JSON forms."""

from __future__ import annotations

import math
from dataclasses import dataclass

from shieldkit.core.errors import InvalidInputError

#: The checks, in the order a :class:`Diagnosis` lists its findings.
CHECKS: tuple[str, ...] = (
    "nonfinite_outputs",
    "probability_outputs",
    "saturated_logits",
    "random_forward",
    "input_seeded_randomness",
    "missing_gradients",
    "zero_gradients",
    "nonfinite_gradients",
    "shattered_gradients",
    "deployed_precision",
)


def _number_to_json(value: float | None) -> float | None:
    """JSON has no NaN or inf: a statistic that could not be measured is written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def _number_from_json(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class Finding:
    """What one check found.

    Attributes:
        check: one of :data:`CHECKS`.
        found: whether the check fired.
        share: share of the probed samples affected, 0..1.
        measured: the statistic the check compared with ``threshold`` (per check in
            docs/diagnosis.md); NaN when nothing could be measured.
        threshold: what ``measured`` was compared with.
        detail: one human-readable line.
    """

    check: str
    found: bool
    share: float
    measured: float
    threshold: float
    detail: str

    def __post_init__(self):
        if self.check not in CHECKS:
            raise InvalidInputError(f"Finding: check={self.check!r} is not one of {', '.join(CHECKS)}")

    def to_json(self) -> dict:
        """A JSON-ready dict (a NaN statistic becomes null)."""
        return {
            "check": self.check,
            "found": self.found,
            "share": float(self.share),
            "measured": _number_to_json(self.measured),
            "threshold": _number_to_json(self.threshold),
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: dict) -> Finding:
        """The inverse of :meth:`to_json`."""
        return cls(
            check=data["check"],
            found=bool(data["found"]),
            share=float(data["share"]),
            measured=_number_from_json(data["measured"]),
            threshold=_number_from_json(data["threshold"]),
            detail=str(data["detail"]),
        )


@dataclass(frozen=True)
class Diagnosis:
    """Everything :func:`shieldkit.diagnosis.diagnose` found about a model.

    Attributes:
        findings: one :class:`Finding` per check of :data:`CHECKS`, in that order.
        gradient_noise: relative spread of the input gradient over repeated backward passes,
            the mean over samples of ``mean_i ||g_i - mean g|| / ||mean g||``; 0 for a
            deterministic model, ``None`` when there are no usable gradients.
        samples: how many samples were probed.
        forwards: model forward passes the diagnosis cost.
    """

    findings: tuple[Finding, ...]
    gradient_noise: float | None
    samples: int
    forwards: int

    def __post_init__(self):
        checks = tuple(f.check for f in self.findings)
        if checks != CHECKS:
            raise InvalidInputError(f"Diagnosis: findings must be one per check in CHECKS order, got {checks}")

    def finding(self, check: str) -> Finding:
        """The finding of ``check``."""
        if check not in CHECKS:
            raise InvalidInputError(f"Diagnosis: unknown check {check!r}; the checks are {', '.join(CHECKS)}")
        return self.findings[CHECKS.index(check)]

    def found(self, check: str) -> bool:
        """Whether ``check`` fired."""
        return self.finding(check).found

    @property
    def flags(self) -> tuple[str, ...]:
        """The checks that fired, in :data:`CHECKS` order."""
        return tuple(f.check for f in self.findings if f.found)

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        return {
            "findings": [f.to_json() for f in self.findings],
            "gradient_noise": _number_to_json(self.gradient_noise),
            "samples": self.samples,
            "forwards": self.forwards,
        }

    @classmethod
    def from_json(cls, data: dict) -> Diagnosis:
        """The inverse of :meth:`to_json`; a check missing from ``data`` (recorded before it existed) is not measured."""
        noise = data.get("gradient_noise")
        given = {f["check"]: Finding.from_json(f) for f in data["findings"]}
        # A check added after the diagnosis was recorded did not run then: not measured, not found.
        findings = tuple(given[check] if check in given else Finding(
            check, False, 0.0, math.nan, math.nan, "not measured: recorded before this check existed")
            for check in CHECKS)
        return cls(
            findings=findings,
            gradient_noise=None if noise is None else float(noise),
            samples=int(data["samples"]),
            forwards=int(data["forwards"]),
        )
