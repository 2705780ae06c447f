"""What the faithfulness scores add to the completion step, against the step's own evaluation pass, on this machine.

Times, for a ResNet18 of each width (random weights: the cost does not depend on them):
  evaluation  evaluate_split over --test-images synthetic test images (what the completion step always does);
  scores      write_faithfulness on 20 mistakes + 8 probe images: GradCAM, deletion/insertion (map + 3 random-region
              orders, 16 steps), the 6-stage randomization cascade, explanations.json/.png.
and writes the table to --out (markdown).

    python benchmarks/faithfulness_cost.py --widths 0.25 1.0 --test-images 10000
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from ignite_cifar.data import channel_stats, synthetic_split
from ignite_cifar.explain import evaluate_split
from ignite_cifar.explained import Destination, ExplainSettings, LabelledImages
from ignite_cifar.faithfulness_report import image_groups, write_faithfulness
from ignite_cifar.models import build_model


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(width: float, test_images: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_model("resnet18", 10, "layer", width).to(device)
    test = synthetic_split(test_images, 10, seed=1)
    mean, std = channel_stats(test.images)
    out = {}
    out["evaluation"] = _timed(lambda: out.setdefault("pred", evaluate_split(model, test, mean, std, device)))
    predictions = out.pop("pred")
    predictions.preds = predictions.labels.copy()  # 8 correct probe images, 20 "mistakes": the largest report
    mistakes = [type("M", (), {"index": int(i)})() for i in range(20)]
    groups = image_groups(LabelledImages(test, [str(c) for c in range(10)], mean, std), predictions, mistakes,
                          list(range(20, 28)), device)
    with tempfile.TemporaryDirectory() as folder:
        out["scores"] = _timed(lambda: write_faithfulness(model, groups, ExplainSettings(), Destination(Path(folder))))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    p.add_argument("--test-images", type=int, default=10000)
    p.add_argument("--out", default=str(Path(__file__).with_name("FAITHFULNESS-COST.md")))
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for width in args.widths:
        m = measure(width, args.test_images, device)
        per_10k = m["evaluation"] * 10000 / args.test_images
        rows.append(f"| {width} | {m['evaluation']:.1f} ({args.test_images} images) | {per_10k:.1f} | "
                    f"{m['scores']:.1f} | {100 * m['scores'] / (per_10k + m['scores']):.0f}% |")
        print(rows[-1], flush=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {device}"
    text = ("# Faithfulness cost in the completion step\n\n"
            f"Measured by `python benchmarks/faithfulness_cost.py --test-images {args.test_images}` on {machine} "
            f"(torch {torch.__version__}; the machine was shared with other jobs, so read the ratios, not the "
            "seconds). Scores: 20 mistakes + 8 probe images, layer4 gradcam, 16 steps, map + 3 random-region orders, "
            "6-stage randomization cascade, JSON + figure. The share assumes the evaluation of 10,000 test images "
            f"(scaled linearly from {args.test_images}).\n\n"
            "| width | evaluation, s | evaluation of 10k, s | faithfulness scores, s | share of the two |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
