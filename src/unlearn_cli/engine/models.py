"""Small image classifiers registered by name: the surrogate and the attackers.

Every model takes images in [0, 1] and normalises them itself, so that noise budgets are
expressed in pixel space. ``features`` returns the penultimate representation used for
class matching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class Classifier(nn.Module):
    """A backbone producing a feature vector, followed by a linear head."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone((images - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _resnet(stem_stride: int, widths: tuple[int, ...], blocks: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = [
        nn.Conv2d(3, widths[0], 3, stem_stride, 1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    in_channels = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            layers.append(_BasicBlock(in_channels, width, stride))
            in_channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def _vgg(widths: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = []
    in_channels = 3
    for width in widths:
        layers += [
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        in_channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class ModelSpec:
    """How to build a registered model and what it is for."""

    name: str
    description: str
    build: Callable[[int], Classifier]


def _resnet_small(num_classes: int) -> Classifier:
    return Classifier(_resnet(2, (32, 64, 128, 256), (1, 1, 1, 1)), 256, num_classes)


def _resnet18(num_classes: int) -> Classifier:
    return Classifier(_resnet(1, (64, 128, 256, 512), (2, 2, 2, 2)), 512, num_classes)


def _vgg_small(num_classes: int) -> Classifier:
    return Classifier(_vgg((32, 64, 128, 256)), 256, num_classes)


def _resnet18_imagenet(num_classes: int) -> Classifier:
    from torchvision.models import resnet18

    trunk = resnet18()
    trunk.fc = nn.Identity()
    return Classifier(trunk, 512, num_classes)


def _mobilenet(num_classes: int) -> Classifier:
    from torchvision.models import mobilenet_v2

    trunk = mobilenet_v2(width_mult=0.5).features
    backbone = nn.Sequential(trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(backbone, 1280, num_classes)


def _mobilenet_v3(num_classes: int) -> Classifier:
    from torchvision.models import mobilenet_v3_small

    trunk = mobilenet_v3_small()
    trunk.classifier[-1] = nn.Identity()
    for module in trunk.modules():  # torchvision's 0.01 suits ImageNet's long training; after
        if isinstance(module, nn.BatchNorm2d):  # a few hundred steps its running statistics
            module.momentum = 0.1  # are still far off, and the model predicts one class
    return Classifier(trunk, 1024, num_classes)


def _shufflenet(num_classes: int) -> Classifier:
    from torchvision.models import shufflenet_v2_x1_0

    trunk = shufflenet_v2_x1_0()
    trunk.fc = nn.Identity()
    return Classifier(trunk, 1024, num_classes)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "resnet_small", "ResNet with a strided stem, 4 blocks (fast surrogate)", _resnet_small
        ),
        ModelSpec("resnet18", "the paper's ResNet-18 with a 3x3 stem (slow on CPU)", _resnet18),
        ModelSpec(
            "resnet18_imagenet",
            "torchvision ResNet-18 with the ImageNet stem (7x7 stride 2 and max-pool)",
            _resnet18_imagenet,
        ),
        ModelSpec("vgg_small", "VGG-style CNN, 4 conv stages with batch norm", _vgg_small),
        ModelSpec("mobilenet", "torchvision MobileNetV2, width 0.5", _mobilenet),
        ModelSpec(
            "mobilenet_v3",
            "torchvision MobileNetV3-Small, batch-norm momentum 0.1 (an attacker)",
            _mobilenet_v3,
        ),
        ModelSpec("shufflenet", "torchvision ShuffleNetV2 x1.0 (an attacker)", _shufflenet),
    )
}


def create_model(name: str, num_classes: int, seed: int | None = None) -> Classifier:
    """Build a registered model; ``seed`` makes its initial weights reproducible."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if seed is None:
        return MODELS[name].build(num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name].build(num_classes)
