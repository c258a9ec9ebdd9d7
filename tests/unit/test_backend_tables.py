"""The backend tables as data: typed options, one named class per row, one construction path.

Nothing here runs a library: the tables are checked as they are built at import.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

import shieldkit as sk
from shieldkit.backends import AttackSpec, BackendOptions, make_attack_class
from shieldkit.backends import _art_defenses as art_defenses
from shieldkit.backends import art as art_backend
from shieldkit.backends import torchattacks as ta_backend
from shieldkit.backends.art import ArtAttack, ArtOptions
from shieldkit.backends.torchattacks import TorchattacksAttack, TorchattacksOptions

BACKENDS = [
    (ta_backend, ta_backend.ATTACKS, TorchattacksOptions, "_attack"),
    (art_backend, art_backend.ATTACKS, ArtOptions, "_attack"),
]


# ---------------------------------------------------------------- typed options


@pytest.mark.parametrize("options_type", [BackendOptions, TorchattacksOptions, ArtOptions])
def test_an_unknown_option_is_refused(options_type):
    with pytest.raises(TypeError, match="needs_logits"):
        options_type(needs_logits=True)
    with pytest.raises(TypeError):
        options_type(True)  # keywords only: a flag is always named
    with pytest.raises(TypeError, match="rgb must be True or False"):
        options_type(rgb="yes")


def test_option_values_are_checked_when_the_table_is_built():
    with pytest.raises(ValueError, match="layout must be one of nchw, nhwc, flat"):
        ArtOptions(layout="nwhc")
    with pytest.raises(ValueError, match="unknown fix 'float_mean'"):
        ArtOptions(fix="float_mean")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ArtOptions().rgb = True  # type: ignore[misc]


@pytest.mark.parametrize(("options", "base"), [
    ({"rgb": True}, TorchattacksAttack),  # a dict is not converted
    (ArtOptions(rgb=True), TorchattacksAttack),  # another backend's flags
    (TorchattacksOptions(), ArtAttack),
    (BackendOptions(), ArtAttack),
])
def test_a_row_takes_only_its_backends_options(options, base):
    spec = AttackSpec("probe", "Probe", ("linf",), options=options)
    with pytest.raises(TypeError, match="probe.x: options must be a"):
        make_attack_class(spec, base, "x", __name__)


@pytest.mark.parametrize(("module", "attacks", "options_type", "maker"), BACKENDS,
                         ids=["torchattacks", "art"])
def test_every_row_has_its_backends_options(module, attacks, options_type, maker):
    assert attacks and module.TABLE == tuple(cls.spec for cls in attacks)
    for cls in attacks:
        assert type(cls.spec.options) is options_type, cls.__name__
    # No row spells its options as a dict (make_attack_class would refuse it, at import).
    assert "options={" not in inspect.getsource(module)


def test_shared_options_drive_the_shared_adapters():
    assert ta_backend.TifgsmTorchattacks.spec.options.rgb and art_backend.LaserBeamArt.spec.options.rgb
    assert ta_backend.JsmaTorchattacks.spec.options.untargeted_next
    assert art_backend.JsmaArt.spec.options.untargeted_next
    assert ta_backend.FabTorchattacks.spec.options.classes_arg == "n_classes"
    assert art_backend.LaserBeamArt.spec.options.module == "art.attacks.evasion.laser_attack.laser_attack"
    assert art_backend.PgdArt.spec.options == ArtOptions()


def test_defence_rows_are_checked():
    with pytest.raises(ValueError, match="kind must be one of"):
        art_defenses.DefenseSpec("probe", "detector", "Probe", "art")
    with pytest.raises(ValueError, match="a trainer row names its trainer"):
        art_defenses.DefenseSpec("probe", "trainer", "Probe", "art")


# ------------------------------------------------------- named generated classes


def _assigned(module, maker: str) -> list[str]:
    """The names assigned ``Name = maker(...)`` in a module's source, in order."""
    return re.findall(rf"^(\w+) = {maker}\(", inspect.getsource(module), flags=re.M)


@pytest.mark.parametrize(("module", "classes", "maker", "named_in"), [
    (ta_backend, ta_backend.ATTACKS, "_attack", ta_backend),
    (art_backend, art_backend.ATTACKS, "_attack", art_backend),
    (art_defenses, art_defenses.DEFENSES, "make_defense_class", art_backend),
], ids=["torchattacks", "art", "art-defences"])
def test_each_generated_class_is_assigned_to_its_name_in_the_source(module, classes, maker, named_in):
    assert _assigned(module, maker) == [cls.__name__ for cls in classes]  # the registration order
    for cls in classes:
        assert cls.__module__ == named_in.__name__ and cls.__qualname__ == cls.__name__
        assert getattr(named_in, cls.__name__) is cls and getattr(module, cls.__name__) is cls
    for backend in (ta_backend, art_backend, art_defenses):
        source = inspect.getsource(backend)
        assert "globals().update" not in source and "__getattr__" not in vars(backend)


def test_the_backends_construct_components_only_through_create():
    for backend in (ta_backend, art_backend, art_defenses):
        assert "__new__" not in inspect.getsource(backend)
    attack = sk.create_attack("pgd.art", steps=2)
    assert attack.name == "pgd.art" and type(attack) is art_backend.PgdArt
    with pytest.raises(sk.InvalidParameterError, match=r"^jpeg\.art: quality"):
        art_backend.JpegArt.create("art", quality=0)
