"""The whole run's time, measured: after a short warm-up, the training step's pace times the iterations left, plus
each epoch's evaluation times the evaluations left; then, from the first epoch on, the epochs' measured times.

The first iterations are slow (allocator, compilation, data workers starting), so they are left out. Until the first
evaluation has run, its time is inferred from the training step: a forward pass is about a third of a training step's
work (the backward pass costs about twice the forward). The clock is a parameter, so tests can run on a fake one.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from ignite.engine import Engine, Events
from tqdm.autonotebook import tqdm  # the progress bar's (ignite's ProgressBar uses it)

from ignite_cifar.training.advice import Machine, advice_text

log = logging.getLogger("ignite_cifar")

FORWARD_SHARE = 1 / 3  # of a training step's work: forward 1, backward about 2
EVAL_SECONDS_KEYS = ("val_seconds", "raw_val_seconds")  # an epoch record's evaluation times (handlers.evaluate_all)
RUN_LEFT = "run_left"  # the trainer state's attribute the progress bar shows


@dataclass(frozen=True)
class Window:
    """Which iterations the first estimate is measured on: after `warmup_iterations`, at least `min_iterations`
    lasting at least `min_seconds` in all."""

    warmup_iterations: int = 2
    min_iterations: int = 3
    min_seconds: float = 10.0


@dataclass(frozen=True)
class Pace:
    """Seconds per training iteration (of one process) and per epoch's evaluation (every evaluator)."""

    train_per_iteration: float
    eval_per_epoch: float
    eval_measured: bool  # False: inferred from the training step

    def seconds_left(self, iterations_left: float, evaluations_left: float) -> float:
        return self.train_per_iteration * iterations_left + self.eval_per_epoch * evaluations_left


def inferred_eval_seconds(train_per_iteration: float, batch_size: int, eval_images: int, evaluators: int) -> float:
    """One epoch's evaluation time from the training step's: `evaluators` forward passes over `eval_images`, each
    image costing FORWARD_SHARE of a trained one (`batch_size` trained per iteration; both numbers global, or both
    per process)."""
    return evaluators * eval_images * train_per_iteration / batch_size * FORWARD_SHARE


@dataclass(frozen=True)
class Estimate:
    """The whole run's time from where it starts (a resumed run: from its checkpoint), and what it rests on."""

    pace: Pace
    iterations_left: int  # of one process
    evaluations_left: int  # epochs whose evaluation is still to run
    epoch_length: int  # iterations of one process per epoch
    images_per_s: float  # trained, all processes together
    basis: str  # what the training pace was measured on
    machine: Machine

    @property
    def epochs_left(self) -> float:
        return self.iterations_left / self.epoch_length

    @property
    def epoch_seconds(self) -> float:
        return self.pace.seconds_left(self.epoch_length, 1)

    @property
    def seconds(self) -> float:
        return self.pace.seconds_left(self.iterations_left, self.evaluations_left)

    def line(self) -> str:
        """The estimate in one line, with what would be faster when the run is long."""
        p = self.pace
        evaluation = "measured" if p.eval_measured else "inferred from the step, a forward pass as 1/3 of it"
        text = (f"estimate: the whole run takes about {duration(self.seconds)} here: {epochs(self.epochs_left)} "
                f"x {duration(self.epoch_seconds)} (training {duration(p.train_per_iteration * self.epoch_length)} "
                f"at {self.images_per_s:.1f} images/s, {self.machine.describe()}; evaluation "
                f"{duration(p.eval_per_epoch)}, {evaluation}); the step measured on {self.basis}")
        advice = advice_text(self.machine, self.seconds)
        return f"{text}. {advice[0].upper()}{advice[1:]}" if advice else text


def whole_run(pace: Pace, max_epochs: int, epoch_length: int, start_iteration: int, batch_size: int, basis: str,
              machine: Machine) -> Estimate:
    """The estimate for a run of `max_epochs` that starts at `start_iteration` (0, or a resumed checkpoint's: a
    checkpoint written mid-epoch still has that epoch's evaluation to run)."""
    iterations_left = max(0, max_epochs * epoch_length - start_iteration)
    evaluations_left = max(0, max_epochs - start_iteration // epoch_length)
    return Estimate(pace, iterations_left, evaluations_left, epoch_length, batch_size / pace.train_per_iteration,
                    basis, machine)


def device_sync(device: torch.device) -> Callable[[], None]:
    """What waits for `device`'s queued work: torch.cuda.synchronize on a GPU, nothing on a CPU."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def log_line(message: str) -> None:
    """Log a line; in a terminal, above the progress bar (a plain log line would be glued to the bar's end
    mid-epoch)."""
    if sys.stderr.isatty():
        tqdm.write(message, file=sys.stderr)
    else:
        log.info(message)


def duration(seconds: float) -> str:
    """A time as a person reads a wait: '40 s', '4.5 min', '17 min', '2.3 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 10 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def epochs(count: float) -> str:
    """'3 epochs', '1 epoch', '1.50 epochs' (a resumed run's, stopped mid-epoch)."""
    return f"{count:g} epoch{'' if count == 1 else 's'}" if count == int(count) else f"{count:.2f} epochs"


class RunEstimator:
    """Estimates the run's time while it trains and says so: one line after the warm-up (with advice where the run
    is long), the time left in the progress bar's postfix (trainer.state.run_left) and in each epoch's line
    (`epoch_note`), and at the end the time taken beside the first estimate.

    Args:
        batch_size: the global training batch.
        eval_images: images in the val split.
        evaluators: how many evaluations run each epoch (2 with a weight average: it and the raw weights).
        machine: where the run trains (for the advice and the line).
        window: which iterations the first estimate rests on.
        clock: seconds, monotonic (tests pass a fake one).
        report: where the lines go (None: nowhere, e.g. for `train --estimate`, which prints its own).
        sync: waits for the device's queued work (torch.cuda.synchronize on a GPU), called where the window starts
            and ends: a GPU runs behind the host, whose clock would otherwise time the queueing.
    """

    def __init__(self, batch_size: int, eval_images: int, evaluators: int, machine: Machine,
                 window: Window = Window(), clock: Callable[[], float] = time.monotonic,
                 report: Callable[[str], None] | None = log_line, sync: Callable[[], None] = lambda: None):
        self.batch_size, self.eval_images, self.evaluators = batch_size, eval_images, evaluators
        self.machine, self.window, self.clock, self.report, self.sync = machine, window, clock, report, sync
        self.first: Estimate | None = None  # the estimate made after the warm-up
        self.pace: Pace | None = None  # the latest pace: the first, then the epochs' measured ones
        self._engine: Engine | None = None
        self._began = self._last_epoch_end = 0.0
        self._trained = False  # whether the trainer ran (STARTED fired)
        self._start_iteration = 0
        self._mark: tuple[float, int] | None = None  # (time, iteration) where the warm-up ended
        self._periods: list[tuple[float, float]] = []  # (seconds, of which evaluation) of each epoch of this start

    def attach(self, trainer: Engine) -> "RunEstimator":
        self._engine = trainer
        trainer.add_event_handler(Events.STARTED, self._started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        trainer.add_event_handler(Events.COMPLETED, self._completed)
        return self

    @property
    def began(self) -> float:
        """When the trainer started (the estimator's clock)."""
        return self._began

    # ------------------------------------------------------------ events
    def _started(self, engine: Engine) -> None:
        self._began = self._last_epoch_end = self.clock()
        self._trained = True
        self._start_iteration = engine.state.iteration  # a resumed run starts past 0
        self._mark = (self._began, engine.state.iteration) if self.window.warmup_iterations == 0 else None
        setattr(engine.state, RUN_LEFT, "measuring")

    def _iteration(self, engine: Engine) -> None:
        now, iteration = self.clock(), engine.state.iteration
        if iteration - self._start_iteration == self.window.warmup_iterations:
            self.sync()
            self._mark = (self.clock(), iteration)
        elif self.first is None and self._mark is not None:
            steps, seconds = iteration - self._mark[1], now - self._mark[0]
            if steps >= self.window.min_iterations and seconds >= self.window.min_seconds:
                self.sync()
                per = (self.clock() - self._mark[0]) / steps
                self._first_estimate(engine, Pace(per, self._inferred_eval(per), False),
                                     f"{steps} steps after {self.window.warmup_iterations} warm-up steps")
        if self.pace is not None:
            # the iterations left, and the evaluations left including this epoch's
            left = self.pace.seconds_left(self._iterations_left(engine), engine.state.max_epochs - engine.state.epoch
                                          + 1)
            setattr(engine.state, RUN_LEFT, duration(left))

    def epoch_note(self, record: dict[str, Any]) -> str:
        """After an epoch's evaluation: update the pace from the epochs measured so far; returns the note for the
        epoch's line (`| about 1.2 h left`)."""
        engine = self._engine
        now = self.clock()
        eval_seconds = sum(float(record.get(key) or 0.0) for key in EVAL_SECONDS_KEYS)
        self._periods.append((now - self._last_epoch_end, eval_seconds))
        self._last_epoch_end = now
        length = engine.state.epoch_length or 1
        if len(self._periods) == 1:  # the first epoch of this start: its iterations hold the warm-up
            period = self._periods[0][0]
            per = (self.first.pace.train_per_iteration if self.first is not None
                   else max(0.0, period - eval_seconds) / max(1, engine.state.iteration - self._start_iteration))
            self.pace = Pace(per, eval_seconds, True)
            if self.first is None:  # an epoch shorter than the warm-up window: the estimate rests on it
                self._first_estimate(engine, self.pace, "the first epoch, warm-up included")
        else:  # later epochs: their whole time, checkpoints, figures and evaluation included
            steady = self._periods[1:]
            period = statistics.median(p for p, _ in steady)
            evaluation = statistics.median(e for _, e in steady)
            self.pace = Pace(max(0.0, period - evaluation) / length, evaluation, True)
        left = self.pace.seconds_left(self._iterations_left(engine), engine.state.max_epochs - engine.state.epoch)
        setattr(engine.state, RUN_LEFT, duration(left))
        return f"  | about {duration(left)} left" if engine.state.epoch < engine.state.max_epochs else ""

    def _completed(self, engine: Engine) -> None:
        if not self._trained:  # a resumed run that only writes its completion step trained nothing
            return
        took = self.clock() - self._began
        trained = epochs((engine.state.iteration - self._start_iteration) / (engine.state.epoch_length or 1))
        if self.report is not None:
            self.report(f"trained {trained} in {duration(took)}"
                        + (f"; first estimate: {duration(self.first.seconds)}" if self.first else ""))

    # ------------------------------------------------------------ arithmetic
    def _first_estimate(self, engine: Engine, pace: Pace, basis: str) -> None:
        self.pace = pace
        self.first = whole_run(pace, engine.state.max_epochs, engine.state.epoch_length or 1, self._start_iteration,
                               self.batch_size, basis, self.machine)
        if self.report is not None:
            self.report(self.first.line())

    def _inferred_eval(self, train_per_iteration: float) -> float:
        return inferred_eval_seconds(train_per_iteration, self.batch_size, self.eval_images, self.evaluators)

    @staticmethod
    def _iterations_left(engine: Engine) -> int:
        return max(0, engine.state.max_epochs * (engine.state.epoch_length or 1) - engine.state.iteration)
