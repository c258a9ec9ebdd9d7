"""The model-state guard and call counting: what every attack run is wrapped in.

:class:`ModelStateGuard` leaves a user's model exactly as it found it;
:class:`CallCounter` counts the forward and backward passes an attack makes.
Input validation lives in :mod:`shieldkit.core.validation`, norms and projections
with the threat model in :mod:`shieldkit.core.threat`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldkit.core.errors import AttackContractError

# ----------------------------------------------------------------- state guard


def _unchanged(tensor: Tensor, saved: Tensor) -> bool:
    """Whether ``tensor`` still holds ``saved``'s shape, dtype, device and values.

    NaN counts as changed; restoring it is harmless.
    """
    same_kind = tensor.shape == saved.shape and tensor.dtype == saved.dtype and tensor.device == saved.device
    return same_kind and torch.equal(tensor, saved)


class ModelStateGuard:
    """Puts a model in eval mode for an attack and restores it exactly afterwards.

    Restored on exit: every module's ``training`` flag, every parameter object,
    its ``requires_grad``, ``.grad`` (the same tensor object, with its old values)
    and storage, and every buffer (BatchNorm statistics included). Libraries that
    switch modes or zero gradients without restoring them (ART's estimators do)
    cannot leave a trace on the user's model. Parameters are frozen during the
    attack, so only the input gets gradients.

    Parameter *values* are watched, not copied: a copy of every parameter per
    call would add the model's size to peak memory and, on a small model, cost
    more than the rest of the wrapper together. A parameter whose storage was
    replaced (``param.data = ...``) gets its own storage back, values intact.
    A parameter written in place moves autograd's version counter: nothing can
    undo that without a copy, so exit raises :class:`AttackContractError` naming
    the parameters (an attack must never change the model). A write through
    ``param.data`` bypasses the counter; the conformance kit
    (:func:`shieldkit.testing.check_attack`) compares every value before and
    after, so a registered attack that writes that way fails conformance.

    Args:
        model: the model to guard.
        owner: who runs inside (an attack's name), for the error message.
    """

    def __init__(self, model: nn.Module, owner: str = ""):
        self.model = model
        self.owner = owner

    def __enter__(self) -> nn.Module:
        model = self.model
        modules = list(model.modules())
        self._training = [(m, m.training) for m in modules]
        self._params = []
        self._buffers = []
        for module in modules:
            for name, p in module._parameters.items():
                if p is not None:
                    grad = None if p.grad is None else (p.grad, p.grad.detach().clone())
                    self._params.append((module, name, p, p.requires_grad, grad, p.data, p._version))
            for name, b in module._buffers.items():
                if b is not None:
                    self._buffers.append((module, name, b, b.detach().clone()))
        model.eval()
        for _, _, param, *_ in self._params:
            param.requires_grad_(False)
        return model

    def __exit__(self, exc_type, exc, traceback) -> None:
        written = []
        # Put back the very same tensor objects (optimisers and hooks hold references),
        # then their storage and values.
        with torch.no_grad():
            for module, training in self._training:
                if module.training is not training:
                    module.training = training
            for module, name, param, requires_grad, grad, data, version in self._params:
                if module._parameters.get(name) is not param:
                    module._parameters[name] = param
                if param.data_ptr() != data.data_ptr() or param.shape != data.shape or param.dtype != data.dtype:
                    param.data = data
                if param._version != version:
                    written.append((module, name))
                param.requires_grad_(requires_grad)
                if grad is None:
                    if param.grad is not None:
                        param.grad = None
                else:
                    grad_tensor, grad_values = grad
                    if not _unchanged(grad_tensor, grad_values):
                        grad_tensor.data = grad_values
                    param.grad = grad_tensor
            for module, name, buffer, values in self._buffers:
                module._buffers[name] = buffer
                if not _unchanged(buffer, values):
                    buffer.data = values
        self._training, self._params, self._buffers = [], [], []
        if written and exc_type is None:  # an error already on its way out is the one to report
            who = self.owner or "the guarded code"
            prefixes = {id(module): prefix for prefix, module in self.model.named_modules()}
            names = sorted({".".join(filter(None, (prefixes.get(id(m)), n))) for m, n in written})
            raise AttackContractError(
                f"{who} wrote to the model's parameters in place ({', '.join(names)}); "
                "an attack must not change the model, and shieldkit does not copy parameters to undo it"
            )


def snapshot_state(model: nn.Module) -> dict:
    """A comparable record of everything the guard restores (for tests and the conformance kit)."""
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grad": {name: None if p.grad is None else p.grad.detach().clone() for name, p in model.named_parameters()},
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
    }


def compare_state(before: dict, after: dict) -> list[str]:
    """What differs between two :func:`snapshot_state` records, one line per difference."""
    problems = []
    for key in ("training", "requires_grad"):
        for name, value in before[key].items():
            if after[key].get(name) != value:
                problems.append(f"{key} of {name or 'model'!r} was {value}, is {after[key].get(name)}")
    for key in ("grad", "params", "buffers"):
        for name, value in before[key].items():
            new = after[key].get(name)
            if value is None or new is None:
                if (value is None) != (new is None):
                    problems.append(f"{key} of {name!r} was {'None' if value is None else 'set'}, is {'None' if new is None else 'set'}")
            elif value.shape != new.shape or not torch.equal(value, new):
                diff = (value.float() - new.float()).abs().max().item() if value.shape == new.shape else float("nan")
                problems.append(f"{key} of {name!r} changed (max abs difference {diff:.3g})")
    return problems


# ------------------------------------------------------------------- counting


class CallCounter:
    """Counts forward passes, images forwarded and backward passes through a model.

    A forward hook counts calls; it also hooks the output tensor so that each
    backward pass through the model's output is counted once.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.forwards = 0
        self.queries = 0
        self.backwards = 0
        self.enabled = True
        self._handle = None

    def _on_forward(self, module, inputs, output) -> None:
        if not self.enabled:
            return
        self.forwards += 1
        if inputs and isinstance(inputs[0], Tensor) and inputs[0].dim() > 0:
            self.queries += int(inputs[0].shape[0])
        if isinstance(output, Tensor) and output.requires_grad:
            try:
                output.register_hook(self._on_backward)
            except RuntimeError:  # e.g. inside torch.func transforms
                pass

    def _on_backward(self, grad: Tensor) -> None:
        if self.enabled:
            self.backwards += 1

    def __enter__(self) -> CallCounter:
        self._handle = self.model.register_forward_hook(self._on_forward)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
