"""A run's DataLoaders: the augmented training loader with its resumable sampler, and the val loader."""

from __future__ import annotations

from dataclasses import dataclass

import ignite.distributed as idist
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .augment import AugmentedDataset, build_train_transform, eval_dataset
from .config import Config, resolve_num_workers
from .data import DataSplits, Split
from .stopping import ignore_stop_signals


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
    train_dataset: AugmentedDataset
    sampler: ResumableSampler
    train_loader: DataLoader
    val_loader: DataLoader
    val_split: Split
    workers: int  # DataLoader workers of the node, as resolved from --num-workers


def build_dataflow(config: Config, data: DataSplits, mean, std, device: torch.device) -> Dataflow:
    """The training loader (albumentations per sample, persistent workers) and the val loader (normalized once)."""
    rank, world = idist.get_rank(), idist.get_world_size()
    train_ds = AugmentedDataset(data.train.images, data.train.labels, build_train_transform(config, mean, std),
                                config.seed)
    sampler = ResumableSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    pin = device.type == "cuda"
    workers = resolve_num_workers(config.num_workers, idist.get_nproc_per_node())
    # Persistent workers: no start-up pause at every epoch (AugmentedDataset shares its epoch with them).
    train_loader = idist.auto_dataloader(train_ds, batch_size=config.batch_size, sampler=sampler,
                                         num_workers=workers, pin_memory=pin, drop_last=False,
                                         persistent_workers=workers > 0,
                                         worker_init_fn=ignore_stop_signals if workers else None)
    val_split = data.val if data.val is not None else data.test
    val_loader = idist.auto_dataloader(eval_dataset(val_split.images, val_split.labels, mean, std),
                                       batch_size=max(config.batch_size, 256), shuffle=False, num_workers=0,
                                       pin_memory=pin)
    return Dataflow(train_ds, sampler, train_loader, val_loader, val_split, workers)


def shut_down_workers(loader: DataLoader) -> None:
    """End a loader's persistent workers now. Left to interpreter exit, multiprocessing would stop them with a
    SIGTERM, which they ignore (stopping.ignore_stop_signals), and wait for them forever."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None
