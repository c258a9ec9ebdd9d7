"""A differentiable twin of a model as deployed: int8, float16/bfloat16 or a forward under ``inference_mode``.

Users hand shieldkit models the way they ship them: dynamically quantised
(``torch.ao.quantization.quantize_dynamic``), statically quantised (eager mode:
``QuantStub``/``DeQuantStub``, ``prepare``/``convert``), cast to ``bfloat16`` or ``float16``,
or with ``forward`` decorated by ``@torch.inference_mode()`` / ``@torch.no_grad()``. Such a
model has no input gradient (quantised kernels have no autograd; an inference tensor has no
graph) or a coarse one, but whoever holds its file holds its float weights: the attack a real
attacker runs differentiates a float copy and judges on the deployed model.

:func:`differentiable_twin` builds that copy (the user's model is deep-copied, never changed):

- quantised modules become float modules with the dequantised weights (``Linear``, ``Conv1d/2d/3d``,
  ``ConvTranspose``, the fused ``LinearReLU``/``ConvReLU``/``ConvAdd``/``BNReLU``, the
  quantised norms and activations, ``Embedding``); ``Quantize``/``DeQuantize`` become the
  identity; ``QFunctional`` becomes ``FloatFunctional`` (float ``add``, ``cat``, ``mul``...);
  unconverted ``QuantStub``/``DeQuantStub`` stay (they are the identity);
- float16/bfloat16 parameters and buffers become float32, and a tensor the forward itself
  casts to float16/bfloat16 (``x.half()``) is computed in float32 instead;
- a ``forward`` decorated with ``torch.inference_mode``, ``torch.no_grad``,
  ``torch.set_grad_enabled(False)`` or ``torch.autocast`` (the model's or any submodule's) is
  replaced, on the copy's instance, by the function beneath the decorator.

What it finds is read from the model's structure by
:func:`shieldkit.diagnosis.deployment.scan_deployment`, the same scan behind the diagnosis's
``deployed_precision`` finding. :class:`TwinView` then attacks the model through its twin:
the forward values are the deployed model's own, the gradient the twin's.

Not supported (the twin is ``None``, with a warning): quantised recurrent modules (LSTM, GRU and
their cells), quantised ``EmbeddingBag`` and ``MultiheadAttention``, any other module of torch's
quantised namespaces, a grad-disabling decorator beneath another decorator, and ``torch.ops.quantized``
called directly in a ``forward``.
"""

from __future__ import annotations

import copy
import logging
import types
from collections.abc import Callable

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from shieldkit.core.errors import InvalidModelError
from shieldkit.core.validation import model_placement
from shieldkit.diagnosis.deployment import REDUCED_DTYPES, decorated_forward, scan_deployment
from shieldkit.escalation.view import EscalationView

logger = logging.getLogger(__name__)


def _float(tensor: Tensor | None) -> Tensor | None:
    """A (possibly quantised) tensor in float32."""
    if tensor is None:
        return None
    return (tensor.dequantize() if tensor.is_quantized else tensor).detach().float()


def _set(module: nn.Module, weight: Tensor, bias: Tensor | None) -> nn.Module:
    module.weight = nn.Parameter(_float(weight), requires_grad=False)
    if bias is not None:
        module.bias = nn.Parameter(_float(bias), requires_grad=False)
    return module


def _linear(m) -> nn.Linear:
    weight, bias = m.weight(), m.bias()
    return _set(nn.Linear(m.in_features, m.out_features, bias=bias is not None), weight, bias)


_CONVS: dict[int, tuple[type[nn.Module], type[nn.Module]]] = {
    1: (nn.Conv1d, nn.ConvTranspose1d), 2: (nn.Conv2d, nn.ConvTranspose2d), 3: (nn.Conv3d, nn.ConvTranspose3d)}


def _conv(m) -> nn.Module:
    weight, bias = m.weight(), m.bias()
    conv, transposed = _CONVS[weight.dim() - 2]
    common = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups, bias=bias is not None)
    if isinstance(m, (nnq.ConvTranspose1d, nnq.ConvTranspose2d, nnq.ConvTranspose3d)):
        module = transposed(m.in_channels, m.out_channels, m.kernel_size, output_padding=m.output_padding,
                            padding_mode=m.padding_mode, **common)
    else:
        module = conv(m.in_channels, m.out_channels, m.kernel_size, padding_mode=m.padding_mode, **common)
    return _set(module, weight, bias)


class _ConvAdd(nn.Module):
    """The float ``ConvAdd2d``/``ConvAddReLU2d``: ``conv(x) + extra``, then a ReLU if fused."""

    def __init__(self, conv: nn.Module, relu: bool):
        super().__init__()
        self.conv, self.relu = conv, relu

    def forward(self, x: Tensor, extra: Tensor) -> Tensor:
        out = self.conv(x) + extra
        return torch.relu(out) if self.relu else out


def _norm(float_type: type[nn.Module], m, *args, **kwargs) -> nn.Module:
    """A float norm module holding ``m``'s parameters and buffers (its scale and zero point left out)."""
    module = float_type(*args, **kwargs)
    state = {k: _float(v) if v.is_floating_point() or v.is_quantized else v
             for k, v in m.state_dict().items() if k not in ("scale", "zero_point")}
    module.load_state_dict(state)
    return module


def _batch_norm(float_type: type[nn.Module]) -> Callable[[nn.Module], nn.Module]:
    return lambda m: _norm(float_type, m, m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                           track_running_stats=m.track_running_stats)


def _instance_norm(float_type: type[nn.Module]) -> Callable[[nn.Module], nn.Module]:
    # The quantised kernel normalises with the instance's own statistics and always applies
    # weight and bias (whatever ``affine`` says): an affine float norm without running statistics.
    def convert(m) -> nn.Module:
        module = float_type(m.num_features, eps=m.eps, affine=True, track_running_stats=False)
        return _set(module, m.weight, m.bias)
    return convert


def _group_norm(m) -> nn.GroupNorm:
    # As the instance norm: the quantised kernel applies weight and bias whenever they exist.
    affine = m.weight is not None
    module = nn.GroupNorm(m.num_groups, m.num_channels, eps=m.eps, affine=affine)
    return _set(module, m.weight, m.bias) if affine else module


def _layer_norm(m) -> nn.LayerNorm:
    affine = m.weight is not None
    module = nn.LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=affine, bias=m.bias is not None)
    return _set(module, m.weight, m.bias) if affine else module


def _prelu(m) -> nn.PReLU:
    module = nn.PReLU(m.num_parameters)
    module.weight = nn.Parameter(_float(m.weight).reshape(module.weight.shape), requires_grad=False)
    return module


def _embedding(m) -> nn.Embedding:
    return nn.Embedding.from_pretrained(_float(m.weight()), freeze=True)


#: Each supported quantised module type -> its float equivalent; its keys are exactly
#: :data:`shieldkit.diagnosis.deployment.QUANTIZED_MODULES` (tests/component/test_twin.py).
CONVERTERS: dict[type[nn.Module], Callable[[nn.Module], nn.Module]] = {
    nnqd.Linear: _linear,
    nniqd.LinearReLU: lambda m: nn.Sequential(_linear(m), nn.ReLU()),
    nnqd.Conv1d: _conv, nnqd.Conv2d: _conv, nnqd.Conv3d: _conv,
    nnq.Linear: _linear,
    nniq.LinearReLU: lambda m: nn.Sequential(_linear(m), nn.ReLU()),
    nniq.LinearLeakyReLU: lambda m: nn.Sequential(_linear(m), nn.LeakyReLU(m.negative_slope)),
    nniq.LinearTanh: lambda m: nn.Sequential(_linear(m), nn.Tanh()),
    nnq.Conv1d: _conv, nnq.Conv2d: _conv, nnq.Conv3d: _conv,
    nniq.ConvReLU1d: lambda m: nn.Sequential(_conv(m), nn.ReLU()),
    nniq.ConvReLU2d: lambda m: nn.Sequential(_conv(m), nn.ReLU()),
    nniq.ConvReLU3d: lambda m: nn.Sequential(_conv(m), nn.ReLU()),
    nniq.ConvAdd2d: lambda m: _ConvAdd(_conv(m), relu=False),
    nniq.ConvAddReLU2d: lambda m: _ConvAdd(_conv(m), relu=True),
    nnq.ConvTranspose1d: _conv, nnq.ConvTranspose2d: _conv, nnq.ConvTranspose3d: _conv,
    nnq.BatchNorm2d: _batch_norm(nn.BatchNorm2d),
    nnq.BatchNorm3d: _batch_norm(nn.BatchNorm3d),
    nniq.BNReLU2d: lambda m: nn.Sequential(_batch_norm(nn.BatchNorm2d)(m), nn.ReLU()),
    nniq.BNReLU3d: lambda m: nn.Sequential(_batch_norm(nn.BatchNorm3d)(m), nn.ReLU()),
    nnq.LayerNorm: _layer_norm,
    nnq.GroupNorm: _group_norm,
    nnq.InstanceNorm1d: _instance_norm(nn.InstanceNorm1d),
    nnq.InstanceNorm2d: _instance_norm(nn.InstanceNorm2d),
    nnq.InstanceNorm3d: _instance_norm(nn.InstanceNorm3d),
    nnq.ReLU6: lambda m: nn.ReLU6(),
    nnq.Hardswish: lambda m: nn.Hardswish(),
    nnq.ELU: lambda m: nn.ELU(m.alpha),
    nnq.LeakyReLU: lambda m: nn.LeakyReLU(m.negative_slope),
    nnq.Sigmoid: lambda m: nn.Sigmoid(),
    nnq.Softmax: lambda m: nn.Softmax(m.dim),
    nnq.PReLU: _prelu,
    nnq.Dropout: lambda m: nn.Dropout(m.p),
    nnq.Embedding: _embedding,
    nnq.Quantize: lambda m: nn.Identity(),
    nnq.DeQuantize: lambda m: nn.Identity(),
    nnq.QFunctional: lambda m: nnq.FloatFunctional(),
}


class _Float32Casts(TorchFunctionMode):
    """Any float16/bfloat16 result (``x.half()``, ``x.to(torch.bfloat16)`` in a forward) computed in float32."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, Tensor) and out.dtype in REDUCED_DTYPES:
            return out.float()
        return out


class Float32Forward(nn.Module):
    """A model whose forward runs with every float16/bfloat16 result computed in float32 instead."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        with _Float32Casts():
            return self.model(*args, **kwargs)


def _replace(model: nn.Module) -> nn.Module:
    """Swap every supported quantised module of ``model`` (in place; the root too) for its float equivalent."""
    if type(model) in CONVERTERS:
        return _convert(model)
    converted: dict[int, nn.Module] = {}  # a module shared by two parents gets one float module
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not name or type(module) not in CONVERTERS:
            continue
        parent_name, _, leaf = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name)
        except AttributeError:  # beneath a module already converted
            continue
        if type(parent) in CONVERTERS:  # inside a module still to convert (its packed parameters)
            continue
        if id(module) not in converted:
            converted[id(module)] = _convert(module)
        setattr(parent, leaf, converted[id(module)])
    return model


def _convert(module: nn.Module) -> nn.Module:
    # A quantised kernel computes as in inference whatever its module's flag (``convert`` leaves
    # fresh modules in training mode under an eval model): its float equivalent is in eval mode.
    return CONVERTERS[type(module)](module).eval()


def _to_float32(model: nn.Module) -> None:
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dtype in REDUCED_DTYPES:
                setattr(module, name, nn.Parameter(param.detach().float(), requires_grad=param.requires_grad))
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.dtype in REDUCED_DTYPES:
                setattr(module, name, buffer.float())


def _undecorate(model: nn.Module) -> None:
    for module in model.modules():
        found = decorated_forward(module)
        if found.inner is not None:
            module.forward = types.MethodType(found.inner, module) if found.bound else found.inner


def differentiable_twin(model: nn.Module) -> tuple[nn.Module, tuple[str, ...]] | None:
    """A float32 copy of ``model`` that autograd differentiates, and why it was needed.

    Args:
        model: the model as deployed (quantised, in float16/bfloat16, or with its forward under
            ``torch.inference_mode``/``torch.no_grad``); deep-copied, never changed.

    Returns:
        ``(twin, reasons)``, the reasons short strings such as ``"dynamic int8 Linear (3 modules)"``,
        ``"bfloat16 parameters (5 modules)"`` or ``"forward under torch.inference_mode (1 module)"``;
        ``None`` when the model has nothing of the kind, or has something the twin cannot convert
        (logged as a warning naming it). The twin's parameters do not require grad.
    """
    if not isinstance(model, nn.Module):
        raise InvalidModelError(f"differentiable_twin: model must be an nn.Module, got {type(model).__name__}")
    scan = scan_deployment(model)
    if not scan.reasons and not scan.unsupported:
        return None
    if scan.unsupported:
        logger.warning("differentiable_twin: no float twin of %s: %s", type(model).__name__,
                       "; ".join(f"{name or 'the model'}: {why}" for name, why in scan.unsupported))
        return None
    try:
        twin = copy.deepcopy(model)
    except Exception as error:  # whatever deepcopy raises on an exotic model
        logger.warning("differentiable_twin: cannot copy %s (%s: %s)", type(model).__name__,
                       type(error).__name__, str(error).splitlines()[0][:160] if str(error) else "")
        return None
    twin = _replace(twin)
    _to_float32(twin)
    _undecorate(twin)
    if scan.reduced:  # a forward that casts its input to the model's dtype would cast it back down
        twin = Float32Forward(twin)
    for param in twin.parameters():
        param.requires_grad_(False)
    return twin, scan.reasons


class TwinView(EscalationView):
    """Attack a deployed model through its differentiable float32 twin.

    The forward values are the deployed model's own outputs (in at least float32, so an
    attack's success on the view is success on the model); the gradient is the twin's:
    ``deployed(x) + (twin(x) - twin(x).detach())``. The input is cast to the deployed model's
    floating dtype (a bfloat16 model gets bfloat16 images) and to the twin's; an inference
    tensor the deployed forward returns is cloned into a normal one. The twin is held first,
    so the view's placement (what an attack casts its images to) is the twin's float32.

    Args:
        model: the deployed model (held, never modified).
        twin: its float twin (``None``: :func:`differentiable_twin`).
    """

    name = "twin"

    def __init__(self, model: nn.Module, twin: nn.Module | None = None):
        super().__init__(model)
        reasons: tuple[str, ...] = ()
        if twin is None:
            made = differentiable_twin(model)
            if made is None:
                raise InvalidModelError(
                    f"TwinView: {type(model).__name__} is neither quantised nor in float16/bfloat16 nor run under "
                    "inference_mode/no_grad, or holds a module the twin cannot convert: no twin to attack")
            twin, reasons = made
        elif not isinstance(twin, nn.Module):
            raise InvalidModelError(f"TwinView: twin must be an nn.Module, got {type(twin).__name__}")
        self.twin = twin
        self.reasons = reasons
        # model_placement reads the first floating tensor: the twin's, so attacks compute in float32.
        self._modules = {"twin": self._modules.pop("twin"), **self._modules}

    def forward(self, x: Tensor) -> Tensor:
        _, deployed_dtype = model_placement(self.model, x.dtype)
        with torch.no_grad():
            deployed = self.model(x.detach().to(deployed_dtype))
        if not isinstance(deployed, Tensor):
            raise InvalidModelError(f"TwinView: the model returned {type(deployed).__name__}, not a tensor")
        if deployed.is_inference():
            deployed = deployed.clone()  # a normal tensor, which autograd may mix with others
        dtype = torch.promote_types(deployed.dtype, torch.float32) if deployed.is_floating_point() else torch.float32
        deployed = deployed.to(dtype)
        if not torch.is_grad_enabled():
            return deployed
        _, twin_dtype = model_placement(self.twin, x.dtype)
        twin = self.twin(x.to(twin_dtype)).to(dtype)
        if twin.shape != deployed.shape:
            raise InvalidModelError(f"TwinView: the twin returned shape {tuple(twin.shape)}, "
                                    f"the model {tuple(deployed.shape)}")
        return deployed + (twin - twin.detach())
