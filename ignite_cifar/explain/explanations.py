"""The one place that joins a trained model with explanations: mistakes, GradCAM, confusion, figures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ignite_cifar import files
from ignite_cifar.data.augment import eval_dataset
from ignite_cifar.data.datasets import Split
from ignite_cifar.explain import figures
from ignite_cifar.explain.faithfulness_report import image_groups, write_faithfulness
from ignite_cifar.explain.gradcam import GradCAM
from ignite_cifar.explain.mistakes import Mistake, Predictions, find_misclassified, predict
from ignite_cifar.explain.settings import Destination, ExplainSettings, LabelledImages

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


def write_explanations(model: nn.Module, images: LabelledImages, settings: ExplainSettings, to: Destination,
                       device: torch.device, source: str = "final",
                       probe_index: Sequence[int] | None = None) -> dict[str, Any]:
    """Mine `settings.n_misclassified` misclassified test images and explain exactly those with GradCAM; write the
    figures and JSON.

    Writes misclassified.json (the one list both figures are drawn from), misclassified.png, gradcam.png,
    confusion.png, evaluation.json (test loss, accuracy, per-class accuracy, confusion matrix) and how far to believe
    the maps: explanations.json and explanations.png (faithfulness_report.py).

    Args:
        model: the trained network (left in the train/eval mode it had).
        images: the test split with its class names and channel statistics.
        settings: how many mistakes, in which order, and the CAM method and layer.
        to: the run folder the files go to, and the TensorBoard writer and step that also get the figures.
        device: where the evaluation and GradCAM run.
        source: which model this is (`final`, a checkpoint's name), recorded in the JSON files.
        probe_index: test indices of the probe images; those classified correctly are scored in explanations.json
            next to the mistakes (None: the mistakes only).

    Returns:
        evaluation.json's summary plus `files` (what was written) and `mistakes` (the explained entries).
    """
    predictions = evaluate_split(model, images.split, images.mean, images.std, device)
    summary, mistakes, entries = _record_evaluation(predictions, images.classes, settings, to.run_dir, source)
    written = {"confusion": to.figure(figures.confusion(np.asarray(summary["confusion"]), images.classes),
                                      "confusion.png", "explain/confusion")}
    if mistakes:
        written.update(_draw_mistakes(model, images, settings, (mistakes, entries), to, device))
    groups = image_groups(images, predictions, mistakes, probe_index, device)
    summary["faithfulness"] = write_faithfulness(model, groups, settings, to)
    if summary["faithfulness"]:
        written.update(explanations=to.run_dir / "explanations.json", faithfulness=to.run_dir / "explanations.png")
    summary["files"] = {k: str(v) for k, v in written.items()}
    summary["mistakes"] = entries
    return summary


def _record_evaluation(predictions: Predictions, classes: list[str], settings: ExplainSettings, run_dir: Path,
                       source: str) -> tuple[dict[str, Any], list[Mistake], list[dict[str, Any]]]:
    """evaluation.json and misclassified.json; returns the summary, the mistakes to explain and their entries."""
    summary = {**evaluation_summary(predictions, classes), "model": source}
    n = settings.n_misclassified
    mistakes = find_misclassified(predictions, n=n, order=settings.mistake_order)
    if len(mistakes) < n:
        log.warning("only %d misclassified test images (asked for %d): showing all of them", len(mistakes), n)
    entries = [m.as_dict(classes) for m in mistakes]
    files.write_json(Path(run_dir) / "misclassified.json", {
        "order": settings.mistake_order, "method": settings.gradcam_method, "layer": settings.gradcam_layer,
        "model": source, "requested": n, "found": len(mistakes),
        "total_misclassified": int((predictions.preds != predictions.labels).sum()), "mistakes": entries})
    files.write_json(Path(run_dir) / EVALUATION_FILE, summary)
    return summary, mistakes, entries


def _draw_mistakes(model: nn.Module, images: LabelledImages, settings: ExplainSettings,
                   listed: tuple[list[Mistake], list[dict[str, Any]]], to: Destination,
                   device: torch.device) -> dict[str, Path]:
    """misclassified.png and gradcam.png, both of the same images (`listed`: the mistakes and their entries): the
    maps for the predicted and the true class."""
    mistakes, entries = listed
    x = images.normalized([m.index for m in mistakes]).to(device)
    with GradCAM(model, target_layer=settings.gradcam_layer, method=settings.gradcam_method) as cam:
        cam_pred = cam(x, class_idx=[m.pred for m in mistakes]).cpu().numpy()
        cam_true = cam(x, class_idx=[m.true for m in mistakes]).cpu().numpy()
    shown = images.shown(x)
    grid = figures.gradcam_grid(shown, cam_pred, cam_true, entries, method=settings.gradcam_method)
    return {"misclassified": to.figure(figures.misclassified_grid(shown, entries), "misclassified.png",
                                       "explain/misclassified"),
            "gradcam": to.figure(grid, "gradcam.png", "explain/gradcam")}
