"""The recipe's configurable pieces, built from the config: the model, the optimizer and the training loss."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .config import Config
from .models import ResNet, build_model


def configured_model(config: Config, num_classes: int, width: float | None = None) -> ResNet:
    """The configured network (model, norm, width, zero-init of the residual branches); `width` overrides."""
    return build_model(config.model, num_classes, config.norm, config.width if width is None else width,
                       zero_init_residual=config.zero_init_residual)


def build_optimizer(config: Config, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with momentum, or Adam with weight decay as its L2 term, at the configured lr."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def training_criterion(config: Config) -> nn.Module:
    """The training loss: cross-entropy with the configured label smoothing. Evaluation uses plain cross-entropy,
    so val losses (which the plateau scheduler steps on) stay comparable between recipes."""
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def optimizer_settings(config: Config) -> dict[str, float]:
    """The param-group settings that flags given with --resume replace (Adam has no momentum)."""
    if config.optimizer == "adam":
        return {"weight_decay": config.weight_decay}
    return {"momentum": config.momentum, "weight_decay": config.weight_decay}
