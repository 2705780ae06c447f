"""The lr schedules: ReduceLROnPlateau stepped by an event handler, and the optional linear warmup before it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from ignite.engine import Engine, Events
from ignite.handlers import PiecewiseLinear
from torch.optim.lr_scheduler import ReduceLROnPlateau

log = logging.getLogger("ignite_cifar")


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


HYPERPARAMETERS = ("factor", "patience", "min_lrs", "default_min_lr", "threshold", "threshold_mode", "cooldown", "eps")


@dataclass(frozen=True)
class Plateau:
    """ReduceLROnPlateau's settings: the `--plateau-*` flags and `--min-lr` (the defaults are torch's and the
    assignment's: val loss, relative threshold 1e-4, no cooldown)."""

    factor: float = 0.1
    patience: int = 2
    min_lr: float = 1e-5
    metric: str = "loss"
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0

    @classmethod
    def of(cls, config: Any) -> "Plateau":
        return cls(config.plateau_factor, config.plateau_patience, config.min_lr, config.plateau_metric,
                   config.plateau_threshold, config.plateau_threshold_mode, config.plateau_cooldown)

    @property
    def mode(self) -> str:
        return "max" if self.metric == "accuracy" else "min"


class PlateauScheduler:
    """torch's ReduceLROnPlateau stepped on a val metric each time the evaluator it is attached to completes.

    Written here rather than ignite's ReduceLROnPlateauScheduler because that one's state_dict carries a
    bound method, which cannot be saved as plain data (see files.load_checkpoint).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, plateau: Plateau):
        self.optimizer = optimizer
        self.metric_name = plateau.metric
        self.scheduler = ReduceLROnPlateau(optimizer, mode=plateau.mode, factor=plateau.factor,
                                           patience=plateau.patience, min_lr=plateau.min_lr,
                                           threshold=plateau.threshold, threshold_mode=plateau.threshold_mode,
                                           cooldown=plateau.cooldown)
        self.paused: Callable[[], bool] = lambda: False  # a warmup holds it still until it is over

    def __call__(self, evaluator: Engine) -> None:
        if self.paused():
            return
        before = current_lr(self.optimizer)
        self.scheduler.step(float(evaluator.state.metrics[self.metric_name]))
        after = current_lr(self.optimizer)
        if after < before:
            log.info("val %s did not improve for %d evaluations: lr %.3g -> %.3g",
                     self.metric_name, self.scheduler.patience + 1, before, after)

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The counters (best value, evaluations without improvement, ...) come from the checkpoint; factor,
        patience, min lr, threshold and cooldown stay as configured, so flags given with --resume take effect. A
        resumed run that watches another metric now (--plateau-metric) starts counting afresh."""
        configured = {k: getattr(self.scheduler, k) for k in HYPERPARAMETERS if hasattr(self.scheduler, k)}
        mode = self.scheduler.mode
        self.scheduler.load_state_dict(state)
        for key, value in configured.items():
            setattr(self.scheduler, key, value)
        self.scheduler.mode = mode
        self.scheduler._init_is_better(mode=mode, threshold=self.scheduler.threshold,
                                       threshold_mode=self.scheduler.threshold_mode)
        if state.get("mode", mode) != mode:
            self.scheduler._reset()
            log.info("the plateau scheduler now watches val %s: its counters start afresh", self.metric_name)


def attach_plateau_scheduler(evaluator: Engine, optimizer: torch.optim.Optimizer, plateau: Plateau) -> PlateauScheduler:
    scheduler = PlateauScheduler(optimizer, plateau)
    evaluator.add_event_handler(Events.COMPLETED, scheduler)
    return scheduler


WARMUP_START = 0.1  # the warmup starts at this fraction of the lr


def attach_warmup(trainer: Engine, optimizer: torch.optim.Optimizer, lr: float, epochs: int, epoch_length: int,
                  plateau: PlateauScheduler) -> PiecewiseLinear:
    """Linear warmup of the lr, per iteration, from lr/10 to lr over `epochs` epochs (ignite's PiecewiseLinear;
    save it with the checkpoint so a resumed run continues it). The plateau scheduler does not step until the
    warmup is over, and after it only the plateau scheduler changes the lr."""
    steps = epochs * epoch_length
    start = lr * WARMUP_START
    for group in optimizer.param_groups:  # the first iteration's lr; a resumed run's checkpoint replaces it
        group["lr"] = start
    # Iteration i runs at start + (i - 1) * step. The scheduler sets the next iteration's lr when one completes
    # (so an epoch's recorded lr, read when it starts, is its first iteration's), and steps + 1 runs at lr.
    step = (lr - start) / steps
    warmup = PiecewiseLinear(optimizer, "lr", milestones_values=[(0, start + step), (max(steps - 1, 1), lr)])
    trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=lambda _, i: i <= steps), warmup)
    plateau.paused = lambda: trainer.state.epoch <= epochs
    return warmup
