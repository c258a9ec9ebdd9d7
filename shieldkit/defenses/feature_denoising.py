"""Feature denoising (Xie et al. 2019): denoising blocks inside a CNN, trained adversarially."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core.attack import Attack
from shieldkit.core.errors import InvalidModelError, InvalidParameterError
from shieldkit.core.validation import check_choice
from shieldkit.defenses.adversarial_training import AdversarialTraining
from shieldkit.defenses.median_smoothing import median_filter

KINDS = ("non_local", "mean", "median")


class DenoisingBlock(nn.Module):
    """``x + conv1x1(denoise(x))``: a denoising operation, a 1x1 convolution and a residual connection.

    The 1x1 convolution starts at zero, so a freshly inserted block is the
    identity and a trained network keeps its accuracy until training moves it.

    Args:
        channels: feature channels of the input.
        kind: ``"non_local"`` (non-local means with softmax weights over all
            positions, Xie et al.'s best), ``"mean"`` (3x3 mean filter) or
            ``"median"`` (3x3 median filter).

    Shape:
        ``[B, channels, H, W] -> [B, channels, H, W]``.
    """

    def __init__(self, channels: int, kind: str = "non_local"):
        super().__init__()
        check_choice("DenoisingBlock", "kind", kind, KINDS)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise InvalidParameterError(f"DenoisingBlock: channels must be an integer >= 1, got {channels!r}")
        self.kind = kind
        self.channels = channels
        self.conv = nn.Conv2d(channels, channels, kernel_size=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def denoise(self, x: Tensor) -> Tensor:
        if self.kind == "mean":
            return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        if self.kind == "median":
            return median_filter(x, 3)
        batch, channels, height, width = x.shape
        flat = x.flatten(2)  # [B, C, N]
        affinity = torch.bmm(flat.transpose(1, 2), flat) / math.sqrt(channels)  # [B, N, N]
        weights = affinity.softmax(dim=-1)
        return torch.bmm(flat, weights.transpose(1, 2)).view(batch, channels, height, width)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise InvalidModelError(
                f"DenoisingBlock expects features [B, {self.channels}, H, W], got shape {tuple(x.shape)}"
            )
        return x + self.conv(self.denoise(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kind={self.kind!r}"


class Denoised(nn.Module):
    """A layer followed by a denoising block (what :func:`insert_denoising` puts in its place)."""

    def __init__(self, layer: nn.Module, block: DenoisingBlock):
        super().__init__()
        self.layer = layer
        self.denoise = block

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.denoise(self.layer(*args, **kwargs))


def insert_denoising(model: nn.Module, after: Sequence[str] | str | None = None, kind: str = "non_local") -> nn.Module:
    """A copy of ``model`` with a :class:`DenoisingBlock` after each named layer.

    Args:
        model: a CNN; it is not modified.
        after: names of layers (as in ``model.named_modules()``) whose outputs are
            denoised; ``None`` picks the last ``nn.Conv2d``. Each layer's channel
            count comes from the layer itself or the last convolution or
            batch-norm before it.
        kind: ``"non_local"``, ``"mean"`` or ``"median"``.

    Returns:
        The new model (each named layer ``L`` replaced by ``Denoised(L, block)``).

    Reference:
        Xie, Wu, van der Maaten, Yuille, He. Feature Denoising for Improving Adversarial
        Robustness. CVPR 2019.
    """
    check_choice("insert_denoising", "kind", kind, KINDS)
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"insert_denoising: model must be an nn.Module, got {type(model).__name__}")
    names = _layer_names(model, after)
    result = copy.deepcopy(model)
    modules = dict(result.named_modules())
    order = list(modules)
    for name in names:
        channels = _channels_at(name, order, modules)
        layer = modules[name]
        parent_name, _, attribute = name.rpartition(".")
        parent = modules[parent_name]
        block = DenoisingBlock(channels, kind).to(_device_of(layer, result))
        setattr(parent, attribute, Denoised(layer, block))
    return result


def _layer_names(model: nn.Module, after: Sequence[str] | str | None) -> list[str]:
    modules = dict(model.named_modules())
    if after is None:
        convolutions = [name for name, m in modules.items() if isinstance(m, nn.Conv2d)]
        if not convolutions:
            raise InvalidModelError("insert_denoising: the model has no nn.Conv2d; name the layers with after=")
        return [convolutions[-1]]
    names = [after] if isinstance(after, str) else list(after)
    if not names or not all(isinstance(n, str) for n in names):
        raise InvalidParameterError(f"insert_denoising: after must be layer names, got {after!r}")
    for name in names:
        if name not in modules or name == "":
            known = ", ".join(n for n in modules if n)
            raise InvalidParameterError(f"insert_denoising: the model has no layer {name!r}; layers: {known}")
    if len(set(names)) != len(names):
        raise InvalidParameterError(f"insert_denoising: after names a layer twice: {names!r}")
    return names


def _channels_at(name: str, order: list[str], modules: dict[str, nn.Module]) -> int:
    # A container's own layers follow it in named_modules order: search from its last one backwards.
    end = order.index(name)
    while end + 1 < len(order) and order[end + 1].startswith(name + "."):
        end += 1
    for candidate in reversed(order[: end + 1]):
        module = modules[candidate]
        if isinstance(module, nn.Conv2d):
            return module.out_channels
        if isinstance(module, nn.BatchNorm2d):
            return module.num_features
    raise InvalidModelError(f"insert_denoising: cannot tell the channels of {name!r}: no convolution at or before it")


def _device_of(layer: nn.Module, model: nn.Module) -> torch.device:
    for tensor in list(layer.parameters()) + list(model.parameters()):
        return tensor.device
    return torch.device("cpu")


class FeatureDenoising(AdversarialTraining):
    """Insert denoising blocks into the model, then train it adversarially.

    Xie et al. add non-local means blocks after residual stages of a ResNet and
    train on PGD examples only (``alpha=0``), the defaults here. ``fit`` returns
    the new model (the caller's is untouched); :func:`insert_denoising` alone
    gives the architecture without training.

    Args:
        denoiser: the blocks' kind: ``"non_local"``, ``"mean"`` or ``"median"``.
        after: layer names to denoise after; ``None``: the last convolution.
        attack, eps, alpha, attack_params: as for ``adversarial_training``.
        **common: ``bounds``, ``seed``.

    Reference:
        Xie, Wu, van der Maaten, Yuille, He. Feature Denoising for Improving Adversarial
        Robustness. CVPR 2019.
    """

    family = "feature_denoising"
    smoke_params: ClassVar[dict[str, Any]] = {"attack": "fgsm", "eps": 0.1, "denoiser": "mean"}

    def __init__(
        self,
        *,
        denoiser: str = "non_local",
        after: Sequence[str] | str | None = None,
        attack: str | Attack = "pgd",
        eps: float | None = None,
        alpha: float = 0.0,
        attack_params: dict | None = None,
        **common,
    ):
        super().__init__(attack=attack, eps=eps, alpha=alpha, attack_params=attack_params, **common)
        self.denoiser = check_choice(self.name, "denoiser", denoiser, KINDS)
        if after is not None and not isinstance(after, str) and not (
            isinstance(after, (list, tuple)) and after and all(isinstance(n, str) for n in after)
        ):
            raise InvalidParameterError(f"{self.name}: after must be a layer name, a list of them or None, got {after!r}")
        self.after = after

    def prepare(self, model: nn.Module) -> nn.Module:
        return insert_denoising(model, self.after, self.denoiser)
