"""What one process's run holds while it trains: the engines and the handlers a checkpoint saves (Run), and rank 0's
records (Outputs). The trainer builds them; the run's end (run_end.py) reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ignite.engine import Engine
from ignite.handlers import Checkpoint
from torch import nn

from ignite_cifar.training.divergence import LossGuard
from ignite_cifar.training.handlers import History
from ignite_cifar.training.tensorboard_views import HParamsLog


@dataclass
class Run:
    """The engines and the handlers whose state a checkpoint holds."""

    trainer: Engine
    evaluator: Engine
    evaluated_model: nn.Module  # the plain model the evaluator runs, saved as best and explained (EMA or base)
    raw_evaluator: Engine | None  # with --ema-decay: the raw weights, evaluated beside the average
    loss_guard: LossGuard  # stops training at a NaN, infinite or blown-up loss
    to_save: dict[str, Any]
    last_checkpoint: Checkpoint


@dataclass
class Outputs:
    """Rank 0's records of the run (None on the other ranks)."""

    history: History | None = None
    tb: Any = None
    hparams: HParamsLog | None = None
