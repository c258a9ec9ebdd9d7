"""The example plugin's own tests: what a plugin author writes, using shieldkit's conformance kit."""

import torch
from shieldkit_example import SaltPepper

import shieldkit as sk
from shieldkit.testing import check_attack, check_defense, tiny_batch, tiny_model


def test_found_by_entry_point():
    assert "salt_pepper.example" in sk.list_attacks(source="example")
    assert "gaussian_blur.example" in sk.list_defenses(source="example")
    plugin = next(p for p in sk.list_plugins() if p.name == "example")
    assert plugin.distribution == "shieldkit-example" and plugin.status == "ok"


def test_salt_pepper_conforms_as_the_noise_baseline_it_declares():
    # Noise is weak by design: the class declares an efficacy exemption, and the kit skips its run on the
    # trained digits (it would fail, fooling 0 of 16) but still asks it to change its input.
    report = check_attack("salt_pepper.example", amount=0.1, restarts=3)
    assert report["efficacy"] == {"exempt": "not run; changes its input",
                                  "reason": SaltPepper.efficacy_exemption.reason}


def test_gaussian_blur_conforms():
    check_defense("gaussian_blur.example", sigma=1.0)


def test_salt_pepper_only_sets_pixels_to_the_bounds():
    model = tiny_model()
    x, y = tiny_batch(model)
    x_adv = sk.create_attack("salt_pepper", amount=0.2, seed=0)(model, x, y)
    changed = x_adv != x
    assert changed.any()
    assert torch.all((x_adv[changed] == 0) | (x_adv[changed] == 1))


def test_blur_preserves_a_constant_image():
    blur = sk.create_defense("gaussian_blur", sigma=2.0)
    x = torch.full((2, 3, 9, 9), 0.25)
    assert torch.allclose(blur(x), x, atol=1e-6)
