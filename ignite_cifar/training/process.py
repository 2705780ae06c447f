"""One process's set-up, shared by training (launch.py, trainer.py) and the LR range test (lr_find.py): the checks
before it starts, what it derives from its data, its device and threads, and its model and optimizer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ignite.distributed as idist
import torch
from ignite.utils import manual_seed, setup_logger
from torch import nn

from ignite_cifar.config import Config
from ignite_cifar.data.augment import build_test_transform, build_train_transform, describe
from ignite_cifar.data.datasets import DataSplits, channel_stats
from ignite_cifar.data.loaders import resolve_torch_threads
from ignite_cifar.errors import ConfigError
from ignite_cifar.explain.gradcam import UnknownLayerError, resolve_layer
from ignite_cifar.explain.settings import LabelledImages
from ignite_cifar.model.resnet import configured_model
from ignite_cifar.training.captured_step import captures_step, optimizer_step
from ignite_cifar.training.engines import Precision
from ignite_cifar.training.environment import library_versions, machine
from ignite_cifar.training.optimizer import build_optimizer
from ignite_cifar.training.resume import ResumePlan

log = logging.getLogger("ignite_cifar")


@dataclass
class LaunchPlan:
    """What the launcher checked and resolved before any process starts training."""

    config: Config
    data: DataSplits
    run_dir: Path
    derived: dict[str, Any]  # config.yaml's `derived` section
    resume: ResumePlan | None = None
    outcome_file: str | None = None  # spawned processes write how they stopped here, for the launcher

    def test_images(self) -> LabelledImages:
        return LabelledImages(self.data.test, self.data.classes, self.derived["mean"], self.derived["std"])


@dataclass
class Network:
    model: nn.Module        # what the engines run: the model, DDP-wrapped with several processes
    base_model: nn.Module   # the plain model inside (saved, explained, checksummed)
    train_model: nn.Module  # what the training step calls: `model`, compiled with --compile
    optimizer: torch.optim.Optimizer
    optimizer_step: Callable[[], None]  # the optimizer's step, compiled with it under --compile-mode reduce-overhead
    captured: bool = False  # whether the step is compiled whole (captured_step.py): the lrs must then be tensors


def check_device(config: Config) -> None:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA device is available; use --device cpu or auto")
    if config.backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("backend: nccl needs CUDA GPUs; use --backend gloo on CPU")


def check_layer(config: Config) -> None:
    """The GradCAM layer exists in the configured architecture (checked on a narrow copy, before training)."""
    narrow = configured_model(config, 10, width=min(config.width, 0.125))
    try:
        resolve_layer(narrow, config.gradcam_layer)
    except UnknownLayerError as exc:
        raise ConfigError(f"gradcam_layer: {exc}") from None


def derived_settings(config: Config, data: DataSplits) -> dict[str, Any]:
    """What the run computes from its data and setting: config.yaml's `derived` section."""
    mean, std = channel_stats(data.train.images)
    return {
        "mean": mean, "std": std, "classes": list(data.classes),
        "train_images": len(data.train), "val_images": len(data.val or data.test), "test_images": len(data.test),
        "val_source": "held-out train" if data.val is not None else "test split",
        "skipped_images": data.skipped_images,
        "train_transform": describe(build_train_transform(config, mean, std)),
        "test_transform": describe(build_test_transform(mean, std)),
        "versions": library_versions(), "machine": machine(),
    }


def quiet_library_loggers() -> None:
    """ignite's launcher and auto_* helpers log every call at INFO, and its engine logs "Engine run is terminating
    due to exception" for every stop: our own epoch lines and one-line errors say what matters."""
    for name in ("auto_dataloader", "auto_model", "auto_optim"):
        setup_logger(f"ignite.distributed.auto.{name}", level=logging.WARNING)
    setup_logger("ignite.distributed.launcher.Parallel", level=logging.WARNING)
    logging.getLogger("ignite.engine.engine.Engine").setLevel(logging.CRITICAL)


def setup_process(config: Config) -> torch.device:
    """Seeds, threads and logging of this process; returns its device."""
    device = torch.device("cpu") if config.device == "cpu" else idist.device()
    threads = resolve_torch_threads(config, "cpu", idist.get_nproc_per_node()) if device.type == "cpu" else None
    if threads is not None:  # the cores this process has, less its data workers'
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 32x32 inputs: let cuDNN pick its fastest convolutions
    manual_seed(config.seed)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    quiet_library_loggers()
    log.setLevel(logging.INFO if idist.get_rank() == 0 else logging.WARNING)
    return device


def shared_run_dir(plan: LaunchPlan) -> Path:
    """Every process uses rank 0's run folder (under torchrun each process planned its own name)."""
    run_dir = plan.run_dir
    if idist.get_world_size() > 1:
        run_dir = Path(idist.broadcast(str(run_dir), src=0, safe_mode=True))
    if idist.get_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def resolve_precision(config: Config, device: torch.device) -> Precision:
    return Precision.resolve(config.amp, config.channels_last, device)


def build_model_and_optimizer(config: Config, num_classes: int, device: torch.device,
                              precision: Precision) -> Network:
    base_model = configured_model(config, num_classes)
    if precision.channels_last:
        base_model = base_model.to(memory_format=torch.channels_last)
    model = idist.auto_model(base_model)
    base_model = model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model
    # Only the training step is compiled. Evaluation stays eager: compiling it would add graphs (eval mode, its
    # own batch sizes) whose compile time outweighs what they save on 10,000 images an epoch.
    # dynamic=False: the epoch's last, smaller batch gets its own static graph instead of turning every step
    # into a dynamic-shape one.
    train_model = torch.compile(model, mode=config.compile_mode, dynamic=False) if config.compile else model
    optimizer = idist.auto_optim(build_optimizer(config, model))
    captured = captures_step(config.compile, config.compile_mode)
    return Network(model, base_model, train_model, optimizer, optimizer_step(optimizer, captured), captured)


def parameter_checksum(model: nn.Module) -> torch.Tensor:
    """(sum, sum of squares, weighted sum) of all parameters in float64: equal replicas give equal triples."""
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
    return torch.stack([flat.sum(), (flat * flat).sum(), (flat * weights).sum()])
