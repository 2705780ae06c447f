"""A run's loaders: the augmented training loader with its resumable sampler, and the val loader.

The training loader is a DataLoader of albumentations workers (`--augment-on cpu`) or, with `--augment-on device`,
a device_augment.DeviceTrainLoader: the same sampler (order, shard, resume skip), the same epoch seeding."""

from __future__ import annotations

import os
from dataclasses import dataclass

import ignite.distributed as idist
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from ignite_cifar.config import AUTO, MAX_AUTO_WORKERS, Config
from ignite_cifar.data.augment import AugmentedDataset, build_train_transform, eval_dataset
from ignite_cifar.data.datasets import DataSplits, Split
from ignite_cifar.data.device_augment import DeviceTrainLoader, resolve_augment_on
from ignite_cifar.signals import ignore_stop_signals


def resolve_num_workers(num_workers: int | str, nproc_per_node: int, cores: int | None = None,
                        device_type: str = "cuda") -> int:
    """The DataLoader workers for the whole node: a number as given, or for `auto` the cores this process may use
    less one per training process, at most MAX_AUTO_WORKERS per process (ignite divides them among processes); on
    a CPU device one per process where a core is left for it: one worker fed a 2-core CPU's training at 600
    images/s with a fifth of a core, and the cores are worth more as torch threads
    (benchmarks/speed/THREAD-BUDGET.md)."""
    if num_workers != AUTO:
        return int(num_workers)
    cores = usable_cores() if cores is None else cores
    per_process = 1 if device_type == "cpu" else MAX_AUTO_WORKERS
    return max(0, min(cores - nproc_per_node, per_process * nproc_per_node))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_torch_threads(config: Config, device_type: str, nproc_per_node: int, cores: int | None = None,
                          environ: dict[str, str] | None = None) -> int | None:
    """Intra-op threads for one training process on a CPU: a number as given; for `auto`, None (leave them) when
    OMP_NUM_THREADS is set, else the cores of one process less the DataLoader workers that feed it (none on the
    device-augmentation path), at least 1. A thread more than the free cores costs more than it gives: each parallel
    region waits for whichever thread the scheduler put off the CPU (benchmarks/speed/THREAD-BUDGET.md)."""
    if config.torch_threads != AUTO:
        return int(config.torch_threads)
    if "OMP_NUM_THREADS" in (os.environ if environ is None else environ):
        return None
    cores = usable_cores() if cores is None else cores
    workers = 0
    if resolve_augment_on(config, device_type) == "cpu":
        workers = resolve_num_workers(config.num_workers, nproc_per_node, cores, device_type)
    workers_per_process = -(-workers // nproc_per_node)  # ignite gives each process its share, rounded up
    return max(1, cores // nproc_per_node - workers_per_process)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process: the order depends only on seed and epoch) that can skip
    the batches an interrupted epoch already trained on, once, when a run resumes mid-epoch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


@dataclass
class Dataflow:
    train_dataset: AugmentedDataset | DeviceTrainLoader  # what is told the epoch (set_epoch) besides the sampler
    sampler: ResumableSampler
    train_loader: DataLoader | DeviceTrainLoader
    val_loader: DataLoader
    val_split: Split
    workers: int  # DataLoader workers of the node, as resolved from --num-workers (0 on the device path)
    augment_on: str = "cpu"  # where the training images are augmented: cpu or device


def build_dataflow(config: Config, data: DataSplits, mean, std, device: torch.device) -> Dataflow:
    """The training loader (albumentations per sample in persistent workers, or batched on the device) and the val
    loader (normalized once)."""
    rank, world = idist.get_rank(), idist.get_world_size()
    val_split = data.val if data.val is not None else data.test
    pin = device.type == "cuda"
    val_loader = idist.auto_dataloader(eval_dataset(val_split.images, val_split.labels, mean, std),
                                       batch_size=config.eval_batch_size, shuffle=False, num_workers=0,
                                       pin_memory=pin)
    if resolve_augment_on(config, device.type) == "device":
        sampler = ResumableSampler(range(len(data.train)), num_replicas=world, rank=rank, shuffle=True,
                                   seed=config.seed)
        # the global batch split among the processes, as idist.auto_dataloader splits it
        batch_size = config.batch_size // world if config.batch_size >= world else config.batch_size
        loader = DeviceTrainLoader(config, data.train.images, data.train.labels, mean, std, sampler, batch_size,
                                   device)
        return Dataflow(loader, sampler, loader, val_loader, val_split, 0, "device")
    train_ds = AugmentedDataset(data.train.images, data.train.labels, build_train_transform(config, mean, std),
                                config.seed)
    sampler = ResumableSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    workers = resolve_num_workers(config.num_workers, idist.get_nproc_per_node(), device_type=device.type)
    # Persistent workers: no start-up pause at every epoch (AugmentedDataset shares its epoch with them).
    train_loader = idist.auto_dataloader(train_ds, batch_size=config.batch_size, sampler=sampler,
                                         num_workers=workers, pin_memory=pin, drop_last=False,
                                         persistent_workers=workers > 0,
                                         worker_init_fn=ignore_stop_signals if workers else None)
    return Dataflow(train_ds, sampler, train_loader, val_loader, val_split, workers)


def shut_down_workers(loader: DataLoader) -> None:
    """End a loader's persistent workers now. Left to interpreter exit, multiprocessing would stop them with a
    SIGTERM, which they ignore (signals.ignore_stop_signals), and wait for them forever."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None
