"""The scale benchmark's classifiers, written in plain torch (no torchvision): pixels in [0, 1] in, logits out.

* ``resnet18_cifar``: ResNet-18 for 32x32 inputs (He et al. 2016, the CIFAR variant of
  Madry et al.'s and RobustBench's code: a 3x3 stem of stride 1, no max-pool; basic blocks
  [2, 2, 2, 2] of widths 64-128-256-512); about 11.2 M parameters at 10 classes.
* ``wide_resnet``: WideResNet-28-10 for 32x32 inputs (Zagoruyko & Komodakis 2016: pre-activation
  basic blocks, (28 - 4) / 6 = 4 per group, widths 16, 160, 320, 640); about 36.5 M parameters.
* ``resnet50_imagenet``: ResNet-50 for 224x224 inputs (a 7x7 stem of stride 2 and a 3x3 max-pool,
  bottleneck blocks [3, 4, 6, 3] of widths 64-128-256-512 times 4, the stride on the 3x3
  convolution as torchvision's v1.5 has it); about 23.5 M parameters at 10 classes.

Each model starts with :class:`shieldkit.core.layers.Normalize` (CIFAR-10's or ImageNet's
mean and standard deviation). ``width`` scales every layer's channels (``resnet18_cifar`` and
``resnet50_imagenet``: the first group's width, 64 in the papers; ``wide_resnet``: the widening
factor, 10 in WRN-28-10), so the same architectures fit a CPU at a fraction of their cost;
the defaults are the published models. ``build(name, width)`` builds one by name.
"""

from __future__ import annotations

import torch
from torch import nn

from shieldkit.core.layers import Normalize

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions and a shortcut (a 1x1 convolution where the shape changes)."""

    def __init__(self, inputs: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != width:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet-50's bottleneck: 1x1 down, 3x3 (with the stride), 1x1 up to four times the width."""

    expansion = 4

    def __init__(self, inputs: int, width: int, stride: int):
        super().__init__()
        outputs = width * self.expansion
        self.conv1 = nn.Conv2d(inputs, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, outputs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet of ``block``s, ``counts`` per group; ``imagenet``: the 7x7 stride-2 stem and max-pool."""

    def __init__(self, block, counts: tuple[int, ...], width: int, classes: int, imagenet: bool):
        super().__init__()
        if imagenet:
            self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True))
        layers, inputs = [], width
        for group, count in enumerate(counts):
            planes = width * 2 ** group
            for index in range(count):
                layers.append(block(inputs, planes, 2 if group > 0 and index == 0 else 1))
                inputs = planes * getattr(block, "expansion", 1)
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(inputs, classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


class WideBlock(nn.Module):
    """WideResNet's pre-activation block: BN-ReLU-conv3x3 twice, the shortcut from the first activation."""

    def __init__(self, inputs: int, width: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inputs)
        self.conv1 = nn.Conv2d(inputs, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or inputs != width:
            self.shortcut = nn.Conv2d(inputs, width, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WideResNet-``depth``-``widen`` for 32x32 inputs."""

    def __init__(self, depth: int, widen: int, classes: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet: depth must be 6n + 4, got {depth}")
        count = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        layers, inputs = [], widths[0]
        for group, width in enumerate(widths[1:]):
            for index in range(count):
                layers.append(WideBlock(inputs, width, 2 if group > 0 and index == 0 else 1))
                inputs = width
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(inputs)
        self.fc = nn.Linear(inputs, classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def resnet18_cifar(width: int = 64, classes: int = 10) -> nn.Sequential:
    """ResNet-18, CIFAR variant, behind CIFAR-10's normalisation; input ``[B, 3, 32, 32]`` in [0, 1]."""
    return nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD),
                         ResNet(BasicBlock, (2, 2, 2, 2), width, classes, imagenet=False))


def wide_resnet(widen: int = 10, depth: int = 28, classes: int = 10) -> nn.Sequential:
    """WideResNet-``depth``-``widen`` behind CIFAR-10's normalisation; input ``[B, 3, 32, 32]`` in [0, 1]."""
    return nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD), WideResNet(depth, widen, classes))


def resnet50_imagenet(width: int = 64, classes: int = 10) -> nn.Sequential:
    """ResNet-50, ImageNet variant, behind ImageNet's normalisation; input ``[B, 3, 224, 224]`` in [0, 1]."""
    return nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD),
                         ResNet(Bottleneck, (3, 4, 6, 3), width, classes, imagenet=True))


#: name -> (builder, the published width, the input side)
MODELS = {
    "resnet18": (resnet18_cifar, 64, 32),
    "wrn28": (wide_resnet, 10, 32),
    "resnet50": (resnet50_imagenet, 64, 224),
}


def build(name: str, width: int | None = None, classes: int = 10) -> nn.Sequential:
    """The model ``name`` of :data:`MODELS` at ``width`` (``None``: the published one)."""
    builder, published, _ = MODELS[name]
    return builder(published if width is None else width, classes=classes)


def label(name: str, width: int | None = None) -> str:
    """The model's name as the table prints it (``ResNet-18``, ``WRN-28-10``, ``ResNet-50 (width 16)``)."""
    _, published, _ = MODELS[name]
    width = published if width is None else width
    if name == "wrn28":
        return f"WRN-28-{width}"
    base = {"resnet18": "ResNet-18", "resnet50": "ResNet-50"}[name]
    return base if width == published else f"{base} (width {width})"
