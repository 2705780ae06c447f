"""Throughput benchmark of the ignite_cifar training path, measured in one process (`make bench`).

What it measures (everything reported is measured by this run; nothing is estimated):

1. Training images/s of the project's Ignite trainer (`engines.create_trainer`, with its `loss` Average and
   `accuracy` metrics attached, run as `trainer.run(batches, max_epochs=1)`) against a plain PyTorch loop
   (zero_grad; loss = criterion(model(x), y); backward; step). Both use `build_model` (resnet18, LayerNorm,
   `--width`), SGD with the Config lr/momentum/weight decay, the same `--steps` pre-made in-memory batches
   (random N(0, 1) float32 images B x 3 x 32 x 32 and labels, already on the device), and a fresh deep copy of
   one initial model for every run. After one untimed warm-up run of each, the variants alternate in ABBA
   order over `--repeats` repeats, and their final weights are compared. The clock covers `trainer.run` /
   the whole loop (CUDA synchronized).
   Reported: median images/s of each and the trainer/plain ratio (median and min..max over repeats).
   On CUDA both use `Precision.resolve("auto", True, device)`: the same autocast dtype, GradScaler and
   channels_last.
2. Data-pipeline images/s: the default train transform (`build_train_transform(Config(), mean, std)` in an
   `AugmentedDataset`) over synthetic uint8 images through a DataLoader with `--workers` (default: Config's, auto)
   and batch
   size (shuffled, collated; pinned on CUDA). The first epoch's first-batch latency (worker start-up) is
   reported on its own; the images/s are the median of later epochs with persistent workers (no start-up).
   The factor is data images/s over the trainer's images/s from part 1 (same width).
3. GradCAM seconds for 20 images as `explain.write_explanations` does it: `GradCAM(model, "layer4")`, one call
   for the predicted and one for the true classes, maps copied to host; median of `--gradcam-repeats`.

Noise: other processes on the same cores slow every number a lot (on 2 CPUs a concurrent pytest run cut
full-width training from ~65 to ~22 images/s). The report therefore also gives the average number of cores that
other processes kept busy (from /proc/stat) for the whole run and for each training repeat; rerun if it is high.

The results are printed and written to `--output` (default benchmarks/speed/RESULTS.md, overwritten).
Defaults (`make bench`): full-width resnet18, batch 128, 4 steps x 4 repeats per variant: about 1.5 minutes on
an idle 2-core CPU. For a less noisy ratio, use more steps at a narrower width, e.g. `--width 0.25 --steps 20`.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import albumentations
import ignite
import torch
from busy_cores import ForeignCpu
from torch import nn
from torch.utils.data import DataLoader

from ignite_cifar.config import Config, coerce
from ignite_cifar.data.augment import AugmentedDataset, build_train_transform, eval_dataset
from ignite_cifar.data.datasets import channel_stats, synthetic_split
from ignite_cifar.data.loaders import resolve_num_workers
from ignite_cifar.explain.gradcam import GradCAM
from ignite_cifar.model.resnet import build_model
from ignite_cifar.training.engines import Precision, create_trainer
from ignite_cifar.training.environment import cpu_name

TARGET_RATIO = 0.98       # trainer images/s over plain-loop images/s
TARGET_DATA_FACTOR = 10.0  # data-pipeline images/s over model training images/s
NUM_CLASSES = 10
BUSY_CORES = 0.25          # above this many cores used by other processes, the verdicts are marked unreliable


def parse_args(argv=None) -> argparse.Namespace:
    cfg = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=cfg.width, help="model channel multiplier (1.0 = full resnet18)")
    p.add_argument("--batch-size", type=int, default=cfg.batch_size, help="training batch size")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per timed run")
    p.add_argument("--repeats", type=int, default=4, help="timed runs of each variant (ABBA order)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    p.add_argument("--data-images", type=int, default=20 * cfg.batch_size, help="images per data-pipeline epoch")
    p.add_argument("--workers", default=cfg.num_workers, help="DataLoader workers of the data pipeline (or auto)")
    p.add_argument("--data-epochs", type=int, default=3, help="timed data-pipeline epochs after the first")
    p.add_argument("--gradcam-repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=cfg.seed)
    p.add_argument("--output", default=str(Path(__file__).with_name("RESULTS.md")))
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Bench:
    """One initial model, the pre-made batches, and fresh identical (model, optimizer, precision) per run."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.cfg, self.device = Config(), device
        torch.manual_seed(args.seed)
        self.template = build_model(self.cfg.model, NUM_CLASSES, self.cfg.norm, args.width)
        self.channels_last = Precision.resolve("auto", device.type == "cuda", device).channels_last
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.template = self.template.to(device, memory_format=fmt)
        g = torch.Generator().manual_seed(args.seed)
        self.batches = [(torch.randn(args.batch_size, 3, 32, 32, generator=g).to(device, memory_format=fmt),
                         torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=g).to(device))
                        for _ in range(args.steps)]
        self.images = args.steps * args.batch_size

    def fresh(self):
        model = copy.deepcopy(self.template)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum,
                                    weight_decay=self.cfg.weight_decay)
        # A new Precision per run: a GradScaler (fp16 GPUs) is stateful.
        precision = Precision.resolve("auto", self.channels_last, self.device)
        return model, optimizer, nn.CrossEntropyLoss().to(self.device), precision

    def run_trainer(self, batches):
        model, optimizer, criterion, precision = self.fresh()
        trainer = create_trainer(model, optimizer, criterion, self.device, precision)
        sync(self.device)
        start = time.perf_counter()
        trainer.run(batches, max_epochs=1)
        sync(self.device)
        return time.perf_counter() - start, model

    def run_plain(self, batches):
        model, optimizer, criterion, precision = self.fresh()
        model.train()
        dtype, scaler = precision.dtype, precision.scaler
        sync(self.device)
        start = time.perf_counter()
        for x, y in batches:
            optimizer.zero_grad()
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                loss = criterion(model(x), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
        sync(self.device)
        return time.perf_counter() - start, model


def bench_training(bench: Bench, repeats: int) -> dict:
    bench.run_trainer(bench.batches[:1])  # warm-up (allocator, kernels), untimed
    bench.run_plain(bench.batches[:1])
    times = {"trainer": [], "plain": []}
    max_diff, foreign = 0.0, []
    for r in range(repeats):
        order = ("trainer", "plain") if r % 4 in (0, 3) else ("plain", "trainer")  # ABBA BAAB ...
        models, cpu = {}, ForeignCpu()
        for name in order:
            seconds, models[name] = getattr(bench, f"run_{name}")(bench.batches)
            times[name].append(seconds)
        foreign.append(cpu.cores())
        # Same init, same batches: both variants must end with (nearly) the same weights.
        max_diff = max(max_diff, max(float((a - b).detach().abs().max()) for a, b in
                                     zip(models["trainer"].parameters(), models["plain"].parameters(), strict=True)))
    ips = {k: [bench.images / t for t in v] for k, v in times.items()}
    ratios = [a / b for a, b in zip(ips["trainer"], ips["plain"], strict=True)]
    return {"trainer_ips": statistics.median(ips["trainer"]), "plain_ips": statistics.median(ips["plain"]),
            "trainer_all": ips["trainer"], "plain_all": ips["plain"], "ratios": ratios,
            "ratio": statistics.median(ratios), "max_weight_diff": max_diff, "foreign": foreign}


def bench_data(args: argparse.Namespace, device: torch.device) -> dict:
    cfg = Config()
    split = synthetic_split(args.data_images, NUM_CLASSES, args.seed)
    mean, std = channel_stats(split.images)
    dataset = AugmentedDataset(split.images, split.labels, build_train_transform(cfg, mean, std), cfg.seed)
    workers = resolve_num_workers(coerce("num_workers", args.workers), 1)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first_batch = time.perf_counter() - start
    for _ in batches:
        pass
    first_epoch = time.perf_counter() - start
    rates = []
    for _ in range(args.data_epochs):
        start = time.perf_counter()
        n = sum(len(y) for _, y in loader)
        rates.append(n / (time.perf_counter() - start))
    del batches, loader  # shuts the persistent workers down
    return {"first_batch_s": first_batch, "first_epoch_ips": len(dataset) / first_epoch,
            "ips": statistics.median(rates), "all": rates, "workers": workers,
            "batch_size": cfg.batch_size, "images": len(dataset)}


def bench_gradcam(bench: Bench, repeats: int, n: int = 20) -> dict:
    split = synthetic_split(n, NUM_CLASSES, bench.cfg.seed + 1)
    mean, std = channel_stats(split.images)
    x = eval_dataset(split.images, split.labels, mean, std).tensors[0].to(bench.device)
    model = copy.deepcopy(bench.template).eval()
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    true = split.labels.tolist()

    def once() -> float:
        sync(bench.device)
        start = time.perf_counter()
        with GradCAM(model, target_layer=bench.cfg.gradcam_layer, method=bench.cfg.gradcam_method) as cam:
            cam(x, class_idx=pred).cpu().numpy()
            cam(x, class_idx=true).cpu().numpy()
        return time.perf_counter() - start

    once()  # warm-up
    seconds = [once() for _ in range(repeats)]
    return {"seconds": statistics.median(seconds), "all": seconds, "images": n}


def caution_line(busiest: float) -> str:
    if busiest > BUSY_CORES:
        return (f"**Caution: other processes kept up to {busiest:.2f} cores busy during this run; the numbers "
                f"are not reliable. Rerun on an otherwise idle machine.**")
    return f"Other processes kept at most {busiest:.2f} cores busy (threshold {BUSY_CORES})."


def setup_lines(args, device, started: datetime.datetime, others: float | None) -> list[str]:
    """Where, with what and how the numbers were measured."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    precision = Precision.resolve("auto", True, device).describe()
    return [
        f"- date: {started.isoformat(timespec='seconds')}",
        f"- machine: {cpu_name()}; os.cpu_count() = {os.cpu_count()}; torch threads = {torch.get_num_threads()}; "
        f"GPU: {gpu}",
        "- CPU used by other processes during the run (from /proc/stat, minus this process and its workers): "
        + (f"{others:.2f} of {os.cpu_count()} cores on average" if others is not None else "unknown"),
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, ignite {ignite.__version__}, "
        f"albumentations {albumentations.__version__}",
        f"- command: `{' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}`",
        f"- model: {Config().model} ({Config().norm} norm), width {args.width}, batch {args.batch_size}, "
        f"device {device}, precision {precision}; {args.steps} steps per timed run, {args.repeats} repeats "
        f"(ABBA order, one warm-up run each first)"]


def report(args, device, train, data, cam, started: datetime.datetime, others: float | None) -> str:
    spread = f"{min(train['ratios']):.3f}..{max(train['ratios']):.3f}"
    factor = data["ips"] / train["trainer_ips"]
    ok_ratio = "PASS" if train["ratio"] >= TARGET_RATIO else "FAIL"
    ok_data = "PASS" if factor >= TARGET_DATA_FACTOR else "FAIL"
    busiest = max((c for c in [others, *train["foreign"]] if c is not None), default=0.0)
    if busiest > BUSY_CORES:
        ok_ratio, ok_data = f"{ok_ratio} (unreliable)", f"{ok_data} (unreliable)"
    fmt = lambda values, d=1: ", ".join(f"{v:.{d}f}" for v in values)  # noqa: E731
    lines = [
        "# ignite_cifar throughput benchmark", "", *setup_lines(args, device, started, others), "",
        "| measurement | value |", "|---|---|",
        f"| Ignite trainer (create_trainer + its metrics), training images/s, median | {train['trainer_ips']:.1f} |",
        f"| plain PyTorch loop, training images/s, median | {train['plain_ips']:.1f} |",
        f"| ratio trainer/plain, median (min..max over repeats) | {train['ratio']:.3f} ({spread}) |",
        f"| data pipeline images/s (workers {data['workers']}, batch {data['batch_size']}, after start-up), "
        f"median | {data['ips']:.0f} |",
        f"| data pipeline first batch (worker start-up), s | {data['first_batch_s']:.2f} |",
        f"| data pipeline first epoch incl. start-up ({data['images']} images), images/s | "
        f"{data['first_epoch_ips']:.0f} |",
        f"| data pipeline / trainer images/s | {factor:.1f}x |",
        f"| GradCAM, {cam['images']} images, pred + true class calls, s, median | {cam['seconds']:.3f} |",
        "",
        f"Per-repeat images/s: trainer [{fmt(train['trainer_all'])}], plain [{fmt(train['plain_all'])}]; "
        f"ratios [{fmt(train['ratios'], 3)}]; cores busy with other processes during each repeat "
        f"[{', '.join('?' if c is None else f'{c:.2f}' for c in train['foreign'])}].",
        f"Largest |weight difference| between the trainer's and the plain loop's models after a run: "
        f"{train['max_weight_diff']:.2e} (same init, same batches).",
        f"Data pipeline images/s per timed epoch: [{fmt(data['all'], 0)}]. "
        f"GradCAM seconds per call pair: [{fmt(cam['all'], 3)}].", "", caution_line(busiest), "",
        f"- trainer/plain ratio target >= {TARGET_RATIO}: {ok_ratio} (median {train['ratio']:.3f}, "
        f"min..max {spread})",
        f"- data pipeline target >= {TARGET_DATA_FACTOR:.0f}x the model's training images/s: {ok_data} "
        f"({factor:.1f}x; measured alone, not while the model trains on the same cores)",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    started = datetime.datetime.now().astimezone()
    foreign = ForeignCpu()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    bench = Bench(args, device)
    print(f"training: width {args.width}, batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats "
          f"per variant on {device} ({torch.get_num_threads()} threads)...", flush=True)
    train = bench_training(bench, args.repeats)
    print("data pipeline...", flush=True)
    data = bench_data(args, device)
    print("GradCAM...", flush=True)
    cam = bench_gradcam(bench, args.gradcam_repeats)
    text = report(args, device, train, data, cam, started, foreign.cores())
    print(text)
    Path(args.output).write_text(text)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
