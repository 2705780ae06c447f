"""What the faithfulness scores add to the completion step, on this machine.

Times, for a ResNet18 of each width (random weights: the cost does not depend on them), the completion step's
`write_explanations` on --test-images synthetic test images, and within it:
  evaluation  the pass over the test images (evaluate_split);
  scores      write_faithfulness on 20 mistakes + 8 probe images: deletion/insertion (map + 3 random-region orders,
              16 steps, the two ends shared by all orders), the 6-stage randomization cascade,
              explanations.json/.png;
  the rest    mining the mistakes, GradCAM on them, misclassified.png, gradcam.png, confusion.png and the JSON files.
and writes the table to --out (markdown).

    python benchmarks/faithfulness/faithfulness_cost.py --widths 0.25 1.0 --test-images 10000
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from ignite_cifar.data.datasets import channel_stats, synthetic_split
from ignite_cifar.explain import explanations as explain
from ignite_cifar.explain.settings import Destination, ExplainSettings, LabelledImages
from ignite_cifar.model.resnet import build_model


def timing(fn, into: dict, name: str):
    """`fn`, adding its wall time to into[name] at each call."""
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into[name] = into.get(name, 0.0) + time.perf_counter() - start
    return timed


def measure(width: float, test_images: int, device: torch.device) -> dict:
    """{completion, evaluation, scores}: seconds of write_explanations and of its two largest parts."""
    torch.manual_seed(0)
    model = build_model("resnet18", 10, "layer", width).to(device)
    test = synthetic_split(test_images, 10, seed=1)
    mean, std = channel_stats(test.images)
    images = LabelledImages(test, [str(c) for c in range(10)], mean, std)
    seconds: dict = {}
    originals = explain.evaluate_split, explain.write_faithfulness
    explain.evaluate_split = timing(explain.evaluate_split, seconds, "evaluation")
    explain.write_faithfulness = timing(explain.write_faithfulness, seconds, "scores")
    try:
        with tempfile.TemporaryDirectory() as folder:
            probe = list(range(8))  # probe images the random model happens to classify right are scored
            timing(explain.write_explanations, seconds, "completion")(
                model, images, ExplainSettings(), Destination(Path(folder)), device, probe_index=probe)
    finally:
        explain.evaluate_split, explain.write_faithfulness = originals
    return seconds


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
        rest = m["completion"] - m["evaluation"] - m["scores"]
        rows.append(f"| {width} | {m['completion']:.1f} | {m['evaluation']:.1f} | {rest:.1f} | {m['scores']:.1f} | "
                    f"{100 * m['scores'] / m['completion']:.0f}% | "
                    f"{100 * m['scores'] / (m['evaluation'] + m['scores']):.0f}% |")
        print(rows[-1], flush=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {device}"
    text = ("# Faithfulness cost in the completion step\n\n"
            "Measured by `python benchmarks/faithfulness/faithfulness_cost.py "
            f"--test-images {args.test_images}` on {machine} "
            f"(torch {torch.__version__}; the machine was shared with other jobs, so read the ratios, not the "
            "seconds). The completion step's explanations (`explain.write_explanations`) on "
            f"{args.test_images} test images; within it the evaluation pass and the faithfulness scores (20 mistakes "
            "+ the probe images classified right, layer4 gradcam, 16 steps, map + 3 random-region orders, 6-stage "
            "randomization cascade, JSON + figure); the rest is mining, GradCAM and the other figures.\n\n"
            "| width | completion step, s | evaluation, s | the rest, s | faithfulness scores, s | "
            "share of the step | share of evaluation + scores |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
