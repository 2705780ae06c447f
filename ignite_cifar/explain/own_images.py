"""`explain --run RUN --images a.png b.jpg ...`: a saved run's top-3 classes, GradCAM map and faithfulness for a
user's own pictures, any size and mode, resized to 32 x 32 as the folder data set does."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ignite_cifar import files
from ignite_cifar.data.augment import denormalize, normalize_array
from ignite_cifar.data.datasets import UNREADABLE, _decode, unreadable_reason
from ignite_cifar.errors import DataError
from ignite_cifar.explain import figures
from ignite_cifar.explain.faithfulness import assess
from ignite_cifar.explain.faithfulness_verdict import constant_maps
from ignite_cifar.explain.gradcam import GradCAM

FIGURE_FILE, JSON_FILE = "own_images.png", "own_images.json"
TOP = 3


def read_images(paths: Sequence[str]) -> np.ndarray:
    """N x 32 x 32 x 3 uint8, or a DataError with one line per file that cannot be read."""
    images, problems = [], []
    for name in paths:
        path = Path(name)
        try:
            if not path.is_file():
                raise FileNotFoundError("no such file")
            images.append(_decode(path))
        except FileNotFoundError:
            problems.append(f"images: {path} does not exist")
        except UNREADABLE as exc:
            problems.append(f"images: cannot read {path} as an image ({unreadable_reason(exc)})")
    if problems:
        raise DataError("\n".join(problems))
    return np.stack(images)


def explain_images(model: torch.nn.Module, paths: Sequence[str], derived: dict[str, Any], out_dir: Path,
                   layer: str, method: str, device: torch.device) -> list[dict[str, Any]]:
    """Top-3 classes with probabilities, the top class's map and its faithfulness for each image; writes
    own_images.png and own_images.json into `out_dir` and returns the JSON's entries."""
    raw = read_images(paths)
    x = normalize_array(raw, derived["mean"], derived["std"]).to(device)
    classes = derived["classes"]
    with GradCAM(model, target_layer=layer, method=method) as cam:
        maps = cam(x)
        probs = torch.softmax(cam.last_logits.float(), dim=1)
        top1 = cam.last_predictions
    scores = assess(model, x, top1, maps, layer, method)
    top_p, top_i = probs.topk(min(TOP, probs.shape[1]), dim=1)
    entries = []
    constant = constant_maps(maps).tolist()
    for k, path in enumerate(paths):
        # a constant map orders no pixel: its Spearman and SSIM with any other map are undefined (None), not scores
        per = {key: None if constant[k] and key.startswith("sanity_") else values[k]
               for key, values in scores["per_image"].items()}
        entries.append({"image": str(path), "top": [{"class": classes[i], "probability": p}
                                                    for p, i in zip(top_p[k].tolist(), top_i[k].tolist(), strict=True)],
                        "map_explains": classes[int(top1[k])], "constant_map": constant[k], **per})
    captions = [_caption(e) for e in entries]
    fig = figures.own_images(denormalize(x, derived["mean"], derived["std"]), maps.cpu().numpy(),
                             [Path(p).name for p in paths], captions)
    out_dir = Path(out_dir)
    files.save_figure(fig, out_dir / FIGURE_FILE, dpi=110)
    figures.close(fig)
    files.write_json(out_dir / JSON_FILE, {"layer": layer, "method": method, "grid": scores["grid"],
                                           "baseline": "random_regions: a random order of the map's grid cells",
                                           "images": entries})
    return entries


def _caption(entry: dict[str, Any]) -> str:
    top = "\n".join(f"{t['class']:<12s} {t['probability']:.3f}" for t in entry["top"])
    e = entry
    return (f"{top}\n\ndeletion AUC  {e['deletion_auc/map']:.3f}"
            f"\n  random regions {e['deletion_auc/random_regions']:.3f}"
            f"\ninsertion AUC {e['insertion_auc/map']:.3f}\n  random regions {e['insertion_auc/random_regions']:.3f}"
            f"\nSpearman after fc+layer4 {sanity_words(e)}")


def sanity_words(entry: dict[str, Any]) -> str:
    """The image's Spearman after randomizing fc and layer4, or why there is none."""
    if entry["constant_map"]:
        return "undefined (constant map)"
    after = entry.get("sanity_spearman/layer4")
    return "not measured" if after is None else f"{after:.2f}"
