"""ε as researchers write it: ``parse_eps`` reads ``8/255`` from the API, the TOML and the command line;
``format_eps`` shows every ε as ``8/255`` or ``0.3``; ``default_eps`` picks the grid from the data's shape;
the reports print fractions while what a run records stays numeric. No model, no data, no attack run."""

from __future__ import annotations

import json

import pytest

from shieldkit.cli.evaluate import build_config
from shieldkit.cli.main import build_parser
from shieldkit.core.errors import InvalidParameterError
from shieldkit.core.threat import format_eps
from shieldkit.evaluation.config import (
    DEFAULT_EPS,
    EvalConfig,
    check_eps,
    config_from_mapping,
    default_eps,
    image_kind,
    parse_eps,
)
from shieldkit.evaluation.manifest import DefenseManifest, Manifest
from shieldkit.evaluation.records import AttackRow, CleanRow, eps_key, eps_label, to_json
from shieldkit.evaluation.report import format_table, write_reports
from shieldkit.evaluation.summaries import SuiteAttack
from shieldkit.evaluation.summary import summarize

# ------------------------------------------------------------------ parse_eps


@pytest.mark.parametrize(("given", "expected"), [
    ("8/255", [8 / 255]),
    ("2/255,8/255", [2 / 255, 8 / 255]),
    ("8/255, 2/255 8/255", [2 / 255, 8 / 255]),  # commas or spaces; duplicates once
    (["2/255", "8/255"], [2 / 255, 8 / 255]),  # --eps 2/255 8/255 (nargs)
    (["2/255,8/255"], [2 / 255, 8 / 255]),  # --eps 2/255,8/255
    (["0.1,0.2", "0.3"], [0.1, 0.2, 0.3]),
    ("0.5", [0.5]),
    (0.3, [0.3]),
    (1, [1.0]),
    ([8 / 255], [8 / 255]),
    ((0.3, 0.1), [0.1, 0.3]),
    (["8/255", 0.5], [8 / 255, 0.5]),  # TOML: eps = ["8/255", 0.5]
    (" 4 / 255 ", [4 / 255]),
    ("1e-2", [0.01]),
    ("0.5/255", [0.5 / 255]),
])
def test_parse_eps_reads_numbers_and_fractions(given, expected):
    parsed = parse_eps(given)
    assert parsed == expected and all(type(v) is float for v in parsed)


def test_a_fraction_is_the_float_python_computes():
    (value,) = parse_eps("8/255")
    assert value == 8 / 255 and eps_key(value) == eps_key(8 / 255)  # same summary key as the numeric form


def test_parse_eps_keeps_none_for_a_grid_that_follows_the_data():
    assert parse_eps(None) is None


@pytest.mark.parametrize(("given", "token"), [
    ("8/0", "'8/0'"),
    ("-8/255", "'-8/255'"),
    ("0", "'0'"),
    (-0.1, "-0.1"),
    ("abc", "'abc'"),
    ("8//255", "'8//255'"),
    ("8/255/2", "'8/255/2'"),
    ("inf", "'inf'"),
    ("0.1,nan", "'nan'"),
    ("8/nan", "'8/nan'"),
    (float("nan"), "nan"),
    (["0.1", "x/255"], "'x/255'"),
    ([0.1, None], "None"),
    (True, "True"),
    ({"eps": 1}, "{'eps': 1}"),
])
def test_bad_eps_is_one_line_naming_eps_and_the_token(given, token):
    with pytest.raises(InvalidParameterError) as error:
        parse_eps(given)
    message = str(error.value)
    assert message.startswith("eps: ") and token in message and "\n" not in message


def test_division_by_zero_and_negative_say_so():
    with pytest.raises(InvalidParameterError, match="division by zero"):
        parse_eps("8/0")
    with pytest.raises(InvalidParameterError, match="must be finite and > 0"):
        parse_eps("-8/255")
    with pytest.raises(InvalidParameterError, match="must be finite and > 0, got 'nan'"):
        parse_eps("0.1,nan")


@pytest.mark.parametrize("given", ["", " , ", [], ()])
def test_no_eps_at_all_is_an_error(given):
    with pytest.raises(InvalidParameterError, match="eps: give at least one epsilon"):
        parse_eps(given)


# ------------------------------------------------------------------ format_eps


@pytest.mark.parametrize(("value", "shown"), [
    (0.1, "0.1"),
    (0.2, "0.2"),  # 51/255 exactly, but a short decimal prints as itself
    (0.3, "0.3"),
    (0.1 + 0.2, "0.3"),
    (0.5, "0.5"),
    (0.25, "0.25"),
    (1.0, "1"),
    (2.0, "2"),
    (12.0, "12"),
    (8 / 255, "8/255"),
    (2 / 255, "2/255"),
    (4 / 255, "4/255"),
    (1 / 255, "1/255"),
    (16 / 255, "16/255"),
    (254 / 255, "254/255"),
    (0.0314, "0.0314"),  # near 8/255 but not it
    (0.123456, "0.123456"),
])
def test_format_eps(value, shown):
    assert format_eps(value) == shown


def test_format_eps_round_trips_through_parse_eps():
    for value in (0.1, 0.3, 0.5, 2 / 255, 4 / 255, 8 / 255, 1.0, 0.25):
        assert parse_eps(format_eps(value)) == [value]


def test_eps_label_recognises_the_six_digit_key_of_a_fraction():
    assert eps_key(8 / 255) == "0.0313725" and eps_label("0.0313725") == "8/255"
    assert [eps_label(eps_key(v)) for v in (2 / 255, 0.1, 0.2, 0.5, 1.0)] == ["2/255", "0.1", "0.2", "0.5", "1"]


# ------------------------------------------------------------------ default_eps


@pytest.mark.parametrize(("norm", "shape", "expected"), [
    ("linf", (1, 28, 28), [0.1, 0.2, 0.3]),
    ("linf", (1, 64, 64), [0.1, 0.2, 0.3]),  # one channel: MNIST-like whatever its size
    ("linf", (3, 28, 28), [0.1, 0.2, 0.3]),  # small colour images too
    ("l2", (1, 28, 28), list(DEFAULT_EPS)),  # the L2 grid every run had before
    ("linf", (3, 32, 32), [2 / 255, 4 / 255, 8 / 255]),
    ("linf", (3, 64, 64), [2 / 255, 4 / 255, 8 / 255]),
    ("l2", (3, 32, 32), [0.25, 0.5]),
    ("linf", (3, 224, 224), [2 / 255, 4 / 255]),
    ("linf", (3, 65, 40), [2 / 255, 4 / 255]),
    ("l2", (3, 224, 224), [0.5, 1.0, 2.0]),
    ("l1", (3, 32, 32), [6.0, 12.0]),
    ("l1", (1, 28, 28), [5.0, 10.0]),
    ("l0", (3, 224, 224), [50.0, 100.0, 200.0]),
    ("Linf", (3, 32, 32), [2 / 255, 4 / 255, 8 / 255]),  # norm aliases as everywhere
])
def test_default_eps_follows_the_shape_and_the_norm(norm, shape, expected):
    grid = default_eps(norm, shape)
    assert grid == expected
    check_eps(grid, norm.lower(), (0.0, 1.0), shape[0] * shape[1] * shape[2])  # every default is a valid grid


def test_default_eps_leaves_out_what_a_tiny_image_cannot_reach():
    assert default_eps("l0", (1, 3, 3)) == [5.0]  # 9 coordinates: 10 and 20 are out of range
    assert default_eps("l1", (1, 2, 2)) == [4.0]  # none reachable: the largest that is
    assert default_eps("linf", (1, 2, 2)) == [0.1, 0.2, 0.3]


def test_image_kind_and_bad_shapes():
    assert [image_kind(s) for s in ((1, 28, 28), (3, 32, 32), (3, 224, 224))] == ["mnist", "cifar", "imagenet"]
    for bad in ((3, 32), (0, 32, 32), "3x32x32", None):
        with pytest.raises(InvalidParameterError, match="image_shape"):
            default_eps("linf", bad)


def test_check_eps_refuses_an_unresolved_grid_and_shows_a_fraction_out_of_range():
    with pytest.raises(InvalidParameterError, match="default_eps"):
        check_eps(None, "linf", (0.0, 1.0))
    with pytest.raises(InvalidParameterError, match="eps=8/255 is out of range"):
        check_eps([8 / 255], "linf", (0.0, 0.01))


# ------------------------------------------------------------------ configuration: API, TOML, CLI


def test_eval_config_eps_is_none_until_given():
    config = EvalConfig()
    assert config.eps is None and config.identity()["eps"] is None
    json.dumps(config.identity())  # None is recorded as null


def test_toml_fractions(tmp_path):
    assert config_from_mapping({"eps": ["2/255", "8/255"]}).eps == [2 / 255, 8 / 255]
    assert config_from_mapping({"eps": "8/255"}).eps == [8 / 255]
    assert config_from_mapping({"eps": ["8/255", 0.5]}).eps == [8 / 255, 0.5]
    assert config_from_mapping({"norm": "l2"}).eps is None
    with pytest.raises(InvalidParameterError, match="eps: 'eight' is not a number"):
        config_from_mapping({"eps": ["eight"]})
    path = tmp_path / "run.toml"
    path.write_text('eps = ["2/255", "8/255"]\nn = 10\n')
    config = build_config(build_parser().parse_args(["evaluate", "--config", str(path)]))
    assert config.eps == [2 / 255, 8 / 255] and config.n == 10
    # a flag overrides the file
    config = build_config(build_parser().parse_args(["evaluate", "--config", str(path), "--eps", "4/255"]))
    assert config.eps == [4 / 255]


@pytest.mark.parametrize(("argv", "expected"), [
    (["--eps", "8/255"], [8 / 255]),
    (["--eps", "2/255", "8/255"], [2 / 255, 8 / 255]),
    (["--eps", "2/255,8/255"], [2 / 255, 8 / 255]),
    (["--eps", "0.1,0.2,0.3"], [0.1, 0.2, 0.3]),
    (["--attacks", "fgsm"], None),  # no --eps and no TOML: the grid follows the data
])
def test_cli_eps(argv, expected):
    config = build_config(build_parser().parse_args(["evaluate", *argv]))
    assert config.eps == expected


def test_cli_bad_eps_is_one_line_and_exit_2(capsys):
    from shieldkit.cli import main

    code = main(["evaluate", "--attacks", "fgsm", "--eps", "8/0", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "eps: division by zero in '8/0'" in err


def test_cli_help_says_fractions_are_accepted(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--help"])
    assert "--eps 8/255" in " ".join(capsys.readouterr().out.split())


def test_a_suite_resolves_before_the_grid_is_known():
    from shieldkit.evaluation.suite import resolve_suite

    config = EvalConfig()
    suite = resolve_suite(["fgsm", "pgd:steps=3"], ["none"], config)
    assert [a.label for a in suite.attacks] == ["fgsm", "pgd"] and config.eps is None


# ------------------------------------------------------------------ the reports print fractions

N = 10
GRID = [2 / 255, 8 / 255]


def _summary(fooled_at):
    defense = DefenseManifest(label="none", name="none", kind="none", view="same as deployed", adaptive_stage=False,
                              randomized=False, eot=1, same_as_naive=True, certifier=None)
    manifest = Manifest(config_hash="synthetic", data="synthetic", n=N, image_size=3 * 32 * 32,
                        labels=list(range(N)), norm="linf", eps=list(GRID), bounds=(0.0, 1.0), cascade=True, seed=0,
                        checks=True, examples=0, attacks=[SuiteAttack("pgd", "pgd.native", "gradient")],
                        defenses=[defense])
    rows = [CleanRow(key="clean|none|0", defense="none", chunk=(0, N), pred=list(range(N)), correct=list(range(N)),
                     detected=[])]
    rows += [AttackRow(key=f"attack|none|{eps!r}|naive|pgd|0", defense="none", eps=eps, stage="naive", attack="pgd",
                       name="pgd.native", access="gradient", chunk=(0, N), seed=0, attacked=list(range(N)),
                       fooled=list(fooled), misclassified=list(fooled))
             for eps, fooled in zip(GRID, fooled_at)]
    return summarize(rows, manifest)


def test_reports_show_fractions_and_summary_json_stays_numeric(tmp_path):
    summary = _summary([[0, 1], [0, 1, 2, 3, 4]])
    table = format_table(summary)
    assert "eps=2/255 naive/adaptive" in table and "eps=8/255 naive/adaptive" in table and "0.0313725" not in table
    write_reports(tmp_path, summary)
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert "ε=2/255 naive" in text and "ε=8/255 adaptive" in text, name
        assert "0.0313725" not in text and "0.00784314" not in text, name
    record = to_json(summary)
    assert record["eps"] == GRID  # the recorded grid: numbers, as every earlier run wrote them
    assert list(record["defenses"][0]["eps"]) == ["0.00784314", "0.0313725"]  # the keys, unchanged


def test_a_check_names_the_fraction():
    summary = _summary([[0, 1, 2, 3, 4], [0]])  # accuracy rises with eps
    (outcome,) = [c for c in summary.defense("none").checks if c.check == "monotone" and c.mode == "naive"]
    assert outcome.passed is False and "at 2/255 ->" in outcome.reason and "at 8/255)" in outcome.reason
