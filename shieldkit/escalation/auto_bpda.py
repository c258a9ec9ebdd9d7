"""Automatic BPDA: find what cuts or zeroes the gradient inside an opaque model and differentiate around it.

Three general mechanisms, applied while the view's forward runs (nothing is left
installed on the model between calls), each value-preserving (``hard + (soft -
soft.detach())`` is ``hard`` to the bit):

1. **Operations** (a :class:`~torch.overrides.TorchFunctionMode`): rounding-like
   functions whose derivative is zero (``round``, ``floor``, ``ceil``, ``trunc``,
   ``fix``, ``sign``) pass the gradient straight through (the identity); comparisons
   (``>``, ``>=``, ``<``, ``<=``), whose result is a boolean with no gradient, and step
   functions (``heaviside``, whose derivative is not implemented) get
   a sigmoid relaxation whose temperature is fitted to the spread of the compared
   difference, carried through ``cat``/``stack``/reshapes of the booleans and
   delivered where they are cast to floats, multiplied or used in ``where``; a float
   cast to integers (quantisation by ``.long()``) passes the gradient straight
   through where it is cast back. This is how thermometer encodings and
   binarisations become differentiable.
2. **Modules** (forward hooks on every submodule): a module whose output has the
   shape of its input but no gradient (a NumPy round-trip, a ``torch.no_grad``
   block, a ``.detach()``) is replaced in the backward pass by the identity.
3. **The first layer** (a forward pre-hook on every module with parameters): if the
   input of the first one to run has lost its gradient (preprocessing written in
   ``forward()``, not in a module) and holds as many values as the image, the whole
   preprocessing is differentiated as the identity, BPDA's classic choice for a
   shape-preserving transform. With ``preprocessing="identity"`` this is done even
   when a gradient exists (for a shattered but differentiable preprocessing).

Reference:
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
    Bengio, Leonard, Courville. Estimating or Propagating Gradients Through Stochastic
    Neurons for Conditional Computation. 2013 (the straight-through estimator).
    Buckman, Roy, Raffel, Goodfellow. Thermometer Encoding. ICLR 2018 (its relaxation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from shieldkit.core.validation import check_choice, check_number
from shieldkit.escalation.view import EscalationView

PREPROCESSING = ("auto", "identity", "keep")
STRAIGHT_THROUGH = frozenset({"round", "floor", "ceil", "trunc", "fix", "sign", "sgn"})
#: Step functions of a float (their derivative is zero or not implemented): relaxed like a comparison with 0.
STEPS = frozenset({"heaviside"})
GREATER = frozenset({"gt", "ge", "greater", "greater_equal", "__gt__", "__ge__"})
LESS = frozenset({"lt", "le", "less", "less_equal", "__lt__", "__le__"})
#: The sigmoid's temperature, as a share of the standard deviation of the compared difference.
TEMPERATURE = 0.1


def _differentiable(value: Any) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point() and value.requires_grad


def _map(value: Any, fn) -> Any:
    """``fn`` applied to every tensor in ``value`` (a tensor, or tensors nested in lists/tuples/dicts)."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return value


class _Relaxation(TorchFunctionMode):
    """Mechanism 1: differentiable stand-ins for operations without a useful derivative."""

    def __init__(self, temperature: float, found: set[str]):
        super().__init__()
        self.temperature = temperature
        self.found = found
        # id of a non-float tensor -> (the tensor, kept alive; its differentiable float companion)
        self.soft: dict[int, tuple[Tensor, Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not torch.is_grad_enabled() or not isinstance(out, Tensor):
            return out
        name = getattr(func, "__name__", "")
        first = args[0] if args else None
        if name in STRAIGHT_THROUGH and _differentiable(first) and out.shape == first.shape:
            self.found.add(f"{name}: straight-through")
            return first + (out - first).detach()
        if name in STEPS and _differentiable(first) and out.shape == first.shape:
            soft = torch.sigmoid(first / self._temperature(first))
            self.found.add(f"{name}: sigmoid relaxation")
            return out.detach() + (soft - soft.detach())
        if (name in GREATER or name in LESS) and out.dtype == torch.bool and len(args) >= 2:
            return self._compare(name, args[0], args[1], out)
        companions = self._companions(args, kwargs)
        if companions:
            return self._carry(func, name, args, kwargs, out)
        if not out.is_floating_point() and out.dtype != torch.bool and _differentiable(first) \
                and out.shape == first.shape:
            self.found.add(f"{name}: integer cast, straight-through")
            self.soft[id(out)] = (out, first)
        return out

    def _compare(self, name: str, a: Any, b: Any, out: Tensor) -> Tensor:
        if not (_differentiable(a) or _differentiable(b)):
            return out
        difference = a - b if name in GREATER else b - a
        self.soft[id(out)] = (out, torch.sigmoid(difference / self._temperature(difference)))
        self.found.add(f"{name}: sigmoid relaxation")
        return out

    def _temperature(self, difference: Tensor) -> float:
        # The step's width follows the spread of what is compared, so the relaxation is
        # in the units of that difference (pixels, activations) without being told them.
        spread = difference.detach().float().std() if difference.numel() > 1 else difference.detach().abs()
        return self.temperature * float(spread.clamp_min(1e-6))

    def _companions(self, args, kwargs) -> bool:
        found = False

        def visit(t: Tensor) -> Tensor:
            nonlocal found
            found = found or id(t) in self.soft
            return t

        _map((args, kwargs), visit)
        return found

    def _carry(self, func, name: str, args, kwargs, out: Tensor) -> Tensor:
        """Carry a relaxation through ``func``: to a new boolean/integer tensor, or into a float result."""
        def soft_of(t: Tensor) -> Tensor:
            entry = self.soft.get(id(t))
            return entry[1] if entry is not None else t

        def relaxed(t: Tensor) -> Tensor:
            entry = self.soft.get(id(t))
            if entry is None:
                return t
            soft = entry[1]
            return t.to(soft.dtype) + (soft - soft.detach())

        try:
            if name == "where" and len(args) == 3:
                condition, a, b = args
                soft = soft_of(condition)
                blend = soft * a + (1 - soft) * b
                return out + (blend - blend.detach())
            if out.dtype == torch.bool or not out.is_floating_point():
                soft_out = func(*_map(args, soft_of), **_map(kwargs, soft_of))
                if isinstance(soft_out, Tensor) and soft_out.shape == out.shape and soft_out.is_floating_point():
                    self.soft[id(out)] = (out, soft_out)
                return out
            result = func(*_map(args, relaxed), **_map(kwargs, relaxed))
        except (RuntimeError, TypeError, ValueError, IndexError):
            return out  # the function does not accept floats there (e.g. boolean indexing): no gradient
        if isinstance(result, Tensor) and result.shape == out.shape and result.dtype == out.dtype:
            return result
        return out


class AutoBPDAView(EscalationView):
    """The model's forward values, differentiated around whatever cuts or zeroes its gradient.

    After each forward pass, :attr:`found` names what was replaced (empty: the
    model was differentiated as it is).

    Args:
        model: the opaque model.
        preprocessing: ``"auto"`` (the first layer's input is straight-through only
            when its gradient was cut), ``"identity"`` (always: for a shattered but
            differentiable preprocessing) or ``"keep"`` (never).
        temperature: the comparisons' sigmoid temperature as a share of the spread
            of the compared difference (smaller: closer to the hard step, sparser gradient).
    """

    name = "auto_bpda"

    def __init__(self, model: nn.Module, *, preprocessing: str = "auto", temperature: float = TEMPERATURE):
        super().__init__(model)
        self.preprocessing = check_choice(self.owner, "preprocessing", preprocessing, PREPROCESSING)
        self.temperature = check_number(self.owner, "temperature", temperature, 0.0, strict=True)
        self.found: tuple[str, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.model(x)  # nothing to differentiate: the model as it is, no overhead
        found: set[str] = set()
        handles = self._install_hooks(x, found)
        try:
            with _Relaxation(self.temperature, found):
                out = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        self.found = tuple(sorted(found))
        return out

    def _install_hooks(self, x: Tensor, found: set[str]) -> list:
        names = {module: name for name, module in self.model.named_modules()}
        first_layer_done = [False]
        preprocessing = self.preprocessing

        def cut_module(module: nn.Module, args: tuple, output: Any) -> Any:
            source = args[0] if args else None
            if _differentiable(source) and isinstance(output, Tensor) and output.is_floating_point() \
                    and not output.requires_grad and output.shape == source.shape:
                found.add(f"module {names.get(module, '?')}: identity")
                return source + (output - source).detach()
            return None

        def first_layer(module: nn.Module, args: tuple) -> Any:
            if first_layer_done[0] or not args or not isinstance(args[0], Tensor):
                return None
            first_layer_done[0] = True
            h = args[0]
            cut = not h.requires_grad
            if preprocessing == "keep" or not h.is_floating_point() or h.numel() != x.numel():
                return None
            if preprocessing == "identity" or cut:
                found.add(f"input of {names.get(module, '?')}: identity")
                through = x.reshape(h.shape).to(h.dtype)
                return (through + (h - through).detach(), *args[1:])
            return None

        handles = []
        for module in self.model.modules():
            if module is not self.model:
                handles.append(module.register_forward_hook(cut_module))
            if next(module.parameters(recurse=False), None) is not None:
                handles.append(module.register_forward_pre_hook(first_layer))
        return handles

    def extra_repr(self) -> str:
        return f"preprocessing={self.preprocessing!r}, temperature={self.temperature}"


def find_gradient_cuts(model: nn.Module, x: Tensor, *, preprocessing: str = "auto") -> tuple[str, ...]:
    """What :class:`AutoBPDAView` replaces in ``model`` on ``x`` (one forward pass, no backward)."""
    view = AutoBPDAView(model, preprocessing=preprocessing)
    with torch.enable_grad():
        view(x.detach().clone().requires_grad_(True))
    return view.found
