"""Backend attacks in half precision: the table in docs/backends.md is complete and true for a sample.

``bench/half_precision.py`` measures every registered torchattacks and ART attack
on a float16 and a bfloat16 model and writes the table. Here: the table lists
exactly the registered backend attacks (it cannot go stale), and a sample from
each backend behaves as its row says. An attack that works returns images in
the input's dtype inside the bounds and the eps-ball (checked here), its
success is the half-precision model's own verdict, and it fools about as many
images as the same library called through its own API on the float32 model.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch

import shieldkit as sk
from shieldkit.core.errors import InvalidInputError, InvalidModelError

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `(?P<name>[\w.]+)` \| (?P<float16>[^|]*) \| (?P<bfloat16>[^|]*) \|")
N = 32


def _generator():
    spec = importlib.util.spec_from_file_location("half_precision_bench", REPO / "bench" / "half_precision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _generator()


def table() -> dict[str, dict[str, str]]:
    text = (REPO / "docs" / "backends.md").read_text()
    start, end = text.index(bench.START), text.index(bench.END)
    rows = {}
    for line in text[start:end].splitlines():
        match = ROW.match(line)
        if match:
            rows[match["name"]] = {"float16": match["float16"].strip(), "bfloat16": match["bfloat16"].strip()}
    return rows


def _registered(source: str) -> list[str]:
    return sk.list_attacks(source=source)


@pytest.mark.parametrize("source", bench.SOURCES)
def test_the_table_lists_every_registered_backend_attack(source):
    registered = _registered(source)
    if not registered:
        pytest.fail(f"the {source} backend is not installed: pip install 'shieldkit[{source}]' "
                    "(`make test` installs it)", pytrace=False)
    listed = sorted(name for name in table() if name.endswith(f".{source}"))
    assert listed == sorted(registered), "regenerate it: python bench/half_precision.py"


def test_every_cell_says_works_or_fails():
    for name, cells in table().items():
        for dtype, text in cells.items():
            assert re.match(r"works: \d+/\d+ fooled \(float32 (\d+/\d+|fails)\)$|fails: \w+", text), (name, dtype, text)


@pytest.fixture(scope="module")
def images(digits, digits_mlp):
    """The first N digits test images the MLP classifies correctly."""
    test = digits[0]
    with torch.no_grad():
        correct = digits_mlp(test.x).argmax(dim=1) == test.y
    return test.x[correct][:N], test.y[correct][:N]


# --------------------------------------------------------------- the same attacks through the libraries' own API


def _torchattacks(name: str, model, x, y, params) -> torch.Tensor:
    import torchattacks

    eps = params.get("eps")
    build = {
        "pgd": lambda: torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=params["steps"], random_start=True),
        "bim": lambda: torchattacks.BIM(model, eps=eps, alpha=eps / 4, steps=params["steps"]),
        "cw": lambda: torchattacks.CW(model, c=1.0, kappa=0.0, steps=params["steps"], lr=0.01),
        "spsa": lambda: torchattacks.SPSA(model, eps=eps, delta=0.01, lr=0.01, nb_iter=1,
                                          nb_sample=params["samples"], max_batch_size=64),
    }[name.split(".")[0]]
    torch.manual_seed(0)
    return build()(x, y)


def _art(name: str, model, x, y, params) -> torch.Tensor:
    import numpy as np
    from art.attacks.evasion import (
        DeepFool,
        FastGradientMethod,
        ProjectedGradientDescent,
        SquareAttack,
    )
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                   nb_classes=10, clip_values=(0.0, 1.0))
    eps = params.get("eps")
    build = {
        "fgsm": lambda: FastGradientMethod(classifier, norm=np.inf, eps=eps),
        "pgd": lambda: ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=eps / 4,
                                                max_iter=params["steps"], num_random_init=1, verbose=False),
        "deepfool": lambda: DeepFool(classifier, max_iter=params["steps"], epsilon=0.02, nb_grads=10, verbose=False),
        "square": lambda: SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=params["queries"], verbose=False),
    }[name.split(".")[0]]
    np.random.seed(0)
    labels = np.eye(10, dtype=np.float32)[y.numpy()]
    return torch.from_numpy(build().generate(x.numpy(), y=labels))


SAMPLE = {
    "pgd.torchattacks": _torchattacks, "bim.torchattacks": _torchattacks,
    "cw.torchattacks": _torchattacks, "spsa.torchattacks": _torchattacks,
    "fgsm.art": _art, "pgd.art": _art, "deepfool.art": _art, "square.art": _art,
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", sorted(SAMPLE))
def test_a_sample_behaves_as_the_table_says(name, dtype, images, digits_mlp):
    if name not in _registered(name.split(".")[1]):
        pytest.fail(f"{name} is not registered: pip install 'shieldkit[{name.split('.')[1]}]' "
                    "(`make test` installs it)", pytrace=False)
    cell = table()[name][str(dtype)[len("torch."):]]
    x, y = images
    params = bench.attack_params(name)
    model = copy.deepcopy(digits_mlp).to(dtype)
    attack = sk.create_attack(name, **params)
    if cell.startswith("fails"):
        with pytest.raises((InvalidInputError, InvalidModelError), match=str(dtype)[len("torch."):]) as caught:
            attack.run(model, x.to(dtype), y)
        assert "\n" not in str(caught.value) and attack.family in str(caught.value)
        return
    assert cell.startswith("works")
    result = attack.run(model, x.to(dtype), y)
    x_in = x.to(dtype)
    assert result.x_adv.dtype == dtype and result.x_adv.shape == x.shape
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    if attack.eps is not None:
        # Measured exactly (the difference of two half-precision pixels is exact in float32), not in the
        # dtype's arithmetic, where x_adv - x rounds and hides a pixel an ulp outside the ball.
        gap = (result.x_adv.float() - x_in.float()).abs().amax().item()
        assert gap <= attack.eps, f"linf {gap} > eps {attack.eps} in {dtype}"
    with torch.no_grad():
        fooled = model(result.x_adv).argmax(dim=1) != y
    assert torch.equal(result.success, fooled)  # the half-precision model's own verdict

    # The same library through its own API on the float32 model: about as many fooled.
    reference = SAMPLE[name](name, copy.deepcopy(digits_mlp).float().eval(), x, y, params)
    with torch.no_grad():
        reference_fooled = int((digits_mlp(reference.float()).argmax(dim=1) != y).sum())
    tolerance = max(4, math.ceil(N / 8))
    assert abs(int(fooled.sum()) - reference_fooled) <= tolerance, (int(fooled.sum()), reference_fooled)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_rounding_a_float32_result_to_half_precision_keeps_it_inside_the_ball(dtype):
    """A library's float32 point at the edge of the ball, rounded to nearest, leaves it by up to half an ulp;
    ``ThreatModel.cast_inside`` moves those pixels one ulp back towards x, and no other pixel."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 12, 12, generator=generator).to(dtype)
    eps = 0.1
    signs = torch.randint(0, 2, x.shape, generator=generator).float() * 2 - 1
    edge = (x.float() + eps * signs).clamp(0, 1)  # float32, exactly at the edge where the bounds allow
    threat = sk.ThreatModel("linf", eps)
    nearest = edge.to(dtype)
    assert (nearest.float() - x.float()).abs().amax() > eps  # the problem is real in this dtype
    inside = threat.cast_inside(edge, x)
    assert inside.dtype == dtype
    assert (inside.float() - x.float()).abs().amax() <= eps
    moved = inside != nearest
    assert torch.equal(moved, (nearest.float() - x.float()).abs() > eps)  # exactly the pixels outside moved
    assert torch.equal(inside[moved], torch.nextafter(nearest, x)[moved])  # by one ulp towards x
