"""The run's log lines where a notebook or a script shows them: the CLI's output, without the CLI."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOGGER = "ignite_cifar"


class _LineHandler(logging.StreamHandler):
    """The handler show_log adds, so that calling it again replaces it instead of printing every line twice."""


def show_log(stream: TextIO | None = None) -> None:
    """Print the run's log lines (the run folder, one line per epoch, the test accuracy, the faithfulness verdict,
    warnings) to `stream`, stdout by default, as the CLI prints them. Call it once, before `train`."""
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _LineHandler)]:
        logger.removeHandler(handler)
    handler = _LineHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a root handler (Colab sets one) would print each line a second time
