"""How many random orders the faithfulness baseline needs: the spread, from one baseline seed to the next, of the
random-region AUCs and of the verdict's two numbers (deletion ratio, insertion gain), averaged over 1 or 3 orders.

On a saved run's most confident test mistakes (the images the completion step scores), layer4 gradcam, 16 steps.
Fewer orders cost less (each order is 2 x 15 forward passes per image) but move the verdict with the seed.

    python benchmarks/faithfulness/faithfulness_orders.py --run RUNS/NAME [--n 20] [--seeds 10] [--repeats 1 3]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from ignite_cifar.data.augment import eval_dataset
from ignite_cifar.data.datasets import load_data
from ignite_cifar.explain.explanations import evaluate_split
from ignite_cifar.explain.faithfulness import RANDOM_ORDERS, TARGETS, auc, faithfulness_curves, native_grid
from ignite_cifar.explain.gradcam import GradCAM
from ignite_cifar.explain.mistakes import find_misclassified
from ignite_cifar.explain.saved_run import load_run

COLUMNS = ("deletion AUC, random regions", "insertion AUC, random regions", "deletion ratio", "insertion gain")


def baseline_numbers(model, x, pred, maps, grid, repeats: int, seed: int) -> tuple[float, float, float, float]:
    """(random deletion AUC, random insertion AUC, map/random deletion ratio, map - random insertion gain), means
    over the images, with the baseline averaged over `repeats` orders drawn from `seed`."""
    curves = faithfulness_curves(model, x, pred, maps, grid, ("random_regions",), repeats=repeats, seed=seed)
    d_map, i_map = (float(auc(c).mean()) for c in curves["map"])
    d_rand, i_rand = (float(auc(c).mean()) for c in curves["random_regions"])
    return d_rand, i_rand, d_map / d_rand, i_map - i_rand


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--n", type=int, default=20, help="how many mistakes (the completion step scores 20)")
    p.add_argument("--seeds", type=int, default=10, help="baseline seeds per setting")
    p.add_argument("--repeats", type=int, nargs="+", default=[1, RANDOM_ORDERS], help="orders averaged per seed")
    p.add_argument("--out", default=str(Path(__file__).with_name("FAITHFULNESS-ORDERS.md")))
    args = p.parse_args(argv)
    config, derived, model, ckpt, _ = load_run(args.run, None, "final")
    data = load_data(replace(config, train_subset=10, test_subset=0))
    predictions = evaluate_split(model, data.test, derived["mean"], derived["std"], torch.device("cpu"))
    mistakes = find_misclassified(predictions, n=args.n, order="confident")
    index = [m.index for m in mistakes]
    x = eval_dataset(data.test.images[index], data.test.labels[index], derived["mean"], derived["std"]).tensors[0]
    pred = torch.as_tensor([m.pred for m in mistakes])
    with GradCAM(model, "layer4", "gradcam") as cam:
        maps = cam(x, class_idx=pred)
    grid = native_grid(model, "layer4", x)
    rows = []
    for repeats in args.repeats:
        values = list(zip(*(baseline_numbers(model, x, pred, maps, grid, repeats, seed)
                            for seed in range(args.seeds)), strict=True))
        cells = [f"{statistics.mean(v):.3f} (sd {statistics.stdev(v):.3f}, {min(v):.3f} to {max(v):.3f})"
                 for v in values]
        rows.append(f"| {repeats} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    text = (f"# How many random orders the faithfulness baseline needs: {ckpt}\n\n"
            f"`python benchmarks/faithfulness/faithfulness_orders.py --run {args.run} --n {args.n} "
            f"--seeds {args.seeds} "
            f"--repeats {' '.join(map(str, args.repeats))}`: the {len(x)} most confident test mistakes of that model "
            f"(test accuracy {100 * predictions.accuracy:.2f}%), layer4 gradcam, 16 steps, fill 0 after "
            f"normalization. Each cell: the mean over {args.seeds} baseline seeds (sd, range) of the mean over the "
            f"images. The verdict's targets: {TARGETS}.\n\n"
            "| orders per seed | " + " | ".join(COLUMNS) + " |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
