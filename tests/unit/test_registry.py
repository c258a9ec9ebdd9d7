"""Registry names, resolution, metadata, and plugins that misbehave."""

from __future__ import annotations

import types

import pytest

import shieldkit as sk


def _attack_class(family, norms=("linf",), **attributes):
    def _run(self, model, x, y, target):
        return x

    namespace = {"family": family, "norms": norms, "_run": _run, "__doc__": f"A {family} test attack."}
    namespace.update(attributes)
    return type(f"Attack_{family}", (sk.Attack,), namespace)


def _plugin(**hooks):
    module = types.ModuleType("test_plugin")
    for hook, function in hooks.items():
        setattr(module, hook, sk.hookimpl(function))
    return module


def test_names_are_family_dot_source():
    assert "fgsm.native" in sk.list_attacks()
    assert all(name.count(".") == 1 for name in sk.list_attacks())


def test_wildcards_sources_and_filters(fresh_registry):
    fgsm_like = _attack_class("fgsm", norms=("l2",), targeted=False)
    sk.register_plugin(_plugin(register_attacks=lambda register: register(fgsm_like)), "zeta")
    assert sk.list_attacks("fgsm*") == sk.list_attacks("fgsm")
    assert {"fgsm.native", "fgsm.zeta"} <= set(sk.list_attacks("fgsm*"))
    assert sk.list_attacks("*.zeta") == ["fgsm.zeta"]
    assert sk.list_attacks(source="zeta") == ["fgsm.zeta"]
    assert "fgsm.zeta" not in sk.list_attacks(norm="linf")
    assert "fgsm.zeta" in sk.list_attacks(targeted=False)
    assert "fgsm.native" not in sk.list_attacks(targeted=False)


def test_bare_family_resolves_by_preference(fresh_registry):
    for source in ("zeta", "alpha"):
        cls = _attack_class("novel")
        sk.register_plugin(_plugin(register_attacks=lambda register, cls=cls: register(cls)), source)
    fgsm_like = _attack_class("fgsm")
    sk.register_plugin(_plugin(register_attacks=lambda register: register(fgsm_like)), "aardvark")
    assert sk.create_attack("fgsm").name == "fgsm.native"  # native beats any plugin
    assert sk.create_attack("novel").name == "novel.alpha"  # then alphabetical
    assert sk.create_attack("novel.zeta").name == "novel.zeta"
    assert sk.create_attack("NOVEL.Zeta").name == "novel.zeta"


def test_attack_info_lists_capabilities_and_parameters():
    info = sk.attack_info("fgsm")
    assert info["name"] == "fgsm.native" and info["plugin"] == "native"
    assert info["distribution"] == "shieldkit"
    assert info["norms"] == ["linf", "l2"] and info["access"] == "gradient"
    assert info["params"] == {"eps": None, "norm": None, "bounds": [0.0, 1.0], "seed": None}
    assert info["summary"].startswith("One step")


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(sk.InvalidParameterError, match="unknown parameters 'steps', 'alpha'; valid parameters: eps"):
        sk.create_attack("fgsm", steps=3, alpha=1)


def test_unknown_names_in_every_kind():
    for create, name in ((sk.create_attack, "fgsmm"), (sk.create_defense, "jpge"),
                         (sk.create_model, "mnist_cn"), (sk.create_dataset, "mnits")):
        with pytest.raises(sk.UnknownNameError, match="unknown"):
            create(name)


def test_hyphenated_names_are_normalised(fresh_registry):
    def fashion_like(split="test", root=None):
        return split

    sk.register_plugin(_plugin(register_datasets=lambda register: register(fashion_like, name="fashion-like")), "extra")
    assert sk.create_dataset("fashion-like", split="train") == "train"
    assert "fashion_like.extra" in sk.list_datasets()


# ---------------------------------------------------------- broken plugins


def test_plugin_whose_hook_raises_is_recorded_and_others_work(fresh_registry):
    def boom(register):
        raise ValueError("kaput")

    info = sk.register_plugin(_plugin(register_attacks=boom), "raiser")
    assert info.status == "failed" and "kaput" in info.errors[0] and "register_attacks" in info.errors[0]
    assert "fgsm.native" in sk.list_attacks()


def test_wrong_type_bad_family_and_duplicates_are_rejected(fresh_registry):
    good = _attack_class("fine")

    def register_all(register):
        register(42)
        register(object)
        register(_attack_class("bad family!"))
        register(_attack_class("weird", norms=("l3",)))
        register(good)
        register(good)  # duplicate

    info = sk.register_plugin(_plugin(register_attacks=register_all), "messy")
    assert info.status == "failed"
    text = "\n".join(info.errors)
    assert "expected a subclass of shieldkit.Attack, got 42" in text
    assert "lower snake_case" in text
    assert "norms=('l3',)" in text
    assert "already registered by plugin 'messy'" in text
    assert info.registered == ["fine.messy"]  # the valid registration stays usable
    assert sk.create_attack("fine").name == "fine.messy"


def test_defense_registered_as_attack_is_rejected(fresh_registry):
    class NotAnAttack(sk.TransformDefense):
        family = "nope"

    info = sk.register_plugin(_plugin(register_attacks=lambda register: register(NotAnAttack)), "confused")
    assert info.status == "failed" and "subclass of shieldkit.Attack" in info.errors[0]


def test_plugin_name_taken(fresh_registry):
    info = sk.register_plugin(_plugin(), "native")
    assert info.status == "failed" and "already taken" in info.errors[0]


def test_strict_mode_raises(fresh_registry):
    fresh_registry.setenv("SHIELDKIT_STRICT_PLUGINS", "1")
    with pytest.raises(sk.PluginError, match="'strict'.*expected a subclass"):
        sk.register_plugin(_plugin(register_attacks=lambda register: register(42)), "strict")


def test_block_list_removes_builtin_plugins(fresh_registry):
    fresh_registry.setenv("SHIELDKIT_BLOCK_PLUGINS", "native")
    assert "fgsm.native" not in sk.list_attacks()
    native = next(p for p in sk.list_plugins() if p.name == "native")
    assert native.status == "blocked"


def test_missing_dependency_says_what_to_install(fresh_registry):
    def needs_library(register):
        raise sk.MissingDependencyError("needs the 'unobtainium' library: pip install shieldkit[unobtainium]")

    info = sk.register_plugin(_plugin(register_attacks=needs_library), "exotic")
    assert info.status == "missing"
    with pytest.raises(sk.MissingDependencyError, match=r"pip install shieldkit\[unobtainium\]"):
        sk.create_attack("pgd.exotic")
