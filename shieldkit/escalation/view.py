"""The base class of every escalation view: an opaque model, attacked through a better backward pass."""

from __future__ import annotations

from torch import Tensor, nn

from shieldkit.core.errors import InvalidParameterError


class EscalationView(nn.Module):
    """An attack view of an opaque ``model``.

    Its forward values are the model's, or a monotone per-sample transform of them
    that keeps the argmax, so an attack's success measured on the view is success on
    the model; subclasses change only the backward pass. The model is held, never
    modified; ``name`` is the remedy's name in reports.
    """

    name: str = "view"

    def __init__(self, model: nn.Module):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InvalidParameterError(
                f"{type(self).__name__}: model must be an nn.Module, got {type(model).__name__}"
            )
        self.model = model

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    @property
    def owner(self) -> str:
        return type(self).__name__
