"""The conventional per-channel normalisations of the standard datasets, by name.

A network trained on normalised inputs is evaluated with its normalisation put back in
front of it (``--normalize cifar10``, or ``Normalize(**named_normalization("cifar10"))``),
so the attacks, ε and the clipping stay in pixel space ``[0, 1]``.

The CIFAR values are the per-channel mean and standard deviation of each training set's
pixels in ``[0, 1]``, rounded to four places; the ImageNet values are the ones torchvision's
pretrained models (and most others) were trained with.
"""

from __future__ import annotations

__all__ = ["NORMALIZATIONS", "named_normalization"]

#: ``name -> ((mean per channel), (std per channel))``, channels in RGB order.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


def named_normalization(name: str) -> dict[str, list[float]] | None:
    """The conventional normalisation of a standard dataset.

    Args:
        name: a key of :data:`NORMALIZATIONS` (``"cifar10"``, ``"cifar100"``, ``"imagenet"``);
            case, hyphens and underscores are ignored (``"CIFAR-10"`` works).

    Returns:
        ``{"mean": [...], "std": [...]}`` (one value per RGB channel), or ``None`` for an unknown name.
    """
    if not isinstance(name, str):
        return None
    found = NORMALIZATIONS.get(_key(name))
    if found is None:
        return None
    mean, std = found
    return {"mean": list(mean), "std": list(std)}
