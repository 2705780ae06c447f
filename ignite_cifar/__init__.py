"""ignite-cifar: a LayerNorm ResNet18 trained on CIFAR-10 with PyTorch Ignite, with GradCAM on its mistakes.

The public API:

- `Config`, every setting of a run; `make_config(*mappings)` builds a validated one from mappings such as
  `read_yaml("assignment")` (a shipped config or a YAML file) and a dict of fields;
- `train(config)` returns a `RunResult`: the run folder, its history, test evaluation, mistakes and figures, shown
  inline in Jupyter; `open_run(path)` gives the same for a run on disk, `resume(path, **changes)` continues one;
- `show_log()` prints the run's log lines in a notebook; `device_and_precision(config)` says where a run will train;
- `build_model(...)`, the CIFAR ResNet, and `GradCAM`, hand-written and hook-based::

    from ignite_cifar import GradCAM, build_model, make_config, open_run, read_yaml, resume, show_log, train
"""

import os

# albumentations asks PyPI for its newest version whenever it is imported: a network call of up to 2 s in every
# process a run starts (the spawned data-parallel ones too) and a warning where there is no network. Set before
# anything here imports albumentations; NO_ALBUMENTATIONS_UPDATE=0 in the environment keeps the check.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from ignite_cifar.config import Config, make_config, read_yaml  # noqa: E402  (after the line above, on purpose)
from ignite_cifar.logs import show_log  # noqa: E402

__all__ = ["Config", "GradCAM", "RunResult", "build_model", "device_and_precision", "make_config", "open_run",
           "read_yaml", "resume", "show_log", "train"]
__version__ = "0.1.0"

# these import torch: on first use
_LAZY = {"GradCAM": "explain.gradcam", "build_model": "model.resnet", "train": "training.launch",
         "RunResult": "explain.run_result", "open_run": "explain.run_result", "resume": "training.resume_run",
         "device_and_precision": "training.device_report"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
