"""The one place that joins a trained model with explanations: mistakes, GradCAM, confusion, figures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from . import figures, files
from .augment import denormalize, eval_dataset
from .data import Split
from .faithfulness_report import image_groups, write_faithfulness
from .gradcam import GradCAM
from .mistakes import Predictions, find_misclassified, predict

log = logging.getLogger("ignite_cifar")

EVALUATION_FILE = "evaluation.json"


def evaluate_split(model: nn.Module, split: Split, mean, std, device: torch.device,
                   batch_size: int = 256) -> Predictions:
    loader = DataLoader(eval_dataset(split.images, split.labels, mean, std), batch_size=batch_size, shuffle=False)
    return predict(model, loader, device)


def evaluation_summary(predictions: Predictions, classes: list[str]) -> dict[str, Any]:
    return {"test_loss": predictions.loss, "test_accuracy": predictions.accuracy,
            "test_images": int(len(predictions.labels)),
            "per_class_accuracy": predictions.per_class_accuracy(classes),
            "confusion": predictions.confusion(len(classes)).tolist()}


def write_explanations(model: nn.Module, test: Split, classes: list[str], mean, std, run_dir: Path,
                       device: torch.device, n: int = 20, order: str = "confident", method: str = "gradcam",
                       layer: str = "layer4", tb_writer=None, step: int = 0,
                       source: str = "final", probe_index=None) -> dict[str, Any]:
    """Mine `n` misclassified test images and explain exactly those with GradCAM; write the figures and JSON.

    Writes misclassified.json (the one list both figures are drawn from), misclassified.png, gradcam.png,
    confusion.png, evaluation.json (test loss, accuracy, per-class accuracy, confusion matrix) and how far to believe
    the maps: explanations.json and explanations.png (faithfulness_report.py).

    Args:
        model: the trained network (left in the train/eval mode it had).
        test: the test split as uint8 images and labels.
        classes: class names, index = label.
        mean, std: the training split's channel statistics, to normalize and de-normalize the images.
        run_dir: the run folder the files go to.
        device: where the evaluation and GradCAM run.
        n: how many misclassified images to show and explain.
        order: `confident` (highest predicted probability first) or `first` (dataset order).
        method: `gradcam` or `gradcam++`.
        layer: dotted name of the module GradCAM explains.
        tb_writer: a TensorBoard SummaryWriter that also gets the figures, or None.
        step: the TensorBoard step of those figures (the epoch).
        source: which model this is (`final`, a checkpoint's name), recorded in the JSON files.
        probe_index: test indices of the probe images; those classified correctly are scored in explanations.json
            next to the mistakes (None: the mistakes only).

    Returns:
        evaluation.json's summary plus `files` (what was written) and `mistakes` (the explained entries).
    """
    run_dir = Path(run_dir)
    predictions = evaluate_split(model, test, mean, std, device)
    summary = evaluation_summary(predictions, classes)
    summary["model"] = source
    mistakes = find_misclassified(predictions, n=n, order=order)
    entries = [m.as_dict(classes) for m in mistakes]
    if len(mistakes) < n:
        log.warning("only %d misclassified test images (asked for %d): showing all of them", len(mistakes), n)
    files.write_json(run_dir / "misclassified.json", {
        "order": order, "method": method, "layer": layer, "model": source, "requested": n,
        "found": len(entries), "total_misclassified": int((predictions.preds != predictions.labels).sum()),
        "mistakes": entries})
    files.write_json(run_dir / EVALUATION_FILE, summary)

    written = {"confusion": run_dir / "confusion.png"}
    fig = figures.confusion(np.asarray(summary["confusion"]), classes)
    files.save_figure(fig, written["confusion"], dpi=120)
    _to_tensorboard(tb_writer, "explain/confusion", fig, step)

    if entries:
        index = np.asarray([m.index for m in mistakes])
        x = eval_dataset(test.images[index], test.labels[index], mean, std).tensors[0].to(device)
        with GradCAM(model, target_layer=layer, method=method) as cam:
            cam_pred = cam(x, class_idx=[m.pred for m in mistakes]).cpu().numpy()
            cam_true = cam(x, class_idx=[m.true for m in mistakes]).cpu().numpy()
        shown = denormalize(x, mean, std)
        written["misclassified"] = run_dir / "misclassified.png"
        fig = figures.misclassified_grid(shown, entries)
        files.save_figure(fig, written["misclassified"], dpi=120)
        _to_tensorboard(tb_writer, "explain/misclassified", fig, step)
        written["gradcam"] = run_dir / "gradcam.png"
        fig = figures.gradcam_grid(shown, cam_pred, cam_true, entries, method=method)
        files.save_figure(fig, written["gradcam"], dpi=120)
        _to_tensorboard(tb_writer, "explain/gradcam", fig, step)
    groups = image_groups(test, predictions, mistakes, probe_index, mean, std, device)
    summary["faithfulness"] = write_faithfulness(model, groups, run_dir, layer, method, tb_writer, step)
    if summary["faithfulness"]:
        written.update(explanations=run_dir / "explanations.json", faithfulness=run_dir / "explanations.png")
    summary["files"] = {k: str(v) for k, v in written.items()}
    summary["mistakes"] = entries
    return summary


def _to_tensorboard(writer, tag: str, fig, step: int) -> None:
    if writer is not None:
        writer.add_figure(tag, fig, global_step=step, close=False)
    figures.close(fig)
