"""The weight average (`--ema-decay`): ignite's EMAHandler, with a warm-up that depends only on the iteration.

With an EMA the run evaluates, checkpoints and explains the averaged weights; the optimizer trains the raw ones.
"""

from __future__ import annotations

from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn

STATE_NAME = "ema_momentum"  # engine.state attribute the EMAHandler reads its momentum from


def ema_momentum(iteration: int, decay: float) -> float:
    """The share of the new weights at `iteration` (1-based): 1 - decay, but larger early on, so the first
    iterations' random weights do not linger (the rule of TensorFlow's ExponentialMovingAverage with num_updates:
    decay_t = min(decay, (1 + t) / (10 + t))). It depends only on the iteration, so a resumed run averages exactly
    as an uninterrupted one."""
    return max(1.0 - decay, 9.0 / (10.0 + iteration))


def attach_weight_average(trainer: Engine, model: nn.Module, decay: float) -> nn.Module:
    """Keep an EMA of `model`'s weights, updated after every training step; returns the averaged model (in eval
    mode; a DDP-wrapped model is averaged as its inner module)."""
    handler = EMAHandler(model, momentum=1.0 - decay)

    def set_momentum(engine: Engine) -> None:  # registered first: runs before the handler's update
        setattr(engine.state, STATE_NAME, ema_momentum(engine.state.iteration, decay))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, set_momentum)
    handler.attach(trainer, name=STATE_NAME, warn_if_exists=False)
    return handler.ema_model
