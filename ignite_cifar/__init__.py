"""ignite-cifar: a LayerNorm ResNet18 trained on CIFAR-10 with PyTorch Ignite, with GradCAM on its mistakes.

The public API: `Config` (every setting of a run; `make_config` builds a validated one), `train(config)`,
`build_model(...)` (the CIFAR ResNet) and `GradCAM` (hand-written, hook-based)::

    from ignite_cifar import GradCAM, build_model, make_config, train
"""

from .config import Config, make_config
from .gradcam import GradCAM
from .launch import train
from .models import build_model

__all__ = ["Config", "GradCAM", "build_model", "make_config", "train"]
__version__ = "0.1.0"
