"""A finished (or stopped) run read back from its folder: its model, and `explain` / `evaluate` on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ignite_cifar import files
from ignite_cifar.config import Config, read_yaml, saved_run_config
from ignite_cifar.data.datasets import load_data
from ignite_cifar.errors import CheckpointError, UserError
from ignite_cifar.explain.explanations import evaluate_split, evaluation_summary, write_explanations
from ignite_cifar.explain.gradcam import resolve_layer
from ignite_cifar.explain.probe import probe_indices
from ignite_cifar.explain.settings import Destination, ExplainSettings, LabelledImages
from ignite_cifar.model.resnet import configured_model


def checkpoint_of(run_dir: Path, which: str) -> Path:
    """The run's last checkpoint (`final`) or its best-val-accuracy model (`best`)."""
    prefix = files.BEST_PREFIX if which == "best" else files.LAST_PREFIX
    ckpt = files.find_checkpoint(run_dir, prefix)
    if ckpt is None:
        raise CheckpointError(f"run: {run_dir} has no {files.CHECKPOINT_DIR}/{prefix}_*.pt")
    return ckpt


def load_weights(model: nn.Module, ckpt: Path) -> nn.Module:
    """`model` with the weights of checkpoint `ckpt` (read as data, checked against the architecture)."""
    files.load_model_weights(model, files.model_state(files.load_checkpoint(ckpt), ckpt), ckpt)
    return model


def load_run(run: str | None = None, checkpoint: str | None = None, which: str = "final"):
    """(config, derived, model on CPU, checkpoint path, run folder) of a saved run, from its folder or a
    checkpoint in it."""
    if checkpoint:
        ckpt = Path(checkpoint)
        run_dir = files.run_dir_of(ckpt)
    else:
        run_dir = Path(run or "")
        if not run_dir.is_dir():
            raise UserError(f"run: {run_dir} is not a run folder")
        ckpt = checkpoint_of(run_dir, which)
    state = files.load_checkpoint(ckpt)  # a file that is not a (safe) checkpoint is refused first
    files.check_run_folder(run_dir, "run")
    raw = read_yaml(str(run_dir / files.CONFIG_FILE))
    derived = raw.pop(files.DERIVED, None) or {}
    if not all(k in derived for k in ("classes", "mean", "std")):
        raise UserError(f"run: {run_dir / files.CONFIG_FILE} lacks the derived classes/mean/std a finished run "
                        "writes")
    config: Config = saved_run_config(raw)
    model = configured_model(config, len(derived["classes"]))
    files.load_model_weights(model, files.model_state(state, ckpt), ckpt)
    return config, derived, model, ckpt, run_dir


def _local_device(device: str) -> torch.device:
    return torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def explain_saved_run(run: str | None, checkpoint: str | None, settings: ExplainSettings, which: str = "final",
                      device: str = "auto") -> dict[str, Any]:
    """Regenerate a run's explanations (misclassified/gradcam/confusion/explanations) without training."""
    config, derived, model, ckpt, run_dir = load_run(run, checkpoint, which)
    resolve_layer(model, settings.gradcam_layer)  # an unknown name is a UserError that lists the valid ones
    dev = _local_device(device)
    data = load_data(config)
    images = LabelledImages(data.test, derived["classes"], derived["mean"], derived["std"])
    return write_explanations(model.to(dev), images, settings, Destination(run_dir), dev, source=ckpt.name,
                              probe_index=probe_indices(data.test.labels, config.probe_size, config.seed))


def explain_own_images(run: str | None, checkpoint: str | None, images: list[str], settings: ExplainSettings,
                       which: str = "final", device: str = "auto", output: str | None = None):
    """Top-3 classes, map and faithfulness of a saved run's model for the user's own image files; the files are
    read (and refused, one line each) before the model is loaded. Returns (entries, folder written to)."""
    from ignite_cifar.explain.own_images import explain_images, read_images

    read_images(images)
    _, derived, model, ckpt, run_dir = load_run(run, checkpoint, which)
    layer, method = settings.gradcam_layer, settings.gradcam_method
    resolve_layer(model, layer)
    dev = _local_device(device)
    out_dir = Path(output) if output else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    return explain_images(model.to(dev), images, derived, out_dir, layer, method, dev), out_dir


def evaluate_saved_run(run: str | None, checkpoint: str | None, which: str = "final", device: str = "auto"):
    """Test loss, accuracy and per-class accuracy of a saved run's model."""
    config, derived, model, ckpt, _ = load_run(run, checkpoint, which)
    dev = _local_device(device)
    data = load_data(config)
    summary = evaluation_summary(evaluate_split(model.to(dev), data.test, derived["mean"], derived["std"], dev),
                                 derived["classes"])
    summary["checkpoint"] = str(ckpt)
    return summary
