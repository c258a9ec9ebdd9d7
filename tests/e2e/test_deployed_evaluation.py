"""Models as users deploy them (issue 23): int8 (dynamic and static), inference_mode, bfloat16, evaluated told nothing.

Each is built here from the tests' MNIST CNN (``mnist_model``), the way torch's documentation deploys a model, and
goes through ``shieldkit.evaluate``. The diagnosis sees the deployment (``deployed_precision``), the ``twin`` remedy
attacks the float model the deployment came from, and the number must be at most 5 points above a PGD written here
on that float model, judged on the deployed one. ``Attack.run`` on the same models either works (bfloat16: the
attack computes in the model's dtype) or refuses in one line naming the remedies (no input gradient).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from support.deployments import InferenceMode, dynamic_int8
from torch import nn

import shieldkit
from shieldkit.core.errors import NoGradientError
from shieldkit.data import ImageData

N_IMAGES = 32
EPS = 0.2
MARGIN = 0.05


class Bfloat16(nn.Module):
    """The model cast to bfloat16; it takes and returns float32."""

    def __init__(self, model):
        super().__init__()
        self.model = copy.deepcopy(model).to(torch.bfloat16)

    def forward(self, x):
        return self.model(x.to(torch.bfloat16)).float()


def static_int8(model, calibration):
    """Eager-mode post-training static quantisation (x86 backend): stubs around everything after the input
    normalisation, observers calibrated on clean training images, then converted."""
    from torch.ao import quantization as tq

    layers = list(copy.deepcopy(model).children())
    body = nn.Sequential(tq.QuantStub(), *layers[1:], tq.DeQuantStub())
    body.qconfig = tq.get_default_qconfig("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = tq.prepare(body.eval())
        with torch.no_grad():
            prepared(layers[0](calibration))
        return nn.Sequential(layers[0], tq.convert(prepared)).eval()


def margin_pgd(model, x, y, eps, steps=40):
    """L-inf PGD on the margin loss with a random start (written here, independent of shieldkit)."""
    torch.manual_seed(3)
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    best = x_adv.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        own = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        (gradient,) = torch.autograd.grad((other - own).sum(), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + 2.5 * eps / steps * gradient.sign(), x - eps), x + eps).clamp(0, 1)
        best = x_adv
    return best.detach()


@pytest.fixture(scope="module")
def deployments(mnist_model):
    from shieldkit.data import load

    calibration = load("mnist", split="train").subset(256, seed=0).x
    source = mnist_model.eval()
    return {"dynamic_int8": dynamic_int8(source), "static_int8": static_int8(source, calibration),
            "inference_mode": InferenceMode(source), "bfloat16": Bfloat16(source)}


@pytest.mark.parametrize("kind", ["dynamic_int8", "static_int8", "inference_mode", "bfloat16"])
def test_a_deployed_model_is_evaluated_through_the_float_model_it_came_from(kind, deployments, mnist_model,
                                                                            mnist_test, tmp_path):
    model = deployments[kind]
    x, y = mnist_test.x[:N_IMAGES], mnist_test.y[:N_IMAGES]
    report = shieldkit.evaluate(model, ImageData(x, y, name="mnist", split="test"), attacks=["fgsm", "pgd"],
                                eps=[EPS], out_dir=tmp_path, quiet=True, suite="quick", checks=False)
    record = report.run.defense("none")
    assert "deployed_precision" in record.diagnosis.diagnosis.flags
    assert [note.name for note in record.diagnosis.remedies][0] == "twin"
    x_reference = margin_pgd(mnist_model, x, y, EPS)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        reference = (model(x_reference).argmax(1) == y).float().mean().item()
    assert abs(record.clean_accuracy - clean) < 1e-9
    assert reference < clean - 0.2  # the reference is a real attack
    assert report.robust_accuracy(eps=EPS) <= reference + MARGIN, (kind, report.robust_accuracy(eps=EPS), reference)


@pytest.mark.parametrize("kind", ["dynamic_int8", "static_int8", "inference_mode"])
def test_a_gradient_attack_on_a_model_without_input_gradient_refuses_in_one_line(kind, deployments, mnist_test):
    x, y = mnist_test.x[:8], mnist_test.y[:8]
    with pytest.raises(NoGradientError) as error:
        shieldkit.create_attack("pgd", eps=EPS, steps=2).run(deployments[kind], x, y)
    message = str(error.value)
    assert "\n" not in message and "square" in message.lower()


def test_a_bfloat16_model_is_attacked_in_its_own_dtype(deployments, mnist_model, mnist_test):
    x, y = mnist_test.x[:32], mnist_test.y[:32]
    result = shieldkit.create_attack("pgd", eps=EPS, steps=10).run(deployments["bfloat16"], x, y)
    # the attack runs in the model's dtype: the budget holds around the image as bfloat16 rounds it (half an ulp at
    # 1.0 is 2^-8)
    assert result.x_adv.dtype == torch.float32 and (result.x_adv - x).abs().max() <= EPS + 2**-8
    x_reference = margin_pgd(mnist_model, x, y, EPS, steps=10)
    with torch.no_grad():
        fooled = (deployments["bfloat16"](result.x_adv).argmax(1) != y).float().mean().item()
        by_reference = (deployments["bfloat16"](x_reference).argmax(1) != y)
    assert fooled >= by_reference.float().mean().item() - 0.15
    assert F.softmax(deployments["bfloat16"](x), 1).isfinite().all()
