"""How far to believe a run's GradCAM maps, written down: explanations.json, explanations.png, TensorBoard scalars
and one log line, for the explained mistakes and for the correctly classified probe images."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ignite_cifar import files
from ignite_cifar.explain import faithfulness as fa
from ignite_cifar.explain import figures
from ignite_cifar.explain.gradcam import GradCAM
from ignite_cifar.explain.mistakes import Predictions
from ignite_cifar.explain.settings import Destination, ExplainSettings, LabelledImages

log = logging.getLogger("ignite_cifar")

JSON_FILE, FIGURE_FILE = "explanations.json", "explanations.png"
CASCADE_IMAGES = 3


@dataclass
class ImageGroup:
    """Test images whose maps are scored: normalized images on the device, the class each map explains."""

    name: str
    index: list[int]
    images: torch.Tensor
    classes: torch.Tensor
    explains: str
    shown: np.ndarray  # the images de-normalized, N x H x W x 3 in [0, 1], for the figure


def image_groups(images: LabelledImages, predictions: Predictions, mistakes: Sequence,
                 probe_index: Sequence[int] | None, device: torch.device) -> list[ImageGroup]:
    """The explained mistakes (their predicted class, the map gradcam.png shows first) and the probe images the
    model classifies correctly (their class)."""
    groups = []
    wanted = [("mistakes", [m.index for m in mistakes], "the predicted class of misclassified test images")]
    if probe_index is not None:
        right = [int(i) for i in probe_index if predictions.preds[i] == predictions.labels[i]]
        wanted.append(("probe", right, "the (true = predicted) class of correctly classified probe images"))
    for name, index, explains in wanted:
        if index:
            x = images.normalized(index).to(device)
            classes = torch.as_tensor(predictions.preds[index], dtype=torch.long, device=device)
            groups.append(ImageGroup(name, index, x, classes, explains, images.shown(x)))
    return groups


def write_faithfulness(model: nn.Module, groups: Sequence[ImageGroup], settings: ExplainSettings,
                       to: Destination) -> dict[str, Any]:
    """Score each group's maps (deletion/insertion against random regions, the randomization cascade) and write
    explanations.json, explanations.png, TensorBoard scalars (`explain/...`, `explain/probe/...`) and a log line.
    Returns {group: its means and verdict}."""
    layer, method = settings.gradcam_layer, settings.gradcam_method
    report = {"layer": layer, "method": method, "steps": fa.STEPS, "fill": "0 after normalization (the training mean)",
              "random_orders": fa.RANDOM_ORDERS, "seed": fa.SEED, "targets": fa.TARGETS,
              "baselines": {"random_regions": "a random order of whole cells of the map's native grid (grid, "
                                              "cell_pixels), averaged over random_orders orders"},
              "groups": {}}
    shown = None
    for group in groups:
        with GradCAM(model, target_layer=layer, method=method) as cam:
            maps = cam(group.images, class_idx=group.classes)
        keep = CASCADE_IMAGES if shown is None else 0
        scores = fa.assess(model, group.images, group.classes, maps, layer, method, fa.Scoring(keep=keep))
        if keep:
            shown = (group, maps[:keep], scores.pop("cascade_maps"))
        report["groups"][group.name] = {"images": group.index, "explains": group.explains, **scores}
        to.scalars("explain/" if group.name == "mistakes" else f"explain/{group.name}/", scores["means"])
    if not report["groups"]:
        return {}
    files.write_json(Path(to.run_dir) / JSON_FILE, report)
    _figure(report, shown, to)
    line = summary_line(report)
    log.info("%s", line)
    to.text("explain/verdict", line)
    return {name: {"means": g["means"], "verdict": g["verdict"]} for name, g in report["groups"].items()}


def summary_line(report: dict[str, Any]) -> str:
    """One line: deletion/insertion AUC against random regions and Spearman per randomized stage, first group."""
    name, group = next(iter(report["groups"].items()))
    m, v = group["means"], group["verdict"]
    return (f"faithfulness of {report['method']} at {report['layer']} on {len(group['images'])} {name}: deletion AUC "
            f"{m['deletion_auc/map']:.3f} vs {m['deletion_auc/random_regions']:.3f} for random regions (ratio "
            f"{m['deletion_ratio/random_regions']:.2f}), insertion AUC {m['insertion_auc/map']:.3f} vs "
            f"{m['insertion_auc/random_regions']:.3f} ({m['insertion_gain/random_regions']:+.3f}); "
            f"{_spearman_words(group)}: faithful {_faithful_words(v)}, sanity check {v['sanity']} "
            f"(targets {fa.TARGETS}); see {JSON_FILE}")


def _spearman_words(group: dict[str, Any]) -> str:
    """The Spearman means per randomized stage, over the maps that are not constant (how many were, if any)."""
    m, constant, n = group["means"], group.get("constant_maps", 0), len(group["images"])
    stages = ", ".join(f"{k.split('/')[1]} {val:.2f}" for k, val in m.items() if k.startswith("sanity_spearman/"))
    if not stages:
        return f"no Spearman (all {n} maps constant)" if constant else "no Spearman (not measured)"
    left_out = f" ({constant} of {n} maps constant, left out)" if constant else ""
    return f"Spearman after randomizing {stages}{left_out}"


def _faithful_words(verdict: dict[str, Any]) -> str:
    return "yes" if verdict["faithful"] else f"no ({'; '.join(verdict['missed'])})"


def _figure(report: dict[str, Any], shown, to: Destination) -> None:
    group, maps, cascade = shown
    images = group.shown[: len(maps)]
    curves = {name: g["curves"] for name, g in report["groups"].items()}
    title = (f"{report['method']} at {report['layer']}: deletion / insertion against random regions of the map's "
             f"grid; below, {group.name} maps as the model is randomized from the head down")
    fig = figures.faithfulness(curves, images, maps.cpu().numpy(), {k: v.cpu().numpy() for k, v in cascade.items()},
                               title)
    to.figure(fig, FIGURE_FILE, "explain/faithfulness", dpi=110)
