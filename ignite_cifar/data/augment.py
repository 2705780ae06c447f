"""Albumentations pipelines (train: the assignment's augmentation; test: normalize only) and the datasets that apply
them."""

from __future__ import annotations

import json
import random
from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset, TensorDataset


def build_train_transform(config, mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    """Pad + random crop, rotate, optional extras, normalize, then one cutout square filled with zeros.

    The cutout runs after Normalize with fill 0, so the square holds exactly the dataset mean.
    Padding and rotation corners are filled with the mean too (zero after normalization, up to uint8 rounding).
    """
    fill = tuple(float(m * 255.0) for m in mean)
    side = 32 + 2 * config.crop_padding
    steps: list[A.BasicTransform] = []
    if config.p_crop > 0:
        steps.append(A.Sequential([
            A.PadIfNeeded(min_height=side, min_width=side, border_mode=cv2.BORDER_CONSTANT, fill=fill),
            A.RandomCrop(height=32, width=32),
        ], p=config.p_crop))
    if config.p_rotate > 0 and config.rotate_limit > 0:
        steps.append(A.Rotate(limit=(-config.rotate_limit, config.rotate_limit), interpolation=cv2.INTER_LINEAR,
                              border_mode=cv2.BORDER_CONSTANT, fill=fill, p=config.p_rotate))
    if config.p_hflip > 0:
        steps.append(A.HorizontalFlip(p=config.p_hflip))
    if config.p_shift_scale_rotate > 0:
        steps.append(A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
                              border_mode=cv2.BORDER_CONSTANT, fill=fill, p=config.p_shift_scale_rotate))
    if config.p_to_gray > 0:
        steps.append(A.ToGray(num_output_channels=3, p=config.p_to_gray))
    steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    if config.p_cutout > 0 and config.cutout_size > 0:
        size = config.cutout_size
        steps.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(size, size),
                                     hole_width_range=(size, size), fill=0, p=config.p_cutout))
    steps.append(ToTensorV2())
    return A.Compose(steps)


def build_test_transform(mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    return A.Compose([A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()])


def describe(transform: A.BaseCompose) -> list[dict[str, Any]]:
    """The resolved pipeline as plain data (for config.yaml): each transform's name, p and arguments."""
    out = []
    for t in transform.transforms:
        entry: dict[str, Any] = {"name": type(t).__name__, "p": t.p}
        if isinstance(t, A.BaseCompose):
            entry["transforms"] = describe(t)
        else:
            entry.update({k: v for k, v in t.get_transform_init_args().items() if k != "p"})
        out.append(entry)
    return json.loads(json.dumps(out, default=str))  # tuples -> lists, enums -> str: YAML-safe


def normalize_array(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W, normalized like the test transform."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalized N x 3 x H x W -> float N x H x W x 3 in [0, 1], for figures."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * s + m).clamp(0, 1).permute(0, 2, 3, 1).detach().cpu().numpy()


class AugmentedDataset(Dataset):
    """uint8 images + labels through an albumentations transform.

    The random state of each sample is derived from (seed, epoch, index), not from the worker or the
    global RNG: the same epoch gives the same augmentations with any number of workers, and a resumed
    run sees exactly what an uninterrupted one would.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: A.Compose, seed: int):
        self.images, self.labels, self.transform, self.seed = images, labels, transform, seed
        # In shared memory: persistent DataLoader workers keep their own copy of this dataset, and must still
        # see each new epoch (set in the main process before the epoch's indices are handed out).
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        self.transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        image = self.transform(image=self.images[index])["image"]
        return image, int(self.labels[index])


def eval_dataset(images: np.ndarray, labels: np.ndarray, mean, std) -> TensorDataset:
    """The evaluation split normalized once, up front: no per-sample work during evaluation."""
    return TensorDataset(normalize_array(images, mean, std), torch.from_numpy(labels))
