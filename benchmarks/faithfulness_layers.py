"""Which map explains best at 32 x 32: gradcam and gradcam++ at layer4 (4 x 4) and layer3 (8 x 8), scored on a saved
run's most confident test mistakes by deletion / insertion AUC (against random regions of each map's grid, and
random single pixels) and Spearman similarity after re-initializing fc and layer4.

    python benchmarks/faithfulness_layers.py --run RUNS/NAME [--test-subset 2000] [--out benchmarks/FILE.md]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from ignite_cifar.augment import eval_dataset
from ignite_cifar.data import load_data
from ignite_cifar.explain import evaluate_split
from ignite_cifar.faithfulness import TARGETS, Scoring, assess
from ignite_cifar.gradcam import GradCAM
from ignite_cifar.mistakes import find_misclassified
from ignite_cifar.saved_run import load_run

COMBOS = (("layer4", "gradcam"), ("layer4", "gradcam++"), ("layer3", "gradcam"), ("layer3", "gradcam++"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--which", default="final", choices=("final", "best"))
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--test-subset", type=int, default=0, help="mine the mistakes in a stratified subset (0 = all)")
    p.add_argument("--out", default=str(Path(__file__).with_name("FAITHFULNESS-LAYERS.md")))
    args = p.parse_args(argv)
    config, derived, model, ckpt, _ = load_run(args.run, None, args.which)
    data = load_data(replace(config, train_subset=10, test_subset=args.test_subset))
    predictions = evaluate_split(model, data.test, derived["mean"], derived["std"], torch.device("cpu"))
    mistakes = find_misclassified(predictions, n=args.n, order="confident")
    index = [m.index for m in mistakes]
    x = eval_dataset(data.test.images[index], data.test.labels[index], derived["mean"], derived["std"]).tensors[0]
    pred = torch.as_tensor([m.pred for m in mistakes])
    rows, raw = [], {}
    for layer, method in COMBOS:
        with GradCAM(model, layer, method) as cam:
            maps = cam(x, class_idx=pred)
        s = assess(model, x, pred, maps, layer, method, Scoring(baselines=("random_regions", "random_pixels")))
        m = s["means"]
        raw[f"{layer}/{method}"] = m
        rows.append(f"| {layer} ({s['grid'][0]}x{s['grid'][1]}) | {method} | {m['deletion_auc/map']:.3f} | "
                    f"{m['deletion_auc/random_regions']:.3f} | {m['deletion_auc/random_pixels']:.3f} | "
                    f"{m['deletion_ratio/random_regions']:.2f} | {m['insertion_auc/map']:.3f} | "
                    f"{m['insertion_auc/random_regions']:.3f} | {m['insertion_auc/random_pixels']:.3f} | "
                    f"{m['insertion_gain/random_regions']:+.3f} | {m['sanity_spearman/fc']:.2f} | "
                    f"{m['sanity_spearman/layer4']:.2f} |")
        print(rows[-1], flush=True)
    text = (f"# Which map explains best: {ckpt}\n\n"
            f"`python benchmarks/faithfulness_layers.py --run {args.run} --which {args.which} --test-subset "
            f"{args.test_subset}`: the {len(index)} most confident mistakes of that model (test accuracy on the "
            f"{len(predictions.labels)} images mined: {100 * predictions.accuracy:.2f}%), maps of the predicted class, "
            "16 steps, fill 0 after normalization, baselines averaged over 3 random orders. Targets (issue 18): "
            f"{TARGETS}.\n\n"
            "| layer | method | deletion AUC | random regions | random pixels | ratio to regions | insertion AUC | "
            "random regions | random pixels | gain over regions | Spearman after fc | after fc+layer4 |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
