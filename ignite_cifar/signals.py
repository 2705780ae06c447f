"""Ctrl-C and SIGTERM, the two stop signals: who answers them. A training process turns them into a stop at a safe
point (training/stopping.py); DataLoader workers and a process whose stop is done leave them alone."""

from __future__ import annotations

import signal
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def set_stop_signal_handlers(handler: Any) -> dict[int, Any]:
    """Install `handler` (a function, SIG_IGN or SIG_DFL) for both stop signals; returns the previous handlers to
    give to `restore_stop_signal_handlers`. Off the main thread signals cannot be set: nothing changes there."""
    previous: dict[int, Any] = {}
    for signum in STOP_SIGNALS:
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread (e.g. inside a thread pool): leave signals alone
            pass
    return previous


def restore_stop_signal_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """For DataLoader workers (their `worker_init_fn`) and for a process whose stop is done: the signals are left
    to the process that owns them, which stops at a safe point and shuts its workers down; a worker that died of
    the signal first would make that last iteration fail."""
    set_stop_signal_handlers(signal.SIG_IGN)
