"""The model as deployed: quantised modules, reduced-precision tensors and forwards run with autograd off.

Users hand shieldkit models the way they deploy them: dynamically or statically quantised
(``torch.ao.quantization``), cast to ``bfloat16``/``float16``, or with ``forward`` decorated
by ``@torch.inference_mode()`` / ``@torch.no_grad()``. Such a model has no input gradient,
or a coarse one, yet an attacker holds its float weights. :func:`scan_deployment` finds
these by the model's structure alone (no forward pass): which modules a float32 twin
(:func:`shieldkit.escalation.twin.differentiable_twin`) would replace, cast or unwrap, and
which it could not. :func:`deployed_precision` turns the scan into the diagnosis's
``deployed_precision`` finding.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
from torch import nn

from shieldkit.diagnosis.records import Finding

#: Reduced floating dtypes a twin computes in float32 instead.
REDUCED_DTYPES: dict[torch.dtype, str] = {torch.float16: "float16", torch.bfloat16: "bfloat16"}

#: Quantised modules with a float equivalent (the twin's converters cover exactly these).
QUANTIZED_MODULES: frozenset[type[nn.Module]] = frozenset({
    nnqd.Linear, nniqd.LinearReLU,
    nnqd.Conv1d, nnqd.Conv2d, nnqd.Conv3d,
    nnq.Linear, nniq.LinearReLU, nniq.LinearLeakyReLU, nniq.LinearTanh,
    nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nniq.ConvReLU1d, nniq.ConvReLU2d, nniq.ConvReLU3d,
    nniq.ConvAdd2d, nniq.ConvAddReLU2d,
    nnq.ConvTranspose1d, nnq.ConvTranspose2d, nnq.ConvTranspose3d,
    nnq.BatchNorm2d, nnq.BatchNorm3d, nniq.BNReLU2d, nniq.BNReLU3d,
    nnq.LayerNorm, nnq.GroupNorm, nnq.InstanceNorm1d, nnq.InstanceNorm2d, nnq.InstanceNorm3d,
    nnq.ReLU6, nnq.Hardswish, nnq.ELU, nnq.LeakyReLU, nnq.Sigmoid, nnq.Softmax, nnq.PReLU, nnq.Dropout,
    nnq.Embedding,
    nnq.Quantize, nnq.DeQuantize, nnq.QFunctional,
})
#: Modules of torch's quantised namespaces that already compute in float (left as they are).
FLOAT_MODULES: frozenset[type[nn.Module]] = frozenset({nnq.FloatFunctional, nnq.FXFloatFunctional, nnq.MaxPool2d})
_QUANTIZED_NAMESPACES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized",
                         "torch.nn.quantized", "torch.nn.intrinsic.quantized")
#: Float reference modules (``torch.ao.nn.quantized.reference``) compute in float already.
_REFERENCE_NAMESPACE = "torch.ao.nn.quantized.reference"


def is_quantized_module(module: nn.Module) -> bool:
    """Whether ``module`` is one of torch's quantised modules (supported by the twin or not)."""
    if type(module) in QUANTIZED_MODULES:
        return True
    if type(module) in FLOAT_MODULES or type(module).__module__.startswith(_REFERENCE_NAMESPACE):
        return False
    return type(module).__module__.startswith(_QUANTIZED_NAMESPACES)


def quantized_label(module: nn.Module) -> str:
    """``"dynamic int8 Linear"``, ``"int8 ConvReLU2d"``: how a quantised module is named in reasons."""
    kind = type(module)
    name = kind.__name__
    if ".dynamic" in kind.__module__:
        packed = getattr(module, "_packed_params", None)
        dtype = getattr(packed, "dtype", torch.qint8)
        return f"dynamic {'float16' if dtype == torch.float16 else 'int8'} {name}"
    return f"int8 {name}"


# ------------------------------------------------------------------ decorated forwards


def _grad_disabling(wrapper: Callable) -> str | None:
    """The label of the context ``wrapper`` (a torch context decorator's wrapper) runs its function under,
    when that context disables autograd or lowers the precision; None for anything else."""
    for cell in getattr(wrapper, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        context = getattr(value, "__self__", value)  # torch keeps the bound ``clone`` of the context
        if isinstance(context, torch.inference_mode) and getattr(context, "mode", True):
            return "forward under torch.inference_mode"
        if isinstance(context, torch.no_grad):
            return "forward under torch.no_grad"
        if isinstance(context, torch.set_grad_enabled) and not getattr(context, "mode", True):
            return "forward under torch.set_grad_enabled(False)"
        if isinstance(context, torch.autocast) and getattr(context, "_enabled", False):
            dtype = REDUCED_DTYPES.get(getattr(context, "fast_dtype", None), "reduced precision")
            return f"forward under torch.autocast({dtype})"
    return None


@dataclass(frozen=True)
class Decorated:
    """What wraps a module's ``forward``.

    Attributes:
        labels: the autograd-disabling (or autocast) decorators stripped, outermost first.
        inner: the function beneath them (the forward to bind on a twin; None if nothing was stripped).
        bound: whether the forward is called with the module as ``self`` (a method), not a plain callable.
        buried: a decorator of that kind found beneath another decorator, which the twin cannot strip.
    """

    labels: tuple[str, ...]
    inner: Callable | None
    bound: bool
    buried: str | None


def decorated_forward(module: nn.Module) -> Decorated:
    """The decorators a twin strips from ``module``'s forward (the instance's own, else its class's)."""
    own = vars(module).get("forward")
    if own is not None:
        function, bound = (own.__func__, True) if inspect.ismethod(own) else (own, False)
    else:
        function, bound = type(module).forward, True
    labels: list[str] = []
    current = function
    while (label := _grad_disabling(current)) is not None and hasattr(current, "__wrapped__"):
        labels.append(label)
        current = current.__wrapped__
    buried = None
    deeper = current
    while hasattr(deeper, "__wrapped__"):
        deeper = deeper.__wrapped__
        if (label := _grad_disabling(deeper)) is not None:
            buried = label
            break
    return Decorated(tuple(labels), current if labels else None, bound, buried)


# ------------------------------------------------------------------ the scan


@dataclass(frozen=True)
class DeploymentScan:
    """What a float32 twin of a model changes, module by module (qualified names; ``""`` is the model).

    Attributes:
        quantized: ``(module, label)`` for each quantised module the twin replaces by a float one.
        reduced: ``(module, dtype)`` for each module with its own float16/bfloat16 parameters or buffers.
        decorated: ``(module, label)`` for each forward decorated with ``torch.inference_mode``,
            ``torch.no_grad``, ``torch.set_grad_enabled(False)`` or ``torch.autocast``.
        unsupported: ``(module, what)`` for what the twin cannot convert (a quantised LSTM, a decorator
            buried under another); any makes the twin impossible.
    """

    quantized: tuple[tuple[str, str], ...] = ()
    reduced: tuple[tuple[str, str], ...] = ()
    decorated: tuple[tuple[str, str], ...] = ()
    unsupported: tuple[tuple[str, str], ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """Short reasons with counts: ``"dynamic int8 Linear (3 modules)"``, ``"bfloat16 parameters (5 modules)"``."""
        counts: Counter[str] = Counter()
        for _, label in self.quantized:
            counts[label] += 1
        for _, dtype in self.reduced:
            counts[f"{dtype} parameters"] += 1
        for _, label in self.decorated:
            counts[label] += 1
        return tuple(f"{label} ({n} module{'s' if n > 1 else ''})" for label, n in counts.items())

    @property
    def modules(self) -> int:
        """How many modules the twin changes (each counted once)."""
        return len({name for name, _ in self.quantized + self.reduced + self.decorated})

    @property
    def convertible(self) -> bool:
        """Whether a float twin would differ from the model and can be built."""
        return bool(self.reasons) and not self.unsupported


def scan_deployment(model: nn.Module) -> DeploymentScan:
    """Scan ``model``'s modules (no forward pass) for what a differentiable float32 twin would change."""
    quantized, reduced, decorated, unsupported = [], [], [], []
    inside: list[str] = []  # quantised modules whose children belong to them (packed parameters)
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") or prefix == "" for prefix in inside):
            continue
        if is_quantized_module(module):
            inside.append(name)
            if type(module) in QUANTIZED_MODULES:
                quantized.append((name, quantized_label(module)))
            else:
                unsupported.append((name, f"quantised {type(module).__name__} has no float equivalent here"))
            continue
        dtypes = {t.dtype for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))
                  if t.dtype in REDUCED_DTYPES}
        for dtype in sorted(dtypes, key=str):
            reduced.append((name, REDUCED_DTYPES[dtype]))
        found = decorated_forward(module)
        decorated.extend((name, label) for label in found.labels)
        if found.buried is not None:
            unsupported.append((name, f"{found.buried} beneath another decorator"))
    return DeploymentScan(tuple(quantized), tuple(reduced), tuple(decorated), tuple(unsupported))


def active_dropout(model: nn.Module) -> list[str]:
    """Where ``model`` drops units at random in eval mode: the dropout calls of a traced or exported graph
    (``torch.export`` of a model left in train mode bakes ``dropout(x, p, train=True)`` into the graph, and
    ``.eval()`` cannot switch it off), as ``"module: op"`` (no forward pass)."""
    found = []
    for name, module in model.named_modules():
        graph = getattr(module, "graph", None)
        nodes = getattr(graph, "nodes", None) if graph is not None and not callable(graph) else None
        for node in nodes or ():
            target = getattr(node, "target", None)
            label = str(getattr(target, "__name__", target))
            if "dropout" not in label or "feature_alpha" in label:
                continue
            train = node.kwargs.get("train", node.args[2] if len(node.args) > 2 else None)
            if train is True:
                found.append(f"{name or 'the model'}: {label}")
    return found


def deployed_precision(model: nn.Module) -> Finding:
    """The ``deployed_precision`` finding: the model is quantised, in reduced precision or runs its
    forward with autograd off, and a differentiable float32 twin of it can be built.

    measured: how many modules the twin changes; found above 0 when nothing is unsupported
    (share 1.0: a property of the model, so of every sample).
    """
    scan = scan_deployment(model)
    if scan.convertible:
        return Finding("deployed_precision", True, 1.0, float(scan.modules), 0.0,
                       "a float32 twin differentiates it: " + "; ".join(scan.reasons))
    if scan.unsupported:
        what = "; ".join(f"{name or 'the model'}: {why}" for name, why in scan.unsupported)
        also = f" (also: {'; '.join(scan.reasons)})" if scan.reasons else ""
        return Finding("deployed_precision", False, 0.0, float(scan.modules), 0.0,
                       f"no float twin: {what}{also}")
    return Finding("deployed_precision", False, 0.0, 0.0, 0.0,
                   "float modules in float32 or float64, forwards with autograd")
