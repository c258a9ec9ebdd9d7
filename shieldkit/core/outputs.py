"""A model's output as logits: a tensor as it is; a tuple, a dict or an output object read one fixed way.

Hugging Face image classifiers return an object with ``.logits``, many research models a
tuple ``(logits, features)`` or a dict. Every attack and remedy needs a tensor ``[B, K]``,
so the evaluation reads the model's output once, picks how to take the logits from it
(:func:`output_kind`) and wraps the model in :class:`LogitsOutput`, whose forward returns
that tensor. The kinds, in the order they are tried:

- ``"tensor"``: the output is the logits;
- ``"sequence"``: a tuple or list whose first element is a tensor (the logits);
- ``"mapping"``: a dict (or other mapping) with a ``"logits"`` tensor;
- ``"attribute"``: an object with a ``logits`` tensor attribute (Hugging Face's ``ImageClassifierOutput``).

Anything else is refused with the type and the fix: a module whose forward returns the logits tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from shieldkit.core.errors import InvalidModelError

__all__ = ["OUTPUT_KINDS", "LogitsOutput", "logits_of", "output_kind"]

#: How logits are taken from an output, by kind (see the module docstring).
OUTPUT_KINDS = ("tensor", "sequence", "mapping", "attribute")
_DESCRIPTIONS = {"sequence": "its first element", "mapping": "its 'logits' entry", "attribute": "its .logits"}


def output_kind(output: object) -> str | None:
    """The kind of ``output`` (:data:`OUTPUT_KINDS`), or ``None`` when no logits tensor can be taken from it."""
    if isinstance(output, Tensor):
        return "tensor"
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return "sequence"
    if isinstance(output, Mapping) and isinstance(output.get("logits"), Tensor):
        return "mapping"
    if isinstance(getattr(output, "logits", None), Tensor):
        return "attribute"
    return None


def logits_of(output: object, kind: str) -> Tensor:
    """The logits tensor of ``output``, taken as ``kind`` says."""
    if kind == "tensor":
        return output  # type: ignore[return-value]
    if kind == "sequence":
        return output[0]  # type: ignore[index]
    if kind == "mapping":
        return output["logits"]  # type: ignore[index]
    return output.logits  # type: ignore[attr-defined]


def refusal(output: object, who: str = "model") -> InvalidModelError:
    """The one-line error for an output no logits can be taken from."""
    return InvalidModelError(
        f"{who} returns a {type(output).__name__}; shieldkit takes logits from a tensor, a tuple or list (its first "
        "element), a dict with 'logits' or an object with .logits: wrap the model in a module whose forward returns "
        "the logits tensor [B, K]")


def describe(kind: str) -> str:
    """How the logits are taken, for the one line that tells the user."""
    return _DESCRIPTIONS.get(kind, "the output itself")


class LogitsOutput(nn.Module):
    """``model`` with a forward that returns the logits tensor of its output.

    Args:
        model: the classifier.
        kind: one of :data:`OUTPUT_KINDS`; ``None`` picks it from the first output and keeps it.
    """

    def __init__(self, model: nn.Module, kind: str | None = None):
        super().__init__()
        if kind is not None and kind not in OUTPUT_KINDS:
            raise InvalidModelError(f"LogitsOutput: kind must be one of {OUTPUT_KINDS}, got {kind!r}")
        self.model = model
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        output = self.model(x)
        if self.kind is None:
            kind = output_kind(output)
            if kind is None:
                raise refusal(output)
            self.kind = kind
        return logits_of(output, self.kind)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
