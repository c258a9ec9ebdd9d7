"""Small reference classifiers: pixel-space images in ``[0, 1]`` to logits."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from shieldkit.core.layers import Normalize

__all__ = ["MNIST_MEAN", "MNIST_STD", "mlp", "mnist_cnn", "tiny_cnn"]

#: Pixel mean and standard deviation of the MNIST training set.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def _check_positive_int(function: str, **values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{function}: {name} must be an int >= 1, got {value!r}")


def mnist_cnn(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int = 28,
    width: int = 32,
    normalize: bool = True,
) -> nn.Module:
    """Two-conv CNN of the PyTorch MNIST example (~98-99% after one epoch).

    conv3x3(width) - ReLU - conv3x3(2*width) - ReLU - maxpool2 - linear(128) - ReLU - linear.

    Args:
        in_channels: image channels.
        num_classes: number of logits.
        input_size: image height and width (at least 6).
        width: channels of the first convolution; the second has twice as many.
        normalize: start with ``Normalize(0.1307, 0.3081)``, MNIST's pixel statistics.

    Returns:
        An ``nn.Sequential``.

    Shape:
        ``[B, in_channels, input_size, input_size] -> [B, num_classes]``.
    """
    _check_positive_int(
        "mnist_cnn",
        in_channels=in_channels,
        num_classes=num_classes,
        input_size=input_size,
        width=width,
    )
    if input_size < 6:
        raise ValueError(
            f"mnist_cnn: input_size must be at least 6 (two 3x3 convolutions and a 2x2 pool), got {input_size}"
        )
    pooled = (input_size - 4) // 2
    layers: list[tuple[str, nn.Module]] = []
    if normalize:
        layers.append(("normalize", Normalize(MNIST_MEAN, MNIST_STD)))
    layers += [
        ("conv1", nn.Conv2d(in_channels, width, 3)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(width, 2 * width, 3)),
        ("relu2", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(2 * width * pooled * pooled, 128)),
        ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(128, num_classes)),
    ]
    return nn.Sequential(OrderedDict(layers))


def mlp(
    *,
    in_features: int = 784,
    hidden: Sequence[int] | int = (256,),
    num_classes: int = 10,
    normalize: bool = False,
) -> nn.Module:
    """Fully connected ReLU network on the flattened image.

    Args:
        in_features: pixels per image, ``C*H*W`` (784 for MNIST).
        hidden: widths of the hidden layers (an int for a single one; empty for a
            linear classifier).
        num_classes: number of logits.
        normalize: start with ``Normalize(0.1307, 0.3081)``, MNIST's pixel statistics.

    Returns:
        An ``nn.Sequential``.

    Shape:
        ``[B, C, H, W] -> [B, num_classes]`` with ``C*H*W == in_features``.
    """
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    _check_positive_int("mlp", in_features=in_features, num_classes=num_classes)
    for index, units in enumerate(hidden):
        _check_positive_int("mlp", **{f"hidden[{index}]": units})
    layers: list[tuple[str, nn.Module]] = []
    if normalize:
        layers.append(("normalize", Normalize(MNIST_MEAN, MNIST_STD)))
    layers.append(("flatten", nn.Flatten()))
    previous = in_features
    for index, units in enumerate(hidden, start=1):
        layers += [(f"fc{index}", nn.Linear(previous, units)), (f"relu{index}", nn.ReLU())]
        previous = units
    layers.append((f"fc{len(hidden) + 1}", nn.Linear(previous, num_classes)))
    return nn.Sequential(OrderedDict(layers))


def tiny_cnn(*, in_channels: int = 1, num_classes: int = 10, input_size: int = 16) -> nn.Module:
    """A very small CNN with BatchNorm and Dropout, for state-handling tests.

    conv3x3(8) - BatchNorm - ReLU - maxpool2 - Dropout(0.25) - linear. Its
    BatchNorm running statistics and Dropout make any leak of training mode
    visible, which is what the conformance kit checks. Weights come from the
    global torch RNG, so ``torch.manual_seed(s)`` before the call fixes them.

    Args:
        in_channels: image channels.
        num_classes: number of logits.
        input_size: image height and width (at least 2).

    Returns:
        An ``nn.Sequential``.

    Shape:
        ``[B, in_channels, input_size, input_size] -> [B, num_classes]``.
    """
    _check_positive_int(
        "tiny_cnn", in_channels=in_channels, num_classes=num_classes, input_size=input_size
    )
    if input_size < 2:
        raise ValueError(f"tiny_cnn: input_size must be at least 2 (a 2x2 pool), got {input_size}")
    pooled = input_size // 2
    return nn.Sequential(
        OrderedDict(
            [
                ("conv", nn.Conv2d(in_channels, 8, 3, padding=1)),
                ("bn", nn.BatchNorm2d(8)),
                ("relu", nn.ReLU()),
                ("pool", nn.MaxPool2d(2)),
                ("dropout", nn.Dropout(0.25)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(8 * pooled * pooled, num_classes)),
            ]
        )
    )


#: The built-in model factories, registered by the native plugin under their function names.
MODELS = (mnist_cnn, mlp, tiny_cnn)
