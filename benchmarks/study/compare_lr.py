"""Side-by-side learning-rate check for the LayerNorm ResNet18, measured with this project's own trainer.

Trains the same narrow network on the same data for the same epochs at each learning rate and writes the
per-epoch val (= test split) accuracy to a Markdown table, so the default lr is chosen on numbers.

    python benchmarks/study/compare_lr.py --data-dir /tmp/cifar10-jpeg --lrs 0.01 0.05 --epochs 2 --width 0.25
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from ignite_cifar.config import make_config
from ignite_cifar.training.launch import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="CIFAR-10 image folder (DIR/train, DIR/test)")
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.05])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--train-subset", type=int, default=0)
    p.add_argument("--output", default=str(Path(__file__).with_name("LR-RESULTS.md")))
    args = p.parse_args()

    import json

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lr in args.lrs:
            config = make_config({"dataset": "folder", "data_dir": args.data_dir, "width": args.width,
                                  "epochs": args.epochs, "lr": lr, "train_subset": args.train_subset,
                                  "output_dir": tmp, "run_name": f"lr{lr}", "n_misclassified": 1})
            start = time.perf_counter()
            result = train(config)
            seconds = time.perf_counter() - start
            history = json.loads((Path(result["run_dir"]) / "history.json").read_text())["epochs"]
            rows.append((lr, [r["val_accuracy"] for r in history], [r["train_images_per_s"] for r in history], seconds))
            print(f"lr {lr}: val accuracy per epoch {[round(100 * a, 2) for a in rows[-1][1]]}", flush=True)

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        "# Learning rate, measured side by side",
        "",
        f"Measured {dt.date.today()} by `{' '.join([Path(sys.executable).name] + sys.argv)}` on {cpu} "
        f"({os.cpu_count()} cores, torch {torch.__version__}): resnet18, LayerNorm, width {args.width}, batch 128, "
        f"the default recipe otherwise, {'all' if not args.train_subset else args.train_subset} training images of "
        "the CIFAR-10 JPEG export, accuracy on its 10,000 test images after each epoch.",
        "",
        "| lr | " + " | ".join(f"epoch {i + 1}" for i in range(args.epochs)) + " | train images/s | wall s |",
        "|---|" + "---|" * args.epochs + "---|---|",
    ]
    for lr, accs, speeds, seconds in rows:
        lines.append(f"| {lr} | " + " | ".join(f"{100 * a:.2f}%" for a in accs)
                     + f" | {sum(speeds) / len(speeds):.0f} | {seconds:.0f} |")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
