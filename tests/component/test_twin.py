"""The differentiable twin of a model as deployed (shieldkit/escalation/twin.py) and the diagnosis's
``deployed_precision`` finding, on models trained on real MNIST and then deployed four ways: dynamically
quantised (int8 Linear), statically quantised in eager mode (QuantStub/DeQuantStub, fused ConvReLU, x86
engine), cast to bfloat16, and with ``forward`` under ``@torch.inference_mode()``.

The references are independent of the twin's code: the float model each deployment was made from (its
weights, outputs and gradients), int8's half-step bound on a weight's rounding computed from those float
weights, bfloat16's rounding done by torch's own cast, and a PGD written here (20 steps, eps 0.1).
"""

from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
from support.deployments import InferenceMode, dynamic_int8
from torch import nn

import shieldkit as sk
from shieldkit.core.errors import InvalidModelError
from shieldkit.diagnosis import CHECKS, diagnose, scan_deployment
from shieldkit.diagnosis.deployment import QUANTIZED_MODULES
from shieldkit.escalation import TwinView, differentiable_twin
from shieldkit.escalation.twin import CONVERTERS
from shieldkit.evaluation.units import model_digest

KINDS = ("dynamic_int8", "static_int8", "bfloat16", "inference_mode")
EPS = 0.1


class QuantCNN(nn.Module):
    """A small CNN ready for eager-mode static quantisation: conv5(8)-pool-conv5(16)-pool-fc(10)."""

    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)
        self.flatten, self.fc = nn.Flatten(), nn.Linear(16 * 7 * 7, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(self.quant(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.dequant(self.fc(self.flatten(x)))


def static_int8(model: QuantCNN, calibration: torch.Tensor) -> nn.Module:
    model = copy.deepcopy(model).eval()
    model.qconfig = tq.get_default_qconfig("x86")
    tq.fuse_modules(model, [["conv1", "relu1"], ["conv2", "relu2"]], inplace=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        prepared = tq.prepare(model)
        with torch.no_grad():
            prepared(calibration)
        return tq.convert(prepared).eval()


@pytest.fixture(scope="module")
def floats(tmp_path_factory):
    """The float models the deployments are made from: an MLP (2 epochs, 10,000 MNIST images) and the
    quantisable CNN (1 epoch, 4,000 images)."""
    from shieldkit.data import load
    from shieldkit.models import fit_classifier
    from shieldkit.models.cache import pretrained

    mlp = pretrained("mlp", data="mnist", epochs=2, n_train=10000, seed=0,
                     cache_dir=tmp_path_factory.mktemp("twin-cache")).eval()
    train = load("mnist", split="train").subset(4000, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cnn = fit_classifier(QuantCNN(), train, epochs=1, batch_size=32, seed=0).eval()
    return {"mlp": mlp, "cnn": cnn, "calibration": train.x[:256]}


@pytest.fixture(scope="module")
def deployed(floats):
    """kind -> (the deployed model, the float model it was made from, the dtype it reads images in)."""
    mlp, cnn = floats["mlp"], floats["cnn"]
    return {
        "dynamic_int8": (dynamic_int8(mlp), mlp, torch.float32),
        "static_int8": (static_int8(cnn, floats["calibration"]), cnn, torch.float32),
        "bfloat16": (copy.deepcopy(mlp).to(torch.bfloat16), mlp, torch.bfloat16),
        "inference_mode": (InferenceMode(mlp), mlp, torch.float32),
    }


@pytest.fixture(scope="module")
def images(mnist_test):
    data = mnist_test.subset(100, seed=0)
    return data.x, data.y


EXPECTED_REASONS = {
    "dynamic_int8": ("dynamic int8 Linear (2 modules)",),
    "static_int8": ("int8 Quantize (1 module)", "int8 ConvReLU2d (2 modules)", "int8 Linear (1 module)",
                    "int8 DeQuantize (1 module)"),
    "bfloat16": ("bfloat16 parameters (2 modules)",),
    "inference_mode": ("forward under torch.inference_mode (1 module)",),
}


def outputs(model: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        return model(x.to(dtype)).float()


def weighted(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = EPS, steps: int = 20) -> torch.Tensor:
    """L-inf PGD, cross-entropy, no random start, step 2.5 eps / steps (written here, not shieldkit's)."""
    step = 2.5 * eps / steps
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


# ------------------------------------------------------------------ the twin


def test_the_converters_cover_exactly_what_the_scan_calls_convertible():
    assert set(CONVERTERS) == QUANTIZED_MODULES


def test_a_float_model_has_no_twin_and_no_finding(floats, images):
    x, y = images
    assert differentiable_twin(floats["mlp"]) is None
    assert differentiable_twin(floats["cnn"]) is None  # unconverted QuantStub/DeQuantStub are the identity
    assert differentiable_twin(copy.deepcopy(floats["mlp"]).double()) is None
    with pytest.raises(InvalidModelError, match="no twin"):
        TwinView(floats["mlp"])
    finding = diagnose(floats["mlp"], x, y).finding("deployed_precision")
    assert not finding.found and finding.share == 0.0 and finding.measured == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_the_twin_reports_why_and_leaves_the_users_model_unchanged(deployed, images, kind):
    model, _, dtype = deployed[kind]
    x, _ = images
    digest, types = model_digest(model), [type(m) for m in model.modules()]
    before = outputs(model, x, dtype)
    twin, reasons = differentiable_twin(model)
    assert reasons == EXPECTED_REASONS[kind]
    assert model_digest(model) == digest and [type(m) for m in model.modules()] == types
    assert "forward" not in vars(model) and torch.equal(outputs(model, x, dtype), before)
    assert scan_deployment(twin).reasons == ()  # nothing quantised, reduced or decorated is left
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in twin.parameters())
    if kind == "static_int8":  # the deployed model is still quantised
        assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


@pytest.mark.parametrize("kind", KINDS)
def test_the_twin_computes_the_deployed_function_within_its_rounding(deployed, images, kind):
    """Argmax agreement on 100 MNIST test images; the largest logit difference within the output's rounding
    (2 int8 steps of the logit range, 4 bfloat16 ulps of the largest logit) and not far above the float
    model's, which the deployment was made from."""
    model, original, dtype = deployed[kind]
    x, _ = images
    deployed_out, twin_out = outputs(model, x, dtype), outputs(differentiable_twin(model)[0], x, torch.float32)
    original_out = outputs(original, x, torch.float32)
    assert (twin_out.argmax(1) == deployed_out.argmax(1)).float().mean() >= 0.95
    if kind == "inference_mode":
        assert torch.equal(twin_out, deployed_out)
        return
    span = (deployed_out.amax() - deployed_out.amin()).item()
    rounding = 2 * span / 255 if "int8" in kind else 4 * 2**-8 * deployed_out.abs().amax().item()
    error, original_error = (twin_out - deployed_out).abs().amax(), (original_out - deployed_out).abs().amax()
    assert error <= rounding, (error, rounding)
    # the twin drops only the activations' rounding; the float model has the weights' rounding on top
    assert error <= 1.5 * original_error, (error, original_error)


@pytest.mark.parametrize("kind", ["dynamic_int8", "static_int8", "bfloat16"])
def test_the_twins_weights_are_the_deployed_ones(deployed, kind):
    """int8: each weight within half a symmetric int8 step (max |w| / 127.5 / 2) of the float weight it was
    rounded from, and not all equal to it; bfloat16: exactly torch's bfloat16 rounding of the float weights."""
    model, original, _ = deployed[kind]
    twin_layers, float_layers = weighted(differentiable_twin(model)[0]), weighted(original)
    assert len(twin_layers) == len(float_layers) > 0
    for twin_layer, float_layer in zip(twin_layers, float_layers):
        w, w_float = twin_layer.weight, float_layer.weight.detach()
        if kind == "bfloat16":
            assert torch.equal(w, w_float.to(torch.bfloat16).float())
            continue
        half_step = w_float.abs().amax() / 127.5 / 2
        assert (w - w_float).abs().amax() <= half_step * 1.001
        assert not torch.equal(w, w_float)
        torch.testing.assert_close(twin_layer.bias, float_layer.bias.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_the_view_has_the_deployed_values_and_the_twins_gradient(deployed, images, kind):
    model, original, dtype = deployed[kind]
    x, y = images
    view = TwinView(model)
    assert view.reasons == EXPECTED_REASONS[kind]
    inputs = x.clone().requires_grad_(True)
    out = view(inputs)
    assert out.dtype == torch.float32 and torch.equal(out.detach(), outputs(model, x, dtype))
    (grad,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), inputs, retain_graph=True)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().amax(1) > 0).all()
    # the view's Jacobian is the twin's: the same vector-Jacobian product for any weights of the outputs
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (view_vjp,) = torch.autograd.grad((out * weights).sum(), inputs)
    twin_inputs = x.clone().requires_grad_(True)
    (twin_vjp,) = torch.autograd.grad((view.twin(twin_inputs) * weights).sum(), twin_inputs)
    torch.testing.assert_close(view_vjp, twin_vjp, rtol=1e-5, atol=1e-7)
    # the twin's gradient is the float model's, up to the weights' rounding
    float_inputs = x.clone().requires_grad_(True)
    (float_grad,) = torch.autograd.grad(F.cross_entropy(original(float_inputs), y, reduction="sum"), float_inputs)
    assert F.cosine_similarity(grad.flatten(1), float_grad.flatten(1)).median() > 0.99
    with torch.no_grad():  # no gradient wanted: the deployed model alone
        assert torch.equal(view(x), outputs(model, x, dtype))


@pytest.mark.parametrize("kind", ["dynamic_int8", "static_int8"])
def test_pgd_on_the_twin_fools_the_int8_model(deployed, images, kind):
    """PGD (written here, 20 steps, eps 0.1) on the float twin, judged on the deployed int8 model itself:
    far above the clean error and random signs of the same size, and as good as PGD on the float model."""
    model, original, _ = deployed[kind]
    x, y = images
    twin, _ = differentiable_twin(model)

    def fooled(images_: torch.Tensor) -> float:
        with torch.no_grad():
            return (model(images_).argmax(1) != y).float().mean().item()

    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    clean, noise = fooled(x), fooled((x + EPS * signs).clamp(0, 1))
    through_twin, through_float = fooled(pgd(twin, x, y)), fooled(pgd(original, x, y))
    # measured on seed 0: MLP 0.76 (clean 0.06, signs 0.08), CNN 0.46 (clean 0.11, signs 0.10)
    assert through_twin >= max(clean, noise) + 0.25, (through_twin, clean, noise)
    assert through_twin >= through_float - 0.05, (through_twin, through_float)  # 0.75 and 0.47 on seed 0


def test_shieldkits_pgd_through_the_view_fools_the_quantized_mlp(deployed, images):
    model, _, _ = deployed["dynamic_int8"]
    x, y = images
    result = sk.create_attack("pgd", eps=EPS, steps=20, seed=0).run(TwinView(model), x, y)
    with torch.no_grad():
        judged = model(result.x_adv).argmax(1) != y
    assert torch.equal(result.success, judged)
    assert judged.float().mean() >= 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantised kernel's "no autograd kernel" warning
        with pytest.raises(sk.NoGradientError):  # without the view, as before
            sk.create_attack("pgd", eps=EPS, steps=2).run(model, x[:4], y[:4])


# ------------------------------------------------------------------ the diagnosis


EXPECTED_FLAGS = {
    "dynamic_int8": ("missing_gradients", "deployed_precision"),  # quantised kernels have no autograd
    "static_int8": ("missing_gradients", "deployed_precision"),
    "bfloat16": ("deployed_precision",),  # autograd runs, in bfloat16
    "inference_mode": ("missing_gradients", "deployed_precision"),  # an inference tensor has no graph
}


@pytest.mark.parametrize("kind", KINDS)
def test_the_diagnosis_finds_the_deployment_and_does_not_crash(deployed, images, kind):
    model, _, _ = deployed[kind]
    x, y = images
    digest = model_digest(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diagnosis = diagnose(model, x, y, max_samples=32)
    assert diagnosis.flags == EXPECTED_FLAGS[kind]
    assert tuple(f.check for f in diagnosis.findings) == CHECKS
    finding = diagnosis.finding("deployed_precision")
    assert finding.share == 1.0 and finding.measured == scan_deployment(model).modules > 0
    assert all(reason in finding.detail for reason in EXPECTED_REASONS[kind])
    assert model_digest(model) == digest


# ------------------------------------------------------------------ decorators, casts, the unsupported


class _Preprocess(nn.Module):
    @torch.no_grad()
    def forward(self, x):
        return (x - 0.5) * 2


def _logged(function):
    """A decorator of the user's own, outside a grad-disabling one."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)
    return wrapper


class _HalfCasting(nn.Module):
    """Deployed in float16 with the cast written in forward (as deployment scripts do)."""

    def __init__(self, model):
        super().__init__()
        self.model = copy.deepcopy(model).half()

    def forward(self, x):
        return self.model(x.half()).float()


def test_a_decorated_submodule_and_an_instance_forward_are_undecorated(floats, images):
    x, y = images
    model = nn.Sequential(_Preprocess(), floats["mlp"]).eval()
    twin, reasons = differentiable_twin(model)
    assert reasons == ("forward under torch.no_grad (1 module)",)
    inputs = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(twin(inputs), y), inputs)
    assert grad.abs().sum() > 0
    assert "forward" not in vars(model[0])

    wrapper = InferenceMode(floats["mlp"])
    wrapper.forward = torch.no_grad()(InferenceMode.forward.__wrapped__).__get__(wrapper)  # the instance's own
    twin, reasons = differentiable_twin(wrapper)
    assert reasons == ("forward under torch.no_grad (1 module)",)
    assert twin(x.clone().requires_grad_(True)).requires_grad


def test_a_decorator_beneath_another_and_a_quantized_lstm_have_no_twin(floats, images, caplog):
    x, y = images
    buried = InferenceMode(floats["mlp"])
    buried.forward = _logged(torch.no_grad()(lambda images_: buried.model(images_)))
    lstm = nn.Sequential(nn.Flatten(), nn.Unflatten(1, (28, 28)), nn.LSTM(28, 16, batch_first=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized_lstm = tq.quantize_dynamic(lstm, {nn.LSTM}, dtype=torch.qint8)
    for model, what in ((buried, "beneath another decorator"), (quantized_lstm, "LSTM")):
        with caplog.at_level(logging.WARNING, logger="shieldkit.escalation.twin"):
            assert differentiable_twin(model) is None
        assert what in caplog.text
        scan = scan_deployment(model)
        assert scan.unsupported and not scan.convertible
    finding = diagnose(buried, x, y, max_samples=8).finding("deployed_precision")
    assert not finding.found and "beneath another decorator" in finding.detail


def test_a_forward_that_casts_to_float16_runs_its_twin_in_float32(floats, images):
    x, y = images
    model = _HalfCasting(floats["mlp"]).eval()
    twin, reasons = differentiable_twin(model)
    assert reasons == ("float16 parameters (2 modules)",)
    inputs = x.clone().requires_grad_(True)
    out = twin(inputs)
    assert out.dtype == torch.float32
    (grad,) = torch.autograd.grad(F.cross_entropy(out, y), inputs)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        deployed_out = model(x)
    assert (out.argmax(1) == deployed_out.argmax(1)).float().mean() >= 0.95
    view = TwinView(model)
    assert torch.equal(view(x.clone().requires_grad_(True)).detach(), deployed_out)


def test_many_static_quantized_module_types_have_float_twins():
    """Quantised norms, activations, ConvTranspose, Conv1d, a skip connection (QFunctional) and LayerNorm on
    random weights, calibrated on random images: the twin is within the int8 model's own distance of the float
    model it came from (the twin drops only the activations' rounding)."""

    class Many(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.conv, self.bn, self.relu6, self.hardswish = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), \
                nn.ReLU6(), nn.Hardswish()
            self.up, self.leaky, self.gn = nn.ConvTranspose2d(4, 4, 3, padding=1), nn.LeakyReLU(0.1), nn.GroupNorm(2, 4)
            self.elu, self.inorm, self.drop = nn.ELU(), nn.InstanceNorm2d(4, affine=True), nn.Dropout(0.1)
            self.skip, self.conv1 = nn.quantized.FloatFunctional(), nn.Conv1d(4, 4, 3, padding=1)
            self.flatten, self.fc, self.ln, self.fc2 = nn.Flatten(), nn.Linear(256, 16), nn.LayerNorm(16), \
                nn.Linear(16, 10)

        def forward(self, x):
            h = self.hardswish(self.relu6(self.bn(self.conv(self.quant(x)))))
            h = self.skip.add(h, self.leaky(self.up(h)))
            h = self.drop(self.inorm(self.elu(self.gn(h))))
            h = self.conv1(h.reshape(h.shape[0], 4, 64)).reshape(h.shape[0], 4, 8, 8)
            return self.dequant(self.fc2(self.ln(self.fc(self.flatten(h)))))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Many().eval()
        x = torch.rand(64, 1, 8, 8)
    model.qconfig = tq.get_default_qconfig("x86")
    model.up.qconfig = tq.default_qconfig  # per-channel weights are not supported for ConvTranspose
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = tq.prepare(copy.deepcopy(model))
        with torch.no_grad():
            prepared(x)
        quantized = tq.convert(prepared).eval()
    twin, reasons = differentiable_twin(quantized)
    assert len(reasons) == 16 and "int8 Linear (2 modules)" in reasons and "int8 QFunctional (1 module)" in reasons
    assert scan_deployment(twin).reasons == ()
    with torch.no_grad():
        reference, deployed_out, twin_out = model(x), quantized(x), twin(x)
    assert (twin_out - reference).abs().amax() <= (deployed_out - reference).abs().amax()
    assert (twin_out.argmax(1) == deployed_out.argmax(1)).float().mean() >= 0.9
