"""What the GradCAM probe costs per explained epoch: GradCAM of the probe images for the predicted and the true
class, the figure, and its PNG into a TensorBoard event file, timed as the training handler runs them.

    python benchmarks/faithfulness/probe_cost.py --width 1.0 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch.utils.tensorboard import SummaryWriter

from ignite_cifar.config import Config
from ignite_cifar.data.datasets import channel_stats, synthetic_split
from ignite_cifar.explain.probe import TAG, GradCAMProbe
from ignite_cifar.explain.settings import ExplainSettings, LabelledImages
from ignite_cifar.model.resnet import build_model


def main(argv=None) -> None:
    cfg = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=cfg.width)
    p.add_argument("--probe-size", type=int, default=cfg.probe_size)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    test = synthetic_split(1000, 10, cfg.seed)
    mean, std = channel_stats(test.images)
    model = build_model(cfg.model, 10, cfg.norm, args.width).to(device)
    images = LabelledImages(test, [f"class{i}" for i in range(10)], mean, std)
    probe = GradCAMProbe(model, images, ExplainSettings(), device, args.probe_size, cfg.seed)
    seconds = []
    with tempfile.TemporaryDirectory() as folder:
        writer = SummaryWriter(folder)
        for epoch in range(args.repeats + 1):  # the first is a warm-up
            start = time.perf_counter()
            writer.add_figure(TAG, probe.figure(epoch), global_step=epoch, close=True)
            writer.flush()
            seconds.append(time.perf_counter() - start)
        writer.close()
    timed = seconds[1:]
    print(f"probe of {args.probe_size} images, width {args.width}, {device} ({torch.get_num_threads()} threads): "
          f"median {statistics.median(timed):.3f} s per explained epoch "
          f"(min {min(timed):.3f}, max {max(timed):.3f}, {len(timed)} repeats)")


if __name__ == "__main__":
    main()
