"""The evaluation's data: typed records of every unit of work, and the JSON form of every record.

The runner writes rows (:class:`CleanRow`, :class:`AttackRow` and the
measurement rows of the masking checks) to ``results.jsonl``; the summary
aggregates them into a :class:`~shieldkit.evaluation.summaries.RunSummary`
(``summary.json``); the checks read both and return ``CheckOutcome`` records; the
report sections render the summary. Nothing between these stages is a
string-keyed dict.

``RESULTS_FORMAT`` versions the JSON forms. ``config.json`` and ``summary.json``
record it, and ``--resume`` refuses a run written in another format with a
one-line message naming both versions (format 1: written before these records
existed, without a version field).

The JSON forms are strict JSON (:func:`strict_json`): JSON has no infinity or NaN (``Infinity`` is Python's
extension, which Node's and most other parsers reject), so a member ``x`` whose number is not finite holds
``null`` and a sibling member ``x_nonfinite`` says which it was (``"inf"``, ``"-inf"`` or ``"nan"``; for numbers
inside a list, an object by index: ``{"3": "inf"}``). :func:`from_json` restores the exact values, and still
reads files of the same format written before (with ``Infinity``/``NaN``), so the format did not change.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from shieldkit.core.threat import format_eps
from shieldkit.diagnosis import Diagnosis

#: Version of the JSON forms of rows and summaries (1: before the typed records, no version field;
#: 2: typed records; 3: adds the diagnosis row and the "attack that broke it" counts; 4: judging draws of
#: randomised models and confidence intervals).
RESULTS_FORMAT = 4
MODES = ("naive", "adaptive")
STAGES = ("naive", "blackbox", "adaptive")


def eps_key(eps: float) -> str:
    """How an epsilon names its entry in summaries (``0.1``, ``0.3``, ``0.0313725``); :func:`eps_label` shows it."""
    return f"{eps:g}"


def eps_label(key: str) -> str:
    """An :func:`eps_key` as a reader writes the epsilon (:func:`~shieldkit.core.threat.format_eps`): ``8/255``
    for the key of ``8 / 255`` (``0.0313725``, six digits, too few to be recognised by value), ``0.3`` for ``0.3``."""
    try:
        value = float(key)
    except (TypeError, ValueError):
        return str(key)
    level = round(value * 255) if math.isfinite(value) else 0
    if 0 < level < 255 and eps_key(level / 255) == key:
        value = level / 255
    return format_eps(value)


# ------------------------------------------------------------------ JSON forms


#: The suffix of the member that says which non-finite number a ``null`` stands for (:func:`strict_json`).
NONFINITE = "_nonfinite"
_NONFINITE_VALUES = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def to_json(record: Any) -> Any:
    """The JSON form of a record (dataclasses to dicts in field order, tuples to lists), strict JSON: a non-finite
    number is ``null`` beside a ``<name>_nonfinite`` member (:func:`strict_json`)."""
    return strict_json(_to_json(record))


def strict_json(value: Any) -> Any:
    """JSON data without infinities or NaN, which strict parsers reject: in every object, a member ``x`` holding
    a non-finite number (or such numbers inside lists) holds ``null`` there instead, and a member ``x_nonfinite``
    says what was there: ``"inf"``, ``"-inf"`` or ``"nan"``, or for a list an object by index (``{"3": "inf"}``,
    nested for lists of lists). :func:`restore_nonfinite` is the inverse. A non-finite number outside any object
    has nowhere to be said and is left as it is (``json.dumps(..., allow_nan=False)`` then refuses it)."""
    encoded, marker = _strict(value)
    return value if marker is not None else encoded


def _strict(value: Any) -> tuple[Any, Any]:
    """``value`` with its non-finite numbers as ``None``, and what they were (``None``: nothing replaced)."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value, None
        return None, "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            encoded[key], marker = _strict(item)
            if marker is not None:
                encoded[f"{key}{NONFINITE}"] = marker
        return encoded, None
    if isinstance(value, (list, tuple)):
        items, markers = [], {}
        for index, item in enumerate(value):
            item, marker = _strict(item)
            items.append(item)
            if marker is not None:
                markers[str(index)] = marker
        return items, markers or None
    return value, None


def restore_nonfinite(data: Any) -> Any:
    """The inverse of :func:`strict_json`: every ``x_nonfinite`` member put back into ``x`` (and dropped)."""
    if isinstance(data, dict):
        restored = {}
        for key, item in data.items():
            if isinstance(key, str) and key.endswith(NONFINITE) and key[:-len(NONFINITE)] in data:
                continue
            restored[key] = restore_nonfinite(item)
            if f"{key}{NONFINITE}" in data:
                restored[key] = _put_back(restored[key], data[f"{key}{NONFINITE}"])
        return restored
    if isinstance(data, list):
        return [restore_nonfinite(item) for item in data]
    return data


def _put_back(value: Any, marker: Any) -> Any:
    if isinstance(marker, str):
        return _NONFINITE_VALUES.get(marker, value) if value is None else value
    if isinstance(marker, dict) and isinstance(value, list):
        value = list(value)
        for index, inner in marker.items():
            if str(index).isdigit() and int(index) < len(value):
                value[int(index)] = _put_back(value[int(index)], inner)
    return value


def _to_json(record: Any) -> Any:
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        omitted = getattr(record, "omit_when_none", ())
        implied = getattr(record, "implied_fields", ())  # written as part of another key
        data = {f.name: _to_json(getattr(record, f.name)) for f in dataclasses.fields(record)
                if f.name not in implied and not (f.name in omitted and getattr(record, f.name) is None)}
        extra = getattr(record, "json_extra", None)
        return {**extra(), **data} if extra is not None else data
    if isinstance(record, (list, tuple)):
        return [_to_json(value) for value in record]
    if isinstance(record, dict):
        return {str(key): _to_json(value) for key, value in record.items()}
    return record


def from_json(cls: type, data: Any) -> Any:
    """A record of type ``cls`` from its JSON form (keys a newer version added are ignored); non-finite numbers
    are read in both forms: strict (``null`` and ``x_nonfinite``, :func:`strict_json`) and ``Infinity``/``NaN``."""
    return _convert(cls, restore_nonfinite(data))


def _convert(kind: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return _convert(options[0], data) if len(options) == 1 else data
    if origin in (list, tuple):
        (item, *_) = typing.get_args(kind) or (Any,)
        values = [_convert(item, value) for value in data]
        return tuple(values) if origin is tuple else values
    if origin is dict:
        _, value_kind = typing.get_args(kind)
        return {key: _convert(value_kind, value) for key, value in data.items()}
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        known = {f.name for f in dataclasses.fields(kind) if f.init}
        return kind(**{name: _convert(hints[name], value) for name, value in data.items() if name in known})
    if kind is float and isinstance(data, int):
        return float(data)
    return data


# ------------------------------------------------------------------------ rows


@dataclass
class _Row:
    """Every row names its unit of work (``key``) and its defence; its JSON form names its type (and check)."""

    type: ClassVar[str]
    key: str
    defense: str

    def json_extra(self) -> dict[str, Any]:
        check = getattr(self, "check", None)
        return {"type": self.type} if check is None else {"type": self.type, "check": check}


@dataclass
class _Measurement(_Row):
    """A measurement on the models that a masking check reads."""

    type: ClassVar[str] = "check"


@dataclass
class _PerMode(_Measurement):
    """A measurement made once per mode: its check is named ``<name>|<mode>``."""

    check_name: ClassVar[str]
    implied_fields: ClassVar[tuple[str, ...]] = ("mode",)  # the JSON form has it in ``check``
    mode: str

    @property
    def check(self) -> str:
        return f"{self.check_name}|{self.mode}"


@dataclass
class _Judged:
    """What a judgement over several draws adds to a row (a randomised model; see
    :class:`~shieldkit.evaluation.adaptive.Judgement`): the draws, and per judged sample the draws of each half
    it survived. ``None`` for one draw."""

    draws: int = 1
    selected: list[int] | None = None
    judged: list[int] | None = None


@dataclass
class CleanRow(_Judged, _Row):
    """The deployed system on the clean samples of one chunk.

    ``correct``: the samples it classified correctly (for a randomised model: on at least one draw, the
    attacks' candidates); ``selected``/``judged`` are aligned with the chunk's samples.
    """

    type: ClassVar[str] = "clean"
    chunk: tuple[int, int] = (0, 0)
    pred: list[int] = field(default_factory=list)
    correct: list[int] = field(default_factory=list)
    detected: list[int] = field(default_factory=list)
    omit_when_none: ClassVar[tuple[str, ...]] = ("selected", "judged")


@dataclass
class AttackRow(_Judged, _Row):
    """One attack at one epsilon against one defence on the candidates of one chunk.

    Attributes:
        stage: ``naive``, ``blackbox`` or ``adaptive``.
        attack: its label in the suite; ``name``: the registered name.
        attacked: the sample indices attacked (the cascade's candidates).
        fooled, misclassified, detected: the indices judged so on the deployed system (fooled: on every
            judging draw; misclassified: on most); ``selected``/``judged`` are aligned with ``attacked``.
        examples: the file in ``examples/`` holding the first samples' images, if any.
        error: a one-line description of a crash (its samples count as robust, and are flagged).
        disproved: for a certified defence, the fooled samples whose certificate this attack's
            example disproves (inside the certified radius, and the defended classifier
            confidently gives another class): an error of the certificate or of the judge.
    """

    type: ClassVar[str] = "attack"
    eps: float = 0.0
    stage: str = ""
    attack: str = ""
    name: str = ""
    access: str = ""
    chunk: tuple[int, int] = (0, 0)
    seed: int = 0
    attacked: list[int] = field(default_factory=list)
    fooled: list[int] = field(default_factory=list)
    misclassified: list[int] = field(default_factory=list)
    detected: list[int] = field(default_factory=list)
    pred: list[int] = field(default_factory=list)
    seconds: float = 0.0
    forwards: int = 0
    backwards: int = 0
    queries: int = 0
    error: str | None = None
    examples: str | None = None
    disproved: list[int] | None = None
    omit_when_none: ClassVar[tuple[str, ...]] = ("examples", "disproved", "selected", "judged")


@dataclass
class CertificateRow(_Row):
    """A certified defence's certificates for the clean samples of one chunk (``-1``: abstained)."""

    type: ClassVar[str] = "certificate"
    chunk: tuple[int, int]
    predictions: list[int]
    radii: list[float]
    forwards: int
    queries: int
    seconds: float


@dataclass
class RandomnessRow(_Measurement):
    """Two seeded forwards of the same clean images: how much the deployed model's output changes."""

    check: ClassVar[str] = "randomness"
    changed_predictions: float
    max_logit_difference: float


@dataclass
class GradientRow(_PerMode):
    """The share of samples whose input gradient is exactly zero, on the model one ``mode`` attacks."""

    check_name: ClassVar[str] = "gradients"
    zero_ce: float
    zero_margin: float
    error: str | None = None


@dataclass
class LargeEpsRow(_PerMode):
    """The strongest white-box attack at a budget covering the whole pixel range, in one ``mode``."""

    check_name: ClassVar[str] = "large_eps"
    attack: str
    eps: float
    samples: int
    accuracy: float | None = None
    error: str | None = None


@dataclass
class EffortRow(_PerMode):
    """The suite's strongest iterative attack re-run with twice the steps and one more restart, at one ``eps``,
    on the first chunk's samples that every attack of ``mode`` left robust (the checklist's "more effort")."""

    check_name: ClassVar[str] = "more_effort"
    eps: float
    attack: str
    target: str
    steps: int
    restarts: int
    attacked: list[int]
    fooled: list[int] = field(default_factory=list)
    #: the mode's robust accuracy on the first chunk: what a fooled share of ``attacked`` scales with
    robust: float = 0.0
    error: str | None = None


@dataclass
class RemedyNote:
    """One escalation the diagnosis chose (:mod:`shieldkit.escalation`): its name, why, and the attack it ran."""

    name: str
    reason: str
    attack: str = ""


@dataclass
class DiagnosisRow(_Row):
    """What :func:`shieldkit.diagnosis.diagnose` found on one defence's attack target, and the remedies it chose.

    Attributes:
        target: ``"deployed"`` (the model as given, or as the defence deploys it) or
            ``"adaptive view"`` (the defence's BPDA/EOT view).
        diagnosis: the findings, one per check.
        remedies: the escalations run in the adaptive stage (empty when none was needed
            or the run is naive only).
        judging_draws: forwards that judge each point of the deployed system (1: deterministic; see
            :mod:`~shieldkit.evaluation.judging`).
        prediction_variance: for a randomised model, the largest per-sample variance of a correct prediction
            that set ``judging_draws``.
    """

    type: ClassVar[str] = "diagnosis"
    target: str
    diagnosis: Diagnosis
    remedies: list[RemedyNote] = field(default_factory=list)
    judging_draws: int = 1
    prediction_variance: float | None = None
    omit_when_none: ClassVar[tuple[str, ...]] = ("prediction_variance",)


Row = (CleanRow | AttackRow | CertificateRow | RandomnessRow | GradientRow | LargeEpsRow | EffortRow
       | DiagnosisRow)


def row_from_json(data: dict[str, Any]) -> Row:
    """The typed row of one line of ``results.jsonl``."""
    kind = data.get("type")
    if kind == "clean":
        return from_json(CleanRow, data)
    if kind == "attack":
        return from_json(AttackRow, data)
    if kind == "certificate":
        return from_json(CertificateRow, data)
    if kind == "diagnosis":
        return from_json(DiagnosisRow, data)
    if kind == "check":
        name, _, mode = str(data.get("check", "")).partition("|")
        if name == "randomness":
            return from_json(RandomnessRow, data)
        cls = {row.check_name: row for row in (GradientRow, LargeEpsRow, EffortRow)}.get(name)
        if cls is not None:
            return from_json(cls, {**data, "mode": mode})
    raise ValueError(f"not a results row of format {RESULTS_FORMAT}: type={kind!r}, check={data.get('check')!r}")
