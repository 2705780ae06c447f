"""Which map explains best at 32 x 32: gradcam and gradcam++ at layer4 (4 x 4) and layer3 (8 x 8), scored on a saved
run's most confident test mistakes by deletion / insertion AUC (against random regions of each map's grid, and
random single pixels) and Spearman similarity after re-initializing fc and layer4.

    python benchmarks/faithfulness/faithfulness_layers.py --run RUNS/NAME [--n 20 100] [--test-subset 2000] \
        [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from ignite_cifar.data.augment import eval_dataset
from ignite_cifar.data.datasets import load_data
from ignite_cifar.explain.explanations import evaluate_split
from ignite_cifar.explain.faithfulness import TARGETS, Scoring, assess
from ignite_cifar.explain.faithfulness_verdict import constant_maps
from ignite_cifar.explain.gradcam import GradCAM
from ignite_cifar.explain.mistakes import find_misclassified
from ignite_cifar.explain.saved_run import load_run

COMBOS = (("layer4", "gradcam"), ("layer4", "gradcam++"), ("layer3", "gradcam"), ("layer3", "gradcam++"))


def _mean_se(values: list[float]) -> str:
    """mean +- standard error over images."""
    return f"{statistics.mean(values):+.3f} +- {statistics.stdev(values) / math.sqrt(len(values)):.3f}"


def score_row(model, x: torch.Tensor, pred: torch.Tensor, layer: str, method: str) -> tuple[str, dict]:
    """One table row (and its means) for one layer and method on these images and classes."""
    with GradCAM(model, layer, method) as cam:
        maps = cam(x, class_idx=pred)
    s = assess(model, x, pred, maps, layer, method, Scoring(baselines=("random_regions", "random_pixels")))
    m, per = s["means"], s["per_image"]
    deletion_diff = [a - b for a, b in zip(per["deletion_auc/map"], per["deletion_auc/random_regions"], strict=True)]
    insertion_diff = [a - b for a, b in zip(per["insertion_auc/map"], per["insertion_auc/random_regions"],
                                            strict=True)]
    row = (f"| {len(x)} | {layer} ({s['grid'][0]}x{s['grid'][1]}) | {method} | {m['deletion_auc/map']:.3f} | "
           f"{m['deletion_auc/random_regions']:.3f} | {m['deletion_auc/random_pixels']:.3f} | "
           f"{m['deletion_ratio/random_regions']:.2f} | {_mean_se(deletion_diff)} | {m['insertion_auc/map']:.3f} | "
           f"{m['insertion_auc/random_regions']:.3f} | {m['insertion_auc/random_pixels']:.3f} | "
           f"{_mean_se(insertion_diff)} | {_sanity_cells(m, per, constant_maps(maps))} |")
    return row, m


def _sanity_cells(means: dict, per_image: dict, constant: torch.Tensor) -> str:
    """The Spearman after randomizing fc (mean) and layer4 (mean +- se) over the images whose map is not constant;
    undefined when every map is (a diverged model: its maps order no pixel)."""
    defined = [v for v, flat in zip(per_image["sanity_spearman/layer4"], constant.tolist(), strict=True) if not flat]
    if not defined:
        return "undefined (constant maps) | undefined (constant maps)"
    layer4 = _mean_se(defined) if len(defined) > 1 else f"{defined[0]:+.3f}"
    return f"{means['sanity_spearman/fc']:.2f} | {layer4}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--which", default="final", choices=("final", "best"))
    p.add_argument("--n", type=int, nargs="+", default=[20], help="how many mistakes to score (one table part each)")
    p.add_argument("--test-subset", type=int, default=0, help="mine the mistakes in a stratified subset (0 = all)")
    p.add_argument("--out", default=str(Path(__file__).with_name("FAITHFULNESS-LAYERS.md")))
    args = p.parse_args(argv)
    config, derived, model, ckpt, _ = load_run(args.run, None, args.which)
    data = load_data(replace(config, train_subset=10, test_subset=args.test_subset))
    predictions = evaluate_split(model, data.test, derived["mean"], derived["std"], torch.device("cpu"))
    rows, raw = [], {}
    for n in args.n:
        mistakes = find_misclassified(predictions, n=n, order="confident")
        index = [m.index for m in mistakes]
        x = eval_dataset(data.test.images[index], data.test.labels[index], derived["mean"], derived["std"]).tensors[0]
        pred = torch.as_tensor([m.pred for m in mistakes])
        for layer, method in COMBOS:
            row, raw[f"{n}/{layer}/{method}"] = score_row(model, x, pred, layer, method)
            rows.append(row)
            print(row, flush=True)
    text = (f"# Which map explains best: {ckpt}\n\n"
            f"`python benchmarks/faithfulness/faithfulness_layers.py --run {args.run} --which {args.which} --n "
            f"{' '.join(map(str, args.n))} --test-subset {args.test_subset}`: the most confident mistakes of that "
            f"model (test accuracy on the {len(predictions.labels)} images mined: {100 * predictions.accuracy:.2f}%), "
            "maps of the predicted class, 16 steps, fill 0 after normalization, baselines averaged over 3 random "
            "orders. Differences are per image, map minus random regions, as mean +- standard error over the images. "
            f"Targets: {TARGETS}.\n\n"
            "| images | layer | method | deletion AUC | random regions | random pixels | ratio to regions | "
            "deletion: map - regions | insertion AUC | random regions | random pixels | insertion: map - regions | "
            "Spearman after fc | after fc+layer4 |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
