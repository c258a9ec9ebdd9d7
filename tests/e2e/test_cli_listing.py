"""`shieldkit list` and `shieldkit info` as a plugin author meets them: effective defaults, options anywhere,
and the plugin trace printed once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections import Counter

import pytest

import shieldkit as sk
from shieldkit.cli import main
from shieldkit.plugins.registry import reset_registry


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class _Probe(sk.Attack):
    def _run(self, model, x, y, target):
        return x


def _probe_plugin():
    """A plugin 'probe' with two sign_* attacks and one other; one declares how its None default resolves."""
    classes = [
        type("SignOne", (_Probe,), {"family": "sign_one", "__doc__": "First sign probe."}),
        type("SignTwo", (_Probe,), {
            "family": "sign_two", "__doc__": "Second sign probe.", "param_notes": {"step_size": "eps / 4"},
            "__init__": lambda self, *, step_size=None, **common: _Probe.__init__(self, **common)}),
        type("Other", (_Probe,), {"family": "other_probe", "__doc__": "Not a sign probe.", "bounded": False}),
    ]
    module = types.ModuleType("probe_plugin")
    module.register_attacks = sk.hookimpl(lambda register: [register(cls) for cls in classes])
    return module


# ------------------------------------------------------------------ options before the pattern


@pytest.mark.parametrize("argv", [
    ("list", "attacks", "--source", "probe", "sign*"),
    ("list", "attacks", "sign*", "--source", "probe"),
    ("list", "--source", "probe", "attacks", "sign*"),
])
def test_options_may_come_before_or_after_the_pattern(fresh_registry, capsys, argv):
    sk.register_plugin(_probe_plugin(), "probe")
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert names == ["sign_one.probe", "sign_two.probe"]


def test_json_flag_before_the_pattern(fresh_registry, capsys):
    sk.register_plugin(_probe_plugin(), "probe")
    code, out, _ = _run(capsys, "list", "attacks", "--json", "--source", "probe", "other*")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["other_probe.probe"]


def test_a_second_pattern_is_still_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "attacks", "--source", "native", "fgsm*", "pgd*"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: pgd*" in capsys.readouterr().err


# ------------------------------------------------------------------ effective defaults


def test_info_shows_the_effective_eps_of_a_bounded_attack(capsys):
    code, out, _ = _run(capsys, "info", "fgsm")
    assert code == 0
    lines = {line.split(" = ")[0].strip(): line for line in out.splitlines() if " = " in line}
    # 8/255 and 0.5 are torchattacks' and the literature's defaults, which shieldkit's DEFAULT_EPS follows.
    assert lines["eps"].strip() == f"eps = 8/255 ({8 / 255:.4f})  (DEFAULT_EPS[norm]; l2: 0.5)"
    assert lines["norm"].strip() == "norm = 'linf'  (the first of linf, l2)"
    assert lines["seed"].strip() == "seed = None"


def test_info_json_keeps_the_signature_and_adds_the_effective_defaults():
    info = sk.attack_info("fgsm")
    assert info["params"]["eps"] is None  # the signature, unchanged
    assert info["effective_params"]["eps"] == 8 / 255 and info["effective_params"]["norm"] == "linf"
    assert info["param_rules"]["eps"].startswith("DEFAULT_EPS[norm]")


def test_info_says_how_a_derived_default_resolves(fresh_registry, capsys):
    sk.register_plugin(_probe_plugin(), "probe")
    code, out, _ = _run(capsys, "info", "sign_two.probe")
    assert code == 0 and "  step_size = None  (eps / 4)" in out.splitlines()
    code, out, _ = _run(capsys, "info", "other_probe.probe")  # unbounded: no budget unless given
    eps_line = next(line for line in out.splitlines() if line.strip().startswith("eps = "))
    assert eps_line.strip().startswith("eps = None  (no budget")


def test_info_shows_a_backend_step_size_rule(capsys):
    code, out, _ = _run(capsys, "info", "pgd.torchattacks")
    if code != 0:
        pytest.fail(f"pgd.torchattacks is not available: {out}")
    assert "  step_size = None  (0.25 * eps)" in out.splitlines()


# ------------------------------------------------------------------ tracing once


def test_trace_prints_each_line_once_in_the_command():
    env = {**os.environ, "SHIELDKIT_TRACE_PLUGINS": "1"}
    result = subprocess.run([sys.executable, "-m", "shieldkit.cli", "list", "attacks", "fgsm*"], env=env,
                            capture_output=True, text=True, timeout=300, check=True)
    # Each message with whatever prefix a handler gave it ("shieldkit.plugins.manager: ", "DEBUG shieldkit.plugins.manager: ").
    messages = [line.split("shieldkit.plugins.manager: ", 1)[1] for line in result.stderr.splitlines()
                if "shieldkit.plugins.manager: " in line]
    assert any(m.startswith("loaded plugin native") for m in messages), result.stderr
    assert any("register_attacks" in m for m in messages), result.stderr
    repeated = {message: n for message, n in Counter(messages).items() if n > 1}
    assert not repeated, repeated


def test_trace_handler_is_added_once_however_often_the_registry_is_reset(fresh_registry, capsys):
    fresh_registry.setenv("SHIELDKIT_TRACE_PLUGINS", "1")
    for _ in range(3):
        reset_registry()
        sk.list_attacks("fgsm*")
    err = capsys.readouterr().err
    assert err.count("loaded plugin native ") == 3  # once per registry load, not once per handler
    fresh_registry.delenv("SHIELDKIT_TRACE_PLUGINS")
    reset_registry()
    sk.list_attacks("fgsm*")
    assert "loaded plugin" not in capsys.readouterr().err  # off again
