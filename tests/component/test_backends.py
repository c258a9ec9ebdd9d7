"""The torchattacks and ART backends: registration, translation, state, agreement with native, the catalogue.

The registry-wide conformance run (tests/component/test_conformance.py) checks every
backend attack and defence against the contract; this module checks what is
specific to the backends.
"""

from __future__ import annotations

import gc
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.tools import load_tool
from torch import nn

import shieldkit as sk
from shieldkit.backends import art as art_backend
from shieldkit.backends import is_available
from shieldkit.backends import torchattacks as ta_backend
from shieldkit.backends._art_defenses import DEFENSES as ART_DEFENSES
from shieldkit.core.component import component_params
from shieldkit.core.errors import InvalidParameterError, MissingDependencyError
from shieldkit.core.guard import compare_state, snapshot_state
from shieldkit.plugins.registry import reset_registry
from shieldkit.testing import tiny_batch, tiny_model

REPO = Path(__file__).resolve().parents[2]
#: torchattacks classes deliberately not wrapped (docs/backends.md says why).
TORCHATTACKS_EXCLUDED = {"VANILA", "GN", "MultiAttack", "LGV"}


def _registered_art_names() -> set[str]:
    return {f"{cls.family}.art" for cls in art_backend.ATTACKS if all(is_available(m) for m in cls.spec.requires)}


# ---------------------------------------------------------------- registration


def test_import_and_listing_do_not_import_the_libraries():
    code = (
        "import sys, shieldkit as sk\n"
        "names = sk.list_attacks()\n"
        "atk = sk.create_attack('pgd.art')\n"
        "assert 'pgd.torchattacks' in names and 'pgd.art' in names\n"
        "print('art' in sys.modules, 'torchattacks' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_every_applicable_torchattacks_class_is_registered():
    import torchattacks

    classes = {name for name in torchattacks.__all__ if isinstance(getattr(torchattacks, name), type)}
    wrapped = {name for cls in ta_backend.ATTACKS for name in cls.spec.library_classes()}
    assert wrapped == classes - TORCHATTACKS_EXCLUDED
    assert set(sk.list_attacks(source="torchattacks")) == {f"{c.family}.torchattacks" for c in ta_backend.ATTACKS}
    docs = (REPO / "docs" / "backends.md").read_text()
    assert all(f"`{name}`" in docs for name in TORCHATTACKS_EXCLUDED)


def test_art_attacks_are_registered_and_exist_in_art():
    import importlib

    names = set(sk.list_attacks(source="art"))
    assert names == _registered_art_names()
    assert len(art_backend.ATTACKS) >= 36  # the table; brendel_bethge needs numba, left out of shieldkit[art]
    assert len(names) >= 35  # with shieldkit[art]: graphite and composite need kornia and opencv
    for cls in art_backend.ATTACKS:
        module = importlib.import_module(cls.spec.options.module) if all(
            is_available(m) for m in cls.spec.requires) else None
        if module is not None:
            assert hasattr(module, cls.spec.library_classes()[0]), cls.family


def test_art_defences_are_registered_by_kind():
    names = sk.list_defenses(source="art")
    assert set(names) == {f"{cls.family}.art" for cls in ART_DEFENSES}
    kinds = {name: sk.defense_info(name)["defense_kind"] for name in names}
    assert kinds["jpeg.art"] == "transform" and kinds["reverse_sigmoid.art"] == "postprocess"
    assert kinds["madry_pgd.art"] == "trainer" and kinds["trades.art"] == "trainer"
    # Same algorithm, same family as native: a bare name still prefers native.
    for family in ("jpeg", "bit_depth", "median_smoothing", "gaussian_noise", "adversarial_training"):
        assert f"{family}.art" in names and f"{family}.native" in sk.list_defenses(family)


@pytest.mark.parametrize(("library", "name"), [("art", "pgd.art"), ("torchattacks", "pgd.torchattacks")])
def test_a_missing_library_says_what_to_install(monkeypatch, library, name):
    monkeypatch.setitem(sys.modules, library, None)  # import blocked: find_spec fails as if not installed
    reset_registry()
    try:
        plugin = {p.name: p for p in sk.list_plugins()}[library]
        assert plugin.status == "missing"
        assert f"pip install shieldkit[{library}]" in plugin.errors[0]
        assert sk.list_attacks(source=library) == []
        with pytest.raises(MissingDependencyError, match=rf"pip install shieldkit\[{library}\]"):
            sk.create_attack(name)
        assert "pgd.native" in sk.list_attacks("pgd")
    finally:
        monkeypatch.undo()
        reset_registry()


# ------------------------------------------------------------ signatures, table


def test_generated_constructors_have_real_signatures():
    cls = ta_backend.PgdTorchattacks
    signature = inspect.signature(cls.__init__)
    assert signature.parameters["steps"].kind is inspect.Parameter.KEYWORD_ONLY
    assert signature.parameters["steps"].default == 10
    assert component_params(cls) == {"steps": 10, "step_size": None, "random_start": True,
                                     "eps": None, "norm": None, "bounds": (0.0, 1.0), "seed": None}
    info = sk.attack_info("cw.art")
    assert info["params"]["binary_search_steps"] == 10 and info["object"] == "shieldkit.backends.art.CwArt"
    assert sk.defense_info("jpeg.art")["params"] == {"quality": 75, "bounds": [0.0, 1.0], "seed": None}
    attack = sk.create_attack("pgd.torchattacks", steps=3)
    assert attack.get_params()["steps"] == 3 and "steps=3" in repr(attack)


def test_bad_parameters_are_named_before_any_compute():
    with pytest.raises(InvalidParameterError, match="unknown parameter 'stepz'.*valid parameters: steps"):
        sk.create_attack("pgd.art", stepz=3)
    with pytest.raises(InvalidParameterError, match="unknown parameter 'stepz'"):
        ta_backend.PgdTorchattacks(stepz=3)
    with pytest.raises(InvalidParameterError, match="pgd.torchattacks: steps must be an integer >= 1"):
        sk.create_attack("pgd.torchattacks", steps=0)
    with pytest.raises(InvalidParameterError, match="loss='xent' is not valid"):
        sk.create_attack("apgd.art", loss="xent")
    with pytest.raises(InvalidParameterError, match="norm='l1' is not supported"):
        sk.create_attack("pgd.torchattacks", norm="l1")
    with pytest.raises(InvalidParameterError, match="is untargeted only"):
        sk.create_attack("deepfool.art").run(tiny_model().eval(), torch.rand(2, 1, 16, 16),
                                             target=torch.tensor([1, 2]))


def test_uniform_parameters_are_translated_by_the_table():
    pgd = sk.create_attack("pgd.torchattacks", eps=0.2, steps=5)
    # L-inf budgets go to the library one float32 rounding step smaller, so that its x + eps lands inside.
    margin = torch.finfo(torch.float32).eps
    assert pgd.library_kwargs() == {"steps": 5, "alpha": pytest.approx(0.05), "random_start": True,
                                    "eps": 0.2 - margin}
    assert sk.create_attack("pgd.torchattacks", norm="l2", eps=0.5).library_kwargs()["eps"] == 0.5
    assert sk.create_attack("pgd.torchattacks", norm="l2").spec.class_for(
        sk.create_attack("pgd.torchattacks", norm="l2")) == "PGDL2"
    apgd = sk.create_attack("apgd.art", loss="dlr", restarts=2)
    assert apgd.library_kwargs()["loss_type"] == "difference_logits_ratio"
    assert apgd.library_kwargs()["nb_random_init"] == 2
    assert sk.create_attack("pgd_rs.torchattacks").library_kwargs()["noise_type"] == "guassian"
    assert sk.create_attack("square.art", queries=77).library_kwargs()["max_iter"] == 77
    assert sk.create_attack("ead.torchattacks", decision_rule="l1").spec.class_for(
        sk.create_attack("ead.torchattacks", decision_rule="l1")) == "EADL1"


# ------------------------------------------------------- state, targets, bounds


class _BatchNormNet(nn.Module):
    """A small CNN with BatchNorm and Dropout that records the mode it was called in."""

    def __init__(self):
        super().__init__()
        self.body = tiny_model(seed=3)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.body(x)


def _dirty_model() -> _BatchNormNet:
    model = _BatchNormNet().train()
    model(torch.rand(4, 1, 16, 16)).square().mean().backward()  # gradients present, BN statistics moved
    next(model.parameters()).requires_grad_(False)
    model.modes.clear()
    return model


@pytest.mark.parametrize("name", ["pgd.art", "deepfool.art", "cw.art", "boundary.art", "pgd.torchattacks",
                                  "cw.torchattacks", "autoattack.torchattacks"])
def test_model_state_is_restored_after_a_backend_attack(name):
    model = _dirty_model()
    before = snapshot_state(model)
    x = torch.rand(4, 1, 16, 16)
    smoke = dict(type(sk.create_attack(name)).smoke_params)
    sk.create_attack(name, seed=0, **smoke).run(model, x)
    assert not compare_state(before, snapshot_state(model))
    assert model.modes and not any(model.modes), "the attack saw the model in training mode"
    assert model.training and not model._forward_hooks
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_art_estimator_follows_a_replaced_head():
    model = tiny_model().eval()
    x, y = tiny_batch(model)
    sk.create_attack("fgsm.art", eps=0.1)(model, x, y)
    model[-1] = nn.Linear(32, 5)
    result = sk.create_attack("fgsm.art", eps=0.1).run(model, x, y % 5)
    assert result.linf.max() > 0
    (estimator,) = art_backend._ESTIMATORS[model].values()  # the stale one is gone
    assert estimator.nb_classes == 5


def test_art_estimator_is_cached_per_model_and_does_not_keep_it_alive():
    model = tiny_model().eval()
    x, y = tiny_batch(model)
    attack = sk.create_attack("fgsm.art")
    attack.run(model, x, y)
    estimator = next(iter(art_backend._ESTIMATORS[model].values()))
    attack.run(model, x, y)
    assert next(iter(art_backend._ESTIMATORS[model].values())) is estimator
    assert estimator.nb_classes == 10 and tuple(estimator.input_shape) == (1, 16, 16)
    assert tuple(estimator.clip_values) == (0.0, 1.0)
    count = len(art_backend._ESTIMATORS)
    del model, estimator
    gc.collect()
    assert len(art_backend._ESTIMATORS) == count - 1


@pytest.mark.parametrize("source", ["torchattacks", "art"])
def test_targeted_runs_reach_the_target_and_leave_no_state(mnist_model, mnist_test, source):
    data = mnist_test.head(32)
    attack = sk.create_attack(f"pgd.{source}", eps=0.3, steps=20, step_size=0.03, random_start=False)
    untargeted = attack(mnist_model, data.x, data.y)
    target = (data.y + 3) % 10
    result = attack.run(mnist_model, data.x, data.y, target=target)
    assert result.success.float().mean() > 0.8
    assert torch.equal(attack(mnist_model, data.x, data.y), untargeted)


def test_torchattacks_runs_in_other_bounds_by_rescaling():
    model = tiny_model().eval()
    x, y = tiny_batch(model)

    class Shifted(nn.Module):  # the same classifier on [-1, 1] images
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, z):
            return self.inner((z + 1) / 2)

    on_unit = sk.create_attack("fgsm.torchattacks", eps=0.05)(model, x, y)
    on_shifted = sk.create_attack("fgsm.torchattacks", eps=0.1, bounds=(-1.0, 1.0))(Shifted(), 2 * x - 1, y)
    assert (on_shifted - (2 * on_unit - 1)).abs().max() <= 1e-6


def test_grey_images_reach_rgb_only_attacks_through_an_exact_adapter():
    model = tiny_model().eval()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    adapter = ta_backend._GreyAsRGB(model)
    # The channel mean of three equal channels is the channel up to one rounding.
    assert torch.allclose(adapter(x.expand(-1, 3, -1, -1)), model(x), rtol=1e-5, atol=1e-6)
    x_adv = sk.create_attack("tifgsm.torchattacks", eps=0.1, steps=2, len_kernel=5, seed=0)(model, x)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 0.1 + 1e-6


# ---------------------------------------------- agreement on a trained MNIST model


def _median_l2_on_common(results: dict) -> dict[str, float]:
    common = torch.stack([r.success for r in results.values()]).all(dim=0)
    common &= torch.stack([r.l2 > 0 for r in results.values()]).all(dim=0)  # not misclassified already
    assert common.sum() >= 4, {k: r.success_rate for k, r in results.items()}
    return {source: r.l2[common].median().item() for source, r in results.items()}


def test_fgsm_is_identical_across_sources(mnist_model, mnist_test):
    data = mnist_test.head(64)
    images = {s: sk.create_attack(f"fgsm.{s}", eps=0.1)(mnist_model, data.x, data.y)
              for s in ("native", "torchattacks", "art")}
    assert (images["torchattacks"] - images["native"]).abs().max() <= 1e-6
    assert (images["art"] - images["native"]).abs().max() <= 1e-6


def _pgd_without_random_start(model, data, norm, eps, step, steps):
    return {s: sk.create_attack(f"pgd.{s}", eps=eps, norm=norm, steps=steps, step_size=step, random_start=False)(
        model, data.x, data.y) for s in ("native", "torchattacks", "art")}


def _largest_difference_per_image(images: dict, source: str) -> torch.Tensor:
    return (images[source] - images["native"]).flatten(1).abs().amax(1)


@pytest.mark.parametrize(("norm", "eps", "step"), [("linf", 0.1, 0.01), ("l2", 1.0, 0.1)])
def test_pgd_without_random_start_agrees_across_sources_step_by_step(mnist_model, mnist_test, norm, eps, step):
    """Two steps from the clean image: the three implementations take the same steps up to float rounding.
    bench/results/threshold_spread.md: at most 1.2e-7 (ART) and 4.9e-6 (torchattacks, which normalises L2
    gradients with another epsilon) from native; 1e-4 leaves a 20-fold margin and still fails a step size
    5% off (differences of about 5e-3)."""
    images = _pgd_without_random_start(mnist_model, mnist_test.head(64), norm, eps, step, steps=2)
    for source in ("art", "torchattacks"):
        assert _largest_difference_per_image(images, source).max().item() <= 1e-4, source


@pytest.mark.parametrize(("norm", "eps", "step"), [("linf", 0.1, 0.01), ("l2", 1.0, 0.1)])
def test_pgd_without_random_start_agrees_across_sources(mnist_model, mnist_test, norm, eps, step):
    """Ten steps, per image. L-inf steps are signs and agree exactly. L2 steps agree to rounding until an
    image's path crosses a ReLU kink, where one rounding picks another side and ten steps amplify it: per
    image the largest pixel difference from native stays within 1e-3 on 90% of the 64 images and within
    1e-2 on all. bench/results/threshold_spread.md (seeds 0-4 of the session model): 100% within 1e-3
    (worst image 9.3e-4), and another machine's model had one image at 1.8e-3 (issue 27); a step size 5% off
    leaves 0% within 1e-3 and 12-25% within 1e-2."""
    images = _pgd_without_random_start(mnist_model, mnist_test.head(64), norm, eps, step, steps=10)
    for source in ("art", "torchattacks"):
        differences = _largest_difference_per_image(images, source)
        if norm == "linf":
            assert differences.max().item() <= 1e-6, source
        else:
            assert (differences <= 1e-3).float().mean().item() >= 0.90, (source, differences.max().item())
            assert differences.max().item() <= 1e-2, source


def _sizes_on_common(results: dict) -> dict[str, torch.Tensor]:
    """Per source, the L2 sizes of the images every source fooled (and that were not misclassified already)."""
    common = torch.stack([r.success & (r.l2 > 0) for r in results.values()]).all(dim=0)
    assert common.sum() >= 16, {k: r.success_rate for k, r in results.items()}
    return {source: r.l2[common] for source, r in results.items()}


def geometric_mean_ratio(sizes: torch.Tensor, reference: torch.Tensor) -> float:
    """The geometric mean over images of ``sizes / reference``: a paired figure, so the spread of image
    difficulty cancels and a model trained elsewhere moves it far less than it moves a median."""
    return (sizes / reference).log().mean().exp().item()


def test_deepfool_l2_agrees_across_sources(mnist_model, mnist_test):
    """Per image fooled by all three (about 26-40 of the first 64: torchattacks' DeepFool fools about half):
    torchattacks and ART run the paper's algorithm and agree per image (geometric mean ratio 0.985-0.988,
    standard error 0.001, bench/results/threshold_spread.md); native DeepFool's projection rounds land nearer,
    0.93-1.01 of ART's (standard error up to 0.025 on these few images), held at 1.06 (the worst seed + 2 SE).
    On so few images this catches a gross regression (a DeepFool that overshoots by 25% instead of 2%,
    bench/check_thresholds.py), not a few per cent: the test of native DeepFool against the hand-written
    reference (test_attacks_native, 300 images) is the one that catches DeepFool without its projection
    rounds."""
    data = mnist_test.head(64)
    results = {s: sk.create_attack(f"deepfool.{s}", steps=50, overshoot=0.02).run(mnist_model, data.x, data.y)
               for s in ("native", "torchattacks", "art")}
    sizes = _sizes_on_common(results)
    peers = geometric_mean_ratio(sizes["torchattacks"], sizes["art"])
    native = geometric_mean_ratio(sizes["native"], sizes["art"])
    assert abs(peers - 1) <= 0.05, peers
    assert native <= 1.06, native


def test_cw_median_l2_agrees_across_sources(mnist_model, mnist_test):
    # The same objective (c = 10, 100 steps, learning rate 0.01); ART with one constant and a short line search.
    data = mnist_test.head(16)
    results = {
        "torchattacks": sk.create_attack("cw.torchattacks", c=10.0, steps=100, step_size=0.01),
        "art": sk.create_attack("cw.art", initial_const=10.0, binary_search_steps=1, steps=100, step_size=0.01,
                                max_halving=1, max_doubling=1),
    }
    results = {s: a.run(mnist_model, data.x, data.y) for s, a in results.items()}
    medians = _median_l2_on_common(results)
    assert abs(medians["torchattacks"] - medians["art"]) <= 0.05 * medians["art"], medians


def test_autoattack_robust_accuracy_agrees_between_torchattacks_and_art(mnist_model, mnist_test):
    """Both libraries' AutoAttack at eps 0.15 on the first 50 test images, compared per image.
    bench/results/threshold_spread.md (seeds 0-4): they disagree on 0-4 images, robust accuracy 0-6 points
    apart; disagreement behaves like a count with mean 2 (SE about 1.4), so at most 8 images (the worst seed +
    3 SE, rounded up) may differ and robust accuracy may differ by at most 12 points. ART's AutoAttack with one
    APGD step instead of ten disagrees on 14-26 images (28-54 points) and fails."""
    data = mnist_test.head(50)
    robust = {}
    for source, params in (("torchattacks", {"queries": 300}), ("art", {"steps": 10, "restarts": 1, "queries": 300})):
        result = sk.create_attack(f"autoattack.{source}", eps=0.15, seed=0, **params).run(mnist_model, data.x, data.y)
        robust[source] = ~result.success
    accuracy = {source: 100 * flags.float().mean().item() for source, flags in robust.items()}
    assert 0 < accuracy["art"] < 100
    assert int((robust["torchattacks"] != robust["art"]).sum()) <= 8, accuracy
    assert abs(accuracy["torchattacks"] - accuracy["art"]) <= 12.0, accuracy


# ---------------------------------------------------------------------- defences


def test_thermometer_surrogate_follows_arts_gradient_estimate():
    from art.defences.preprocessor import ThermometerEncoding

    torch.manual_seed(0)
    levels = 4
    model = nn.Sequential(nn.Conv2d(levels, 3, 3), nn.Flatten(), nn.Linear(3 * 6 * 6, 5)).eval()
    defense = sk.create_defense("thermometer_encoding.art", num_space=levels)
    x = torch.rand(2, 1, 8, 8)
    encoded = defense(x)
    assert encoded.shape == (2, levels, 8, 8)
    art = ThermometerEncoding(clip_values=(0.0, 1.0), num_space=levels, channels_first=True)
    assert np.allclose(encoded.numpy(), art(x.numpy())[0])

    inputs = x.clone().requires_grad_(True)
    view = defense.wrap(model).attack_view(gradient="surrogate")
    (grad,) = torch.autograd.grad(view(inputs).sum(), inputs)
    code = encoded.clone().requires_grad_(True)
    (outer,) = torch.autograd.grad(model(code).sum(), code)
    expected = art.estimate_gradient(x.numpy(), outer.numpy())
    assert np.allclose(grad.numpy(), expected, atol=1e-6)
    assert grad.abs().sum() > 0


def test_postprocessors_return_logits_whose_softmax_is_arts_output():
    model = tiny_model().eval()
    x, _ = tiny_batch(model)
    with torch.no_grad():
        probabilities = model(x).softmax(dim=1)
        rounded = sk.create_defense("rounding.art", decimals=2).wrap(model)(x).softmax(dim=1)
        labels = sk.create_defense("class_labels.art").wrap(model)(x).softmax(dim=1)
    expected = np.round(probabilities.numpy(), 2)
    assert np.allclose(rounded.numpy(), expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    assert torch.equal(labels.argmax(dim=1), probabilities.argmax(dim=1))
    assert torch.allclose(labels.max(dim=1).values, torch.ones(len(x)))


def test_art_trainer_trains_a_copy_and_leaves_the_model_alone(mnist_test):
    model = tiny_model(size=28).train()
    before = snapshot_state(model)
    data = mnist_test.head(64)
    trained = sk.create_defense("madry_pgd.art", eps=0.1, steps=2).fit(model, data, epochs=1, batch_size=16)
    assert trained is not model and not trained.training
    assert not compare_state(before, snapshot_state(model))
    moved = [not torch.equal(a, b) for a, b in zip(model.parameters(), trained.parameters())]
    assert any(moved)
    with pytest.raises(sk.InvalidInputError, match="train_data"):
        sk.create_defense("trades.art").fit(model, "not data")
    with pytest.raises(InvalidParameterError, match="epochs"):
        sk.create_defense("trades.art").fit(model, data, epochs=0)


def test_trainer_uses_the_cross_entropy_it_is_given(mnist_test):
    # Augmentation trainers hand ART soft labels (mixup); the loss must still fall on clean data.
    data = mnist_test.head(128)
    model = tiny_model(size=28).eval()
    loss_before = F.cross_entropy(model(data.x), data.y).item()
    trained = sk.create_defense("mixup.art").fit(model, data, epochs=3, batch_size=32, lr=3e-3)
    assert F.cross_entropy(trained(data.x), data.y).item() < loss_before


# ---------------------------------------------------------------------- catalogue


def test_catalogue_is_up_to_date():
    path = REPO / "docs" / "catalogue.md"
    assert path.read_text() == load_tool("catalogue").render_catalogue(), (
        "docs/catalogue.md is out of date: regenerate it with `python tools/catalogue.py > docs/catalogue.md`"
    )


def test_catalogue_lists_every_backend_component_with_its_capabilities():
    text = load_tool("catalogue").render_catalogue()
    for cls in ta_backend.ATTACKS + art_backend.ATTACKS:
        assert f"`{cls.family}.{cls.backend}`" in text
    assert "| `pgd.torchattacks` | linf, l2 | yes | gradient | 0.0313725 | yes | `steps=10`, `step_size=None` (0.25 * eps)" in text
    assert "| `square.art` | linf, l2 | no | score |" in text
    assert "`brendel_bethge.art` (needs `numba`)" in text
    assert "| `jpeg.art` | transform | no | no | `quality=75` |" in text


@pytest.mark.parametrize("name", ["fgsm.torchattacks", "pgd.torchattacks", "fgsm.art", "pgd.art"])
def test_linf_library_output_arrives_inside_the_ball(name, monkeypatch):
    # With the budget one rounding step smaller, the library's x + eps needs no fixing by the base class.
    moved = []
    for method in ("round_inside", "project"):
        original = getattr(sk.ThreatModel, method)
        monkeypatch.setattr(sk.ThreatModel, method,
                            lambda self, *args, _original=original, **kwargs: moved.append(1) or _original(self, *args, **kwargs))
    model = tiny_model().eval()
    x, y = tiny_batch(model)
    params = {"steps": 5} if name.startswith("pgd") else {}  # 5 steps of eps / 4 reach the boundary
    result = sk.create_attack(name, eps=0.1, seed=0, **params).run(model, x, y)
    assert result.linf.max() <= torch.tensor(0.1) and result.linf.max() > 0.1 - 1e-6
    assert moved == []
