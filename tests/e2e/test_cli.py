"""The `shieldkit` command: listing, info, plugins, exit codes."""

from __future__ import annotations

import json

import pytest

from shieldkit.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_attacks_table_and_json(capsys):
    code, out, _ = run(capsys, "list", "attacks", "fgsm*")
    assert code == 0 and "fgsm.native" in out and "linf,l2" in out
    code, out, _ = run(capsys, "list", "attacks", "--source", "native", "--json")
    records = json.loads(out)
    assert code == 0 and all(r["source"] == "native" for r in records)
    assert {"name", "norms", "params", "access", "targeted"} <= set(records[0])


def test_list_other_kinds(capsys):
    for kind in ("defenses", "models", "datasets"):
        code, out, _ = run(capsys, "list", kind, "--json")
        assert code == 0 and isinstance(json.loads(out), list)
    code, out, _ = run(capsys, "list", "datasets")
    assert "mnist.native" in out


def test_list_with_no_match(capsys):
    code, out, _ = run(capsys, "list", "attacks", "zzz*")
    assert code == 0 and "no attacks match" in out


def test_info(capsys):
    code, out, _ = run(capsys, "info", "fgsm")
    assert code == 0 and "name: fgsm.native" in out and "eps = 8/255 (0.0314)" in out  # the effective default
    code, out, _ = run(capsys, "info", "mnist", "--json")
    assert code == 0 and json.loads(out)["kind"] == "dataset"


def test_unknown_name_exits_2_with_a_suggestion(capsys):
    code, _, err = run(capsys, "info", "fgms")
    assert code == 2 and "did you mean 'fgsm'" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "gizmos"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_plugins(capsys):
    code, out, _ = run(capsys, "plugins")
    assert code == 0 and "native" in out and "shieldkit 0.1.0" in out
    code, out, _ = run(capsys, "plugins", "--json")
    records = {p["name"]: p for p in json.loads(out)}
    assert records["native"]["status"] == "ok", records["native"]["errors"]
