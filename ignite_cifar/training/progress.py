"""The training progress bar: ignite's ProgressBar where someone watches, in a terminal or a Jupyter kernel, and none
in a log file, where a bar redrawn 400 times an epoch is noise."""

from __future__ import annotations

import sys
import warnings

from ignite.contrib.handlers import ProgressBar
from ignite.engine import Engine
from tqdm import TqdmExperimentalWarning

from ignite_cifar.training.estimate import RUN_LEFT


def in_jupyter() -> bool:
    """Whether this process is a Jupyter kernel (Jupyter, Colab, VS Code), as tqdm.autonotebook decides it: there
    the bar is an ipywidgets widget, or text when ipywidgets is missing."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def attach_progress_bar(trainer: Engine) -> None:
    """A bar per epoch with the running loss and the whole run's time left (estimate.py), gone when the epoch's log
    line replaces it."""
    if not (sys.stderr.isatty() or in_jupyter()):
        return
    with warnings.catch_warnings():  # tqdm.autonotebook's note that it picked the notebook bar: the bar says so
        warnings.simplefilter("ignore", TqdmExperimentalWarning)
        bar = ProgressBar(persist=False)
    bar.attach(trainer, output_transform=lambda out: {"loss": out["loss"]}, state_attributes=[RUN_LEFT])
