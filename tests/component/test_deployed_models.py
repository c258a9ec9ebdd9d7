"""Models as users deploy them (issue "Randomised models judged by their expected accuracy..."): a dynamically
quantised int8 network and a forward under ``torch.inference_mode``. A gradient attack refuses them in one line
that names the way out; a score-based attack runs; the run's digest reads every state-dict entry."""

from __future__ import annotations

import warnings

import pytest
import torch
from support.deployments import InferenceMode, dynamic_int8

import shieldkit as sk
from shieldkit.evaluation.units import model_digest
from shieldkit.testing import tiny_batch, tiny_model


@pytest.fixture(scope="module")
def models():
    base = tiny_model(seed=0).eval()
    return {"base": base, "int8": dynamic_int8(tiny_model(seed=0).eval()), "inference_mode": InferenceMode(base)}


@pytest.mark.parametrize("kind", ["int8", "inference_mode"])
@pytest.mark.parametrize("attack", ["fgsm", "pgd", "pgd.torchattacks"])
def test_a_gradient_attack_refuses_a_model_without_input_gradient_in_one_line(models, kind, attack):
    x, y = tiny_batch(models["base"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantised kernel's "no autograd kernel" warning
        with pytest.raises(sk.NoGradientError) as raised:
            sk.create_attack(attack, eps=0.1).run(models[kind], x, y)
    message = str(raised.value)
    assert "\n" not in message and "no input gradient" in message and "score-based" in message
    assert raised.value.args[0].startswith(sk.create_attack(attack).name)
    assert isinstance(raised.value, RuntimeError) and isinstance(raised.value, sk.InvalidModelError)


def test_a_score_based_attack_runs_on_the_quantized_model(models):
    x, y = tiny_batch(models["base"])
    result = sk.create_attack("square", eps=0.3, queries=30, seed=0).run(models["int8"], x, y)
    assert result.backwards == 0 and result.linf.max().item() <= 0.3 + 1e-6
    with torch.no_grad():  # success is judged on the quantised model itself
        assert torch.equal(result.success, models["int8"](result.x_adv).argmax(1) != y)


def test_the_digest_reads_quantized_and_bfloat16_state_dicts(models):
    int8 = models["int8"]
    entry_types = {type(value).__name__ for value in int8.state_dict().values()}
    assert {"dtype", "tuple"} <= entry_types  # what made the digest crash
    assert model_digest(int8) == model_digest(dynamic_int8(tiny_model(seed=0).eval()))
    assert model_digest(int8) != model_digest(dynamic_int8(tiny_model(seed=1).eval()))
    assert model_digest(int8) != model_digest(models["base"])
    half = tiny_model(seed=0).to(torch.bfloat16)
    assert model_digest(half) != model_digest(tiny_model(seed=0))
    assert model_digest(half) == model_digest(tiny_model(seed=0).to(torch.bfloat16))
