"""Predictions over a split, and the rule that picks which misclassified images to show."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ignite_cifar.config_checks import MISTAKE_ORDERS


@dataclass
class Predictions:
    """Per-image results of one pass over a split, in dataset order."""

    labels: np.ndarray  # int64 N
    preds: np.ndarray  # int64 N
    probs: np.ndarray  # float32 N x C (softmax)
    loss: float  # mean cross-entropy

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.labels).mean()) if len(self.labels) else float("nan")

    def confusion(self, num_classes: int) -> np.ndarray:
        """Rows: true class, columns: predicted class."""
        cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(cm, (self.labels, self.preds), 1)
        return cm

    def per_class_accuracy(self, classes: list[str]) -> dict[str, float]:
        cm = self.confusion(len(classes))
        totals = cm.sum(1)
        return {c: (float(cm[i, i] / totals[i]) if totals[i] else float("nan")) for i, c in enumerate(classes)}


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device) -> Predictions:
    """A plain no-grad pass over `loader` (which must not shuffle); restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    labels, probs, loss_sum = [], [], 0.0
    try:
        for x, y in loader:
            logits = model(x.to(device)).float()
            y = y.to(device)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            probs.append(logits.softmax(1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    p = torch.cat(probs).numpy() if probs else np.zeros((0, 0), np.float32)
    lab = torch.cat(labels).numpy().astype(np.int64) if labels else np.zeros(0, np.int64)
    return Predictions(lab, p.argmax(1).astype(np.int64) if len(p) else lab.copy(), p,
                       loss_sum / max(1, len(lab)))


@dataclass
class Mistake:
    index: int  # position in the evaluated split
    true: int
    pred: int
    prob: float  # predicted probability of `pred`

    def as_dict(self, classes: list[str]) -> dict:
        return {"index": self.index, "true": self.true, "pred": self.pred, "prob": round(self.prob, 6),
                "true_name": classes[self.true], "pred_name": classes[self.pred]}


def find_misclassified(predictions: Predictions, n: int = 20, order: str = "confident") -> list[Mistake]:
    """Up to `n` misclassified images.

    `confident`: highest predicted probability first (the model's most convinced mistakes), ties by index.
    `first`: dataset order, as in the original recipe. Fewer than `n` mistakes: all of them.
    """
    if order not in MISTAKE_ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {', '.join(MISTAKE_ORDERS)}")
    wrong = np.flatnonzero(predictions.preds != predictions.labels)
    conf = predictions.probs[wrong, predictions.preds[wrong]] if len(wrong) else np.zeros(0)
    if order == "confident":
        keep = np.lexsort((wrong, -conf))  # primary key: -conf, then index
        wrong, conf = wrong[keep], conf[keep]
    return [Mistake(int(i), int(predictions.labels[i]), int(predictions.preds[i]), float(c))
            for i, c in zip(wrong[:n], conf[:n], strict=True)]
