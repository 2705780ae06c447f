"""A run whose loss blew up stops, as one whose loss became NaN does; a run that ended at chance level says so.

The blow-up rule: the mean training loss of the epoch so far above BLOW_UP_FACTOR (10) x ln(number of classes),
23.0 for CIFAR-10's 10 classes. A fresh model's cross-entropy starts near ln(classes) (a uniform guess) and a
healthy run's only falls from there, so ten times that is a run whose weights exploded (Adam at lr 1e6: a mean
training loss of 1.3e12) even while the loss stays finite. The mean is read on the host where NonFiniteLossGuard
reads (every --log-every iterations and at each epoch's last), so a blown-up epoch is never evaluated or
checkpointed and the last checkpoint stays the last good epoch's.
"""

from __future__ import annotations

import math
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from ignite_cifar.config import Config, read_yaml
from ignite_cifar.errors import TrainingStopped
from ignite_cifar.training.handlers import NonFiniteLossGuard
from ignite_cifar.training.resume import kept_and_next

BLOW_UP_FACTOR = 10.0


class LossGuard(NonFiniteLossGuard):
    """NonFiniteLossGuard, and a stop when the epoch's mean training loss so far passes the blow-up limit.

    Each iteration adds the loss to a sum on its device (no host sync); at each read the processes add their sums
    and counts together, so that all of them stop at the same iteration: for a blow-up, and for a NaN or infinite
    loss seen by one process only (the sum carries it to the others)."""

    def __init__(self, every: int):
        super().__init__(every)
        self.blown_up: tuple[int, float, float, int] | None = None  # (iteration, mean so far, limit, classes)
        self._sum: torch.Tensor | None = None  # this epoch's training losses, summed on their device
        self._count = 0

    @property
    def stopped(self) -> bool:
        return self.iteration is not None or self.blown_up is not None

    def attach(self, trainer: Engine) -> "LossGuard":
        trainer.add_event_handler(Events.EPOCH_STARTED, self._new_epoch)
        super().attach(trainer)
        return self

    def _new_epoch(self, engine: Engine) -> None:
        self._sum, self._count = None, 0

    def _check(self, engine: Engine) -> None:
        loss = engine.state.output["loss"].detach().float()
        self._sum = loss.clone() if self._sum is None else self._sum + loss  # a clone: a captured step reuses it
        self._count += 1
        super()._check(engine)

    def _read(self, engine: Engine) -> None:
        super()._read(engine)
        total = torch.stack([self._sum, self._sum.new_tensor(float(self._count))])
        if idist.get_world_size() > 1:
            total = idist.all_reduce(total)
        mean = float(total[0]) / float(total[1])
        classes = int(engine.state.output["y_pred"].shape[-1])
        limit = BLOW_UP_FACTOR * math.log(classes)
        if self.iteration is None and not math.isfinite(mean):  # another process's loss was not finite: stop
            self.iteration = engine.state.iteration  # here too, or it waits alone at the next gradient all-reduce
            engine.terminate()
        elif self.iteration is None and mean > limit:
            self.blown_up = (engine.state.iteration, mean, limit, classes)
            engine.terminate()

    def error(self, run_dir: Path, epoch: int, config: Config) -> TrainingStopped:
        """The one line that ends a stopped run (exit code 1): what happened, where, the checkpoint kept and the
        command that carries the run on with a smaller lr (smaller_lr)."""
        if self.blown_up is None:
            what = f"the loss became NaN or infinite at iteration {self.iteration} (epoch {epoch})"
        else:
            iteration, mean, limit, classes = self.blown_up
            what = (f"the loss blew up in epoch {epoch}: mean training loss {mean:.3g} by iteration {iteration}, "
                    f"above {limit:.1f} ({BLOW_UP_FACTOR:g} x ln {classes}, where a fresh model starts)")
        return TrainingStopped(f"{what}; training stopped. Try a smaller lr. "
                               + kept_and_next(run_dir, options=f" --lr {smaller_lr(config):.3g}"), exit_code=1)


def smaller_lr(config: Config) -> float:
    """The lr to carry a blown-up run on with: a tenth of its own, and no more than the lr the shipped recipes train
    with for its optimizer (the default's for Adam and AdamW, the assignment's for SGD), so that one retry follows
    even from an lr many powers of ten too large."""
    shipped = read_yaml("assignment")["lr"] if config.optimizer == "sgd" else Config().lr
    return min(config.lr / 10, shipped)


def chance_level(accuracy: float, classes: int, images: int) -> str | None:
    """A line saying the test accuracy is chance level, when it is at most two binomial standard errors above
    1/classes on this many images (for 10 classes: 12.68% on 500 images, 10.60% on 10,000); else None."""
    chance = 1.0 / classes
    if accuracy > chance + 2 * math.sqrt(chance * (1 - chance) / max(images, 1)):
        return None
    return (f"test accuracy {100 * accuracy:.2f}% is chance level for {classes} classes: the run did not learn; "
            "try a smaller --lr (or a larger one, if its loss never fell)")
