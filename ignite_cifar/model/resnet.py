"""ResNet18/34 for 32x32 inputs with a pluggable, batch-independent normalization layer."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ignite_cifar.config import Config
from ignite_cifar.config_checks import ARCHITECTURES, NORMS
from ignite_cifar.model.standardized_conv import StandardizedConv2d

NormFactory = Callable[[int], nn.Module]
ConvType = type[nn.Conv2d]


def norm_factory(norm: str) -> NormFactory:
    """`layer`: GroupNorm(1, C), i.e. LayerNorm over (C, H, W) of each sample; `group`: up to 32 groups."""
    if norm == "layer":
        return lambda channels: nn.GroupNorm(1, channels)
    if norm == "group":
        return lambda channels: nn.GroupNorm(_groups(channels), channels)
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, make_norm: NormFactory, conv: ConvType = nn.Conv2d):
        super().__init__()
        self.conv1 = conv(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(out_ch)
        self.conv2 = conv(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.norm2 = make_norm(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv(in_ch, out_ch, 1, stride=stride, bias=False), make_norm(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem, four stages (64/128/256/512 x width channels, strides 1/2/2/2), global average pool, linear; every
    convolution weight-standardized with `weight_standardization`."""

    def __init__(self, blocks: list[int], num_classes: int = 10, norm: str = "layer", width: float = 1.0,
                 zero_init_residual: bool = False, weight_standardization: bool = False):
        super().__init__()
        make_norm = norm_factory(norm)
        conv: ConvType = StandardizedConv2d if weight_standardization else nn.Conv2d
        base = max(1, round(64 * width))
        channels = [base, base * 2, base * 4, base * 8]
        self.conv1 = conv(3, base, 3, stride=1, padding=1, bias=False)
        self.norm1 = make_norm(base)
        self.relu = nn.ReLU(inplace=True)
        in_ch = base
        stages = []
        for i, (out_ch, n) in enumerate(zip(channels, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_ch, out_ch, stride if j == 0 else 1, make_norm, conv))
                in_ch = out_ch
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # Goyal et al. 2017: each block's residual branch starts at 0, the block as identity
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.norm2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.norm1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


BLOCKS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}  # per stage; the names: config_checks.ARCHITECTURES


def build_model(name: str = "resnet18", num_classes: int = 10, norm: str = "layer", width: float = 1.0,
                zero_init_residual: bool = False, weight_standardization: bool = False) -> ResNet:
    """A CIFAR ResNet (`resnet18` or `resnet34`) for 32x32 images; `zero_init_residual` starts each block's last
    norm weight at 0, so every block starts as relu(shortcut(x)); `weight_standardization` standardizes every
    convolution's kernels (standardized_conv.StandardizedConv2d)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ResNet(BLOCKS[name], num_classes=num_classes, norm=norm, width=width,
                  zero_init_residual=zero_init_residual, weight_standardization=weight_standardization)


def configured_model(config: Config, num_classes: int, width: float | None = None) -> ResNet:
    """The configured network (model, norm, width, zero-init of the residual branches, weight standardization);
    `width` overrides."""
    return build_model(config.model, num_classes, config.norm, config.width if width is None else width,
                       zero_init_residual=config.zero_init_residual,
                       weight_standardization=config.weight_standardization)
