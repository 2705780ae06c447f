"""`device_and_precision(config)`: where and in what precision `train(config)` will run here, said before it does."""

from __future__ import annotations

import torch

from ignite_cifar.config import Config
from ignite_cifar.training.environment import cpu_name
from ignite_cifar.training.process import resolve_precision


def device_and_precision(config: Config) -> str:
    """The device train(config) picks on this machine (one process) and the precision `--amp` resolves to there,
    by the rule training uses (engines.Precision.resolve), in one line."""
    cuda = config.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    precision = resolve_precision(config, device)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({cpu_name()})"
    mixed = "" if precision.dtype is None else " autocast" + (" with a gradient scaler" if precision.scaler else "")
    return f"{name}: {precision.describe()}{mixed} (--amp {config.amp})"
