"""Ctrl-C and SIGTERM: stop training at a safe point, never halfway through a step or an epoch's end."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from typing import Any, Iterator

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from ignite_cifar.signals import restore_stop_signal_handlers, set_stop_signal_handlers

log = logging.getLogger("ignite_cifar")

@contextlib.contextmanager
def launcher_signals() -> Iterator[None]:
    """While spawned processes train, the launcher leaves Ctrl-C to them (a terminal sends it to all of them)
    and passes a SIGTERM meant for it on, so they stop at a safe point and it reports how they stopped."""
    def forward(signum, frame):
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):  # it may have exited meanwhile
                os.kill(child.pid, signum)

    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        restore_stop_signal_handlers(previous)


class StopRequests:
    """Ctrl-C and SIGTERM stop training at the next safe point, never halfway through a step or an epoch's end.

    Safe points: after a whole iteration (step, metrics and logs done), and after an epoch's evaluation, history
    record, plateau step and checkpoint. A signal only raises a flag; the handler at the next safe point turns it
    into KeyboardInterrupt, so the checkpoint written then is consistent. A second signal (a second or more
    later) stops at once. Once the last epoch is saved (while the explanations are written) a signal stops at once
    too. With several processes the flag is all-reduced (every `every` iterations and at each epoch's end) so all
    ranks stop at the same point.
    """

    ECHO_SECONDS = 1.0  # a second signal sooner than this after the first is taken as the same request

    def __init__(self, world_size: int = 1, every: int = 10):
        self.world_size, self.every = world_size, max(1, every)
        self.signum: int | None = None
        self.forced = False        # a second signal stopped us wherever we were
        self.training_done = False  # the last epoch is saved; what runs now is the completion handler
        self.stopping = False       # the stop is under way (checkpoint, shutdown): further signals are ignored
        self._previous: dict[int, Any] = {}
        self._first_at = 0.0

    # -- signals
    def install(self) -> StopRequests:
        self._previous = set_stop_signal_handlers(self._on_signal)
        return self

    def restore(self) -> None:
        restore_stop_signal_handlers(self._previous)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.stopping:
            return
        if self.training_done:
            self.signum = self.signum or signum
            self._stop()
        if self.signum is not None:
            if time.monotonic() - self._first_at < self.ECHO_SECONDS:
                return  # the same stop reaching us twice (a process group's signal and a launcher's relay)
            self.forced = True
            self._stop()
        self.signum, self._first_at = signum, time.monotonic()
        log.info("stopping after the current %s (send the signal again to stop at once)",
                 "iteration or epoch end" if self.world_size == 1 else "safe point")

    def _stop(self) -> None:
        self.stopping = True
        raise KeyboardInterrupt

    @property
    def sigterm(self) -> bool:
        return self.signum == signal.SIGTERM

    # -- safe points
    def _requested(self) -> bool:
        if self.world_size == 1:
            return self.signum is not None
        flag = torch.tensor([1.0 if self.signum is not None else 0.0], device=idist.device())
        return bool(idist.all_reduce(flag, op="MAX").item() > 0)

    def attach(self, trainer: Engine) -> None:
        """Attach last, so the checks run after every other handler of the same event."""

        def after_iteration(engine: Engine) -> None:
            i, length = engine.state.iteration, engine.state.epoch_length or 0
            if length and i % length == 0:
                return  # the epoch's end comes next: stop after it, not before its evaluation and checkpoint
            if (self.world_size == 1 or i % self.every == 0) and self._requested():
                self._stop()

        def after_epoch(engine: Engine) -> None:
            requested = self._requested()
            if engine.state.epoch >= (engine.state.max_epochs or 0):
                self.training_done = True
            if requested:
                self._stop()

        trainer.add_event_handler(Events.ITERATION_COMPLETED, after_iteration)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, after_epoch)
