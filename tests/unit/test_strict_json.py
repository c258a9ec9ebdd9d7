"""Strict JSON: every record that can hold a float round-trips through JSON that strict parsers accept.

JSON has no infinity or NaN; Python writes ``Infinity``/``NaN`` unless told not to, and Node's ``JSON.parse``
(like most parsers) rejects them. Every record is built here with every float field (and every float inside
its lists, tuples and dicts) set to ``inf``, ``-inf``, ``nan`` or a finite number in turn, from the type hints,
so a field added later is covered without editing this file.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import types
import typing
from typing import Any, Union

import pytest

from shieldkit.diagnosis import Diagnosis
from shieldkit.diagnosis.records import CHECKS, Finding
from shieldkit.evaluation import records
from shieldkit.evaluation.manifest import Manifest
from shieldkit.evaluation.records import (
    NONFINITE,
    from_json,
    restore_nonfinite,
    row_from_json,
    strict_json,
    to_json,
)
from shieldkit.evaluation.summaries import RunSummary

#: every row type that holds a float (CleanRow holds none: indices and counts)
ROWS = (records.AttackRow, records.CertificateRow, records.RandomnessRow, records.GradientRow,
        records.LargeEpsRow, records.EffortRow, records.DiagnosisRow)


def reject(constant: str):
    raise ValueError(f"not strict JSON: {constant}")


def strict_loads(text: str) -> Any:
    """``json.loads`` as a strict parser reads: ``Infinity``, ``-Infinity`` and ``NaN`` are errors."""
    return json.loads(text, parse_constant=reject)


class Sample:
    """Instances of a record type with every float taken in turn from ``inf, -inf, nan, 0.25``."""

    def __init__(self, finite_only: bool = False):
        self.floats = itertools.cycle([0.25] if finite_only else [math.inf, -math.inf, math.nan, 0.25])

    def of(self, kind: Any) -> Any:
        origin = typing.get_origin(kind)
        if kind is Any or kind is float:
            return next(self.floats)
        if kind is Diagnosis:
            findings = tuple(Finding(check, False, 0.5, next(self.floats), next(self.floats), "detail")
                             for check in CHECKS)
            return Diagnosis(findings, next(self.floats), 4, 8)
        if kind is bool:
            return True
        if kind is int:
            return 3
        if kind is str:
            return "naive"
        if origin in (Union, types.UnionType):
            return self.of(next(k for k in typing.get_args(kind) if k is not type(None)))
        if origin is list:
            (item,) = typing.get_args(kind)
            return [self.of(item), self.of(item)]
        if origin is tuple:
            items = typing.get_args(kind)
            if len(items) == 2 and items[1] is Ellipsis:
                return (self.of(items[0]), self.of(items[0]))
            return tuple(self.of(item) for item in items)
        if origin is dict:
            _, value = typing.get_args(kind)
            return {"naive": self.of(value), "adaptive": self.of(value)}
        if dataclasses.is_dataclass(kind):
            hints = typing.get_type_hints(kind)
            return kind(**{f.name: self.of(hints[f.name]) for f in dataclasses.fields(kind) if f.init})
        raise TypeError(f"no sample for {kind!r}")


def read(cls: type, data: Any) -> Any:
    """A record from its JSON form as shieldkit reads it (a row by its type, as results.jsonl is read)."""
    return row_from_json(data) if cls in ROWS else from_json(cls, data)


def same(a: Any, b: Any) -> bool:
    """Equal, NaN included (``repr`` writes every float exactly, NaN as ``nan``)."""
    return type(a) is type(b) and repr(a) == repr(b)


@pytest.mark.parametrize("cls", [*ROWS, RunSummary, Manifest], ids=lambda cls: cls.__name__)
def test_every_record_round_trips_through_strict_json(cls):
    record = Sample().of(cls)
    text = json.dumps(to_json(record), allow_nan=False)  # refuses Infinity/NaN
    assert f'{NONFINITE}":' in text, "the sample holds no non-finite number"
    assert same(read(cls, strict_loads(text)), record)


@pytest.mark.parametrize("cls", [*ROWS, RunSummary, Manifest], ids=lambda cls: cls.__name__)
def test_files_written_with_infinity_before_still_read(cls):
    record = Sample().of(cls)
    old = json.dumps(restore_nonfinite(to_json(record)))  # what shieldkit wrote before: Infinity, NaN
    assert "Infinity" in old or "NaN" in old
    assert same(read(cls, json.loads(old)), record)


@pytest.mark.parametrize("cls", [records.CleanRow, *ROWS, RunSummary, Manifest], ids=lambda cls: cls.__name__)
def test_finite_records_are_written_as_before(cls):
    record = Sample(finite_only=True).of(cls)
    assert NONFINITE not in json.dumps(to_json(record), allow_nan=False)


def test_the_form_names_the_member_and_the_list_index():
    row = records.CertificateRow(key="k", defense="d", chunk=(0, 3), predictions=[1, 2, 3],
                                 radii=[0.5, math.inf, math.nan], forwards=1, queries=1, seconds=-math.inf)
    data = to_json(row)
    assert data["radii"] == [0.5, None, None] and data[f"radii{NONFINITE}"] == {"1": "inf", "2": "nan"}
    assert data["seconds"] is None and data[f"seconds{NONFINITE}"] == "-inf"
    nested = strict_json({"curve": [[0.0, 1.0], [math.inf, 0.5]], "by_mode": {"naive": math.nan}})
    assert nested == {"curve": [[0.0, 1.0], [None, 0.5]], f"curve{NONFINITE}": {"1": {"0": "inf"}},
                      "by_mode": {"naive": None, f"naive{NONFINITE}": "nan"}}
    assert same(restore_nonfinite(nested), {"curve": [[0.0, 1.0], [math.inf, 0.5]], "by_mode": {"naive": math.nan}})


def test_the_writers_refuse_what_strict_json_cannot_say(tmp_path):
    from shieldkit.evaluation.results import write_json

    write_json(tmp_path / "ok.json", {"x": math.inf, "y": [1.0, math.nan]})
    data = strict_loads((tmp_path / "ok.json").read_text())
    assert data == {"x": None, f"x{NONFINITE}": "inf", "y": [1.0, None], f"y{NONFINITE}": {"1": "nan"}}
    with pytest.raises(ValueError):
        write_json(tmp_path / "bare.json", [math.inf])  # no member to say it in: refused, not written as Infinity
