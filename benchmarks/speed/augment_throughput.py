"""Images/s of the two training data paths: albumentations in DataLoader workers (`--augment-on cpu`) against the
batched tensor ops of device_augment.py (`--augment-on device`), on whatever device this runs on.

What it measures (all measured by this run):

1. The augmentation alone: one epoch of `--images` synthetic 32x32 uint8 images through each training loader
   exactly as loaders.build_dataflow builds it (the recipe: crop, rotate p 0.5, cutout p 0.5), batch
   `--batch-size`, after one untimed warm-up epoch (persistent workers started); median images/s over
   `--repeats` epochs. albumentations with each worker count in `--workers`; the device path in this process.
2. The whole training step: the project's Ignite trainer (`engines.create_trainer`, resnet18 LayerNorm at
   `--width`, SGD) fed by each loader for `--train-batches` batches, a fresh copy of one initial model per run;
   the variants alternate, `--repeats` runs each; median images/s.

Other processes on the same cores slow everything; the report gives the cores they kept busy (from /proc/stat).
Writes `--output` (default benchmarks/speed/AUGMENT-CPU.md on CPU, AUGMENT-GPU.md on CUDA).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from busy_cores import ForeignCpu  # noqa: E402

from ignite_cifar.config import Config  # noqa: E402
from ignite_cifar.data.augment import AugmentedDataset, build_train_transform  # noqa: E402
from ignite_cifar.data.datasets import channel_stats, synthetic_split  # noqa: E402
from ignite_cifar.data.device_augment import DeviceTrainLoader  # noqa: E402
from ignite_cifar.data.loaders import ResumableSampler  # noqa: E402
from ignite_cifar.model.resnet import build_model  # noqa: E402
from ignite_cifar.training.engines import Precision, create_trainer  # noqa: E402
from ignite_cifar.training.environment import cpu_name  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=5120, help="images per augmentation epoch")
    p.add_argument("--train-batches", type=int, default=16, help="training steps per timed run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", default="1,2", help="DataLoader worker counts of the albumentations path")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    p.add_argument("--output", default=None)
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Loaders:
    """The training loaders of both paths over the same synthetic split, built as build_dataflow builds them."""

    def __init__(self, args, device: torch.device):
        self.cfg, self.device, self.batch_size = Config(), device, args.batch_size
        self.split = synthetic_split(args.images, 10, self.cfg.seed)
        self.mean, self.std = channel_stats(self.split.images)

    def _sampler(self):
        return ResumableSampler(range(len(self.split)), num_replicas=1, rank=0, shuffle=True, seed=self.cfg.seed)

    def device_path(self):
        sampler = self._sampler()
        loader = DeviceTrainLoader(self.cfg, self.split.images, self.split.labels, self.mean, self.std, sampler,
                                   self.batch_size, self.device)
        return loader, (sampler, loader)

    def cpu_path(self, workers: int):
        dataset = AugmentedDataset(self.split.images, self.split.labels,
                                   build_train_transform(self.cfg, self.mean, self.std), self.cfg.seed)
        sampler = ResumableSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=self.cfg.seed)
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, sampler=sampler,
                                             num_workers=workers, pin_memory=self.device.type == "cuda",
                                             persistent_workers=workers > 0)
        return loader, (sampler, dataset)


def set_epoch(targets, epoch: int) -> None:
    for t in targets:
        t.set_epoch(epoch)


def bench_augment(loader, targets, device, repeats: int) -> list[float]:
    rates = []
    for epoch in range(repeats + 1):  # epoch 0: warm-up (workers start, allocator)
        set_epoch(targets, epoch)
        sync(device)
        start = time.perf_counter()
        n = 0
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            n += len(x)
        sync(device)
        if epoch:
            rates.append(n / (time.perf_counter() - start))
    return rates


def bench_training(variants: dict, template: nn.Module, device, batches: int, repeats: int, batch_size: int):
    cfg = Config()
    rates = {name: [] for name in variants}
    for r in range(repeats + 1):  # r 0: warm-up
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            loader, targets = variants[name]
            set_epoch(targets, r)
            model = copy.deepcopy(template)
            optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay)
            trainer = create_trainer(model, optimizer, nn.CrossEntropyLoss().to(device), device,
                                     Precision.resolve("auto", False, device))
            sync(device)
            start = time.perf_counter()
            trainer.run(loader, max_epochs=1, epoch_length=batches)
            sync(device)
            if r:
                rates[name].append(batches * batch_size / (time.perf_counter() - start))
    return rates


def report(args, device, started, variants, augment, train, busy) -> str:
    """The markdown report: the setup, then each data path's median images/s (augmentation alone, training);
    busy holds the cores other processes kept busy during the augmentation runs and during the training runs."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    fmt = lambda xs: ", ".join(f"{x:.0f}" for x in xs)  # noqa: E731
    lines = [
        "# Training data paths: albumentations workers vs batched tensor ops", "",
        f"- date: {started.isoformat(timespec='seconds')}",
        f"- machine: {cpu_name()}; {len(__import__('os').sched_getaffinity(0))} cores; torch threads "
        f"{torch.get_num_threads()}; GPU: {gpu}; device {device}",
        f"- versions: python {platform.python_version()}, torch {torch.__version__}",
        f"- command: `{' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}`",
        f"- data: {args.images} synthetic 32x32 images, the recipe (pad-4 crop, rotate +-5 p 0.5, cutout 16 p 0.5), "
        f"batch {args.batch_size}; training: resnet18 LayerNorm width {args.width}, fp32, "
        f"{args.train_batches} steps per run; {args.repeats} timed runs each after one warm-up",
        "- cores kept busy by other processes: "
        + ", ".join(f"{label} {c:.2f}" if c is not None else f"{label} unknown" for label, c in
                    zip(("during the augmentation runs", "during the training runs"), busy, strict=True)), "",
        "| data path | augmentation alone, images/s (median) | training step, images/s (median) |",
        "|---|---|---|"]
    for name in variants:
        lines.append(f"| {name} | {statistics.median(augment[name]):.0f} | {statistics.median(train[name]):.0f} |")
    lines += ["", "Per run, images/s: " + "; ".join(
        f"{name}: augmentation [{fmt(augment[name])}], training [{fmt(train[name])}]" for name in variants)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    started = datetime.datetime.now().astimezone()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    foreign = ForeignCpu()
    loaders = Loaders(args, device)
    workers = [int(w) for w in args.workers.split(",") if w != ""]
    variants = {"device path (in process)": loaders.device_path()}
    for w in workers:
        variants[f"albumentations, {w} worker{'s' if w != 1 else ''}"] = loaders.cpu_path(w)

    augment = {}
    for name, (loader, targets) in variants.items():
        print(f"augmentation alone: {name}...", flush=True)
        augment[name] = bench_augment(loader, targets, device, args.repeats)
    augment_foreign = foreign.cores()

    torch.manual_seed(Config().seed)
    template = build_model(Config().model, 10, Config().norm, args.width).to(device)
    print(f"training steps at width {args.width}...", flush=True)
    train_foreign = ForeignCpu()
    train = bench_training(variants, template, device, args.train_batches, args.repeats, args.batch_size)
    train_foreign = train_foreign.cores()

    text = report(args, device, started, variants, augment, train, (augment_foreign, train_foreign))
    print(text)
    out = Path(args.output or Path(__file__).with_name(f"AUGMENT-{'GPU' if device.type == 'cuda' else 'CPU'}.md"))
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
