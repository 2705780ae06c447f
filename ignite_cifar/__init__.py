"""ignite-cifar: a LayerNorm ResNet18 trained on CIFAR-10 with PyTorch Ignite, with GradCAM on its mistakes.

The public API: `Config` (every setting of a run; `make_config` builds a validated one), `train(config)`,
`build_model(...)` (the CIFAR ResNet) and `GradCAM` (hand-written, hook-based)::

    from ignite_cifar import GradCAM, build_model, make_config, train
"""

import os

# albumentations asks PyPI for its newest version whenever it is imported: a network call of up to 2 s in every
# process a run starts (the spawned data-parallel ones too) and a warning where there is no network. Set before
# anything here imports albumentations; NO_ALBUMENTATIONS_UPDATE=0 in the environment keeps the check.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from ignite_cifar.config import Config, make_config  # noqa: E402  (after the line above, on purpose)

__all__ = ["Config", "GradCAM", "build_model", "make_config", "train"]
__version__ = "0.1.0"

# these import torch: on first use
_LAZY = {"GradCAM": "explain.gradcam", "build_model": "model.resnet", "train": "training.launch"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
