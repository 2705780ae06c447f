"""The optimizer and the training loss, built from the config (the model is built by model/resnet.configured_model)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ignite_cifar.config import Config

NO_DECAY = "no_decay"  # the name of the param group of norm weights and biases with --no-decay-norm-bias


def parameter_groups(model: nn.Module, config: Config) -> list[dict[str, Any]]:
    """One group of all parameters; with --no-decay-norm-bias, the 1-dimensional ones (norm weights, all biases) in
    a second group, named NO_DECAY, whose weight decay is 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.decay_norm_bias:
        return [{"params": params, "name": "all"}]
    return [{"params": [p for p in params if p.ndim > 1], "name": "weights"},
            {"params": [p for p in params if p.ndim <= 1], "name": NO_DECAY, "weight_decay": 0.0}]


def build_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (Nesterov's with --nesterov), Adam with weight decay as its L2 term, or AdamW with decoupled
    weight decay, at the configured lr, over parameter_groups()."""
    groups = parameter_groups(model, config)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                           weight_decay=config.weight_decay)


def training_criterion(config: Config) -> nn.Module:
    """The training loss: cross-entropy with the configured label smoothing. Evaluation uses plain cross-entropy,
    so val losses (which the plateau scheduler steps on) stay comparable between recipes."""
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def optimizer_settings(config: Config, group: dict[str, Any]) -> dict[str, Any]:
    """The settings of one param group that flags given with --resume replace (Adam and AdamW have no momentum;
    the NO_DECAY group keeps its weight decay of 0)."""
    settings: dict[str, Any] = {} if group.get("name") == NO_DECAY else {"weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        settings.update(momentum=config.momentum, nesterov=config.nesterov)
    return settings
