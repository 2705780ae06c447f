"""The recipe's augmentation as batched tensor ops on the training device (`--augment-on device`).

The uint8 training split is copied to the device once. Every epoch, every sample's random parameters are drawn at
once with numpy from (seed, epoch) and indexed by the sample's position in the split, so they do not depend on the
batch split, the number of processes or where a resumed run starts. A batch is then one gather (pad + crop), one
`affine_grid`/`grid_sample` (rotation), a flip, the normalization and a masked cutout: no worker processes, no
per-sample Python, nothing but the batch's indices crosses to the device during an epoch.

augment.py (albumentations) stays the reference; tests/test_device_augment.py holds this module to it: same
parameters give the same image (crop, flip and cutout exactly, rotation within the tolerance of two bilinear
implementations), and the parameters are drawn from the same distributions:

- crop: with p_crop, offsets uniform over 0..2*crop_padding in the image padded with the mean (RandomCrop);
- rotation: with p_rotate, an angle uniform in [-rotate_limit, rotate_limit] about the image centre, corners filled
  with the mean, bilinear, rounded to whole grey levels (cv2.warpAffine on uint8);
- horizontal flip with p_hflip;
- normalize (the same float32 arithmetic as albumentations' Normalize on uint8);
- cutout: with p_cutout one cutout_size square, filled with 0 after normalization, whose corner is uniform over
  0..32-cutout_size in each axis (CoarseDropout keeps the whole square inside the image).

Not on the device: p_shift_scale_rotate and p_to_gray (`--augment-on device` refuses them; auto picks cpu).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ignite_cifar.config import Config
from ignite_cifar.config_checks import unsupported_extras
from ignite_cifar.errors import ConfigError

STREAM = 2**40  # third word of the epoch's seed: never a sample index (augment.py seeds with (seed, epoch, index))


def resolve_augment_on(config: Config, device_type: str) -> str:
    """`cpu` (albumentations in DataLoader workers) or `device` (this module) for a run on `device_type`.

    auto is `device` on CUDA unless an extra only the CPU pipeline has is on; an explicit `device` with such an
    extra is a ConfigError.
    """
    extras = unsupported_extras(config)
    if config.augment_on == "device" and extras:
        raise ConfigError(f"augment_on: device does not implement {', '.join(extras)}; set them to 0 or use "
                          "--augment-on cpu")
    if config.augment_on == "auto":
        return "device" if device_type == "cuda" and not extras else "cpu"
    return config.augment_on


@dataclass
class AugmentParams:
    """Random parameters, one row per sample: crop offsets in the padded image, rotation, flip, cutout corner."""

    offset_y: torch.Tensor  # int64, 0..2*pad (pad where the crop is not applied: the image stays where it is)
    offset_x: torch.Tensor
    rotate: torch.Tensor    # bool
    angle: torch.Tensor     # float64, degrees, counter-clockwise as shown (albumentations' sign)
    flip: torch.Tensor      # bool
    cutout: torch.Tensor    # bool
    cut_y: torch.Tensor     # int64, top row of the square
    cut_x: torch.Tensor

    def take(self, index: torch.Tensor) -> "AugmentParams":
        return AugmentParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device) -> "AugmentParams":
        return AugmentParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def draw_params(config: Config, n: int, seed: int, epoch: int, side: int = 32) -> AugmentParams:
    """The parameters of all `n` samples of one epoch, drawn at once (vectorized) from (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, STREAM])
    pad, size, limit = config.crop_padding, config.cutout_size, float(config.rotate_limit)
    # Each parameter is drawn for every sample, applied or not, so that each draw's position in the stream is fixed.
    crop = rng.random(n) < config.p_crop
    offsets = rng.integers(0, 2 * pad + 1, size=(2, n))
    offsets[:, ~crop] = pad
    rotate = (rng.random(n) < config.p_rotate) & (limit > 0)
    angle = rng.uniform(-limit, limit, size=n)
    flip = rng.random(n) < config.p_hflip
    cutout = (rng.random(n) < config.p_cutout) & (size > 0)
    corners = rng.integers(0, max(side - size, 0) + 1, size=(2, n))
    t = torch.from_numpy
    return AugmentParams(t(offsets[0]), t(offsets[1]), t(rotate), t(angle), t(flip), t(cutout), t(corners[0]),
                         t(corners[1]))


class DeviceAugment:
    """The training transform on a batch of uint8 N x H x W x 3 images already on the device."""

    def __init__(self, config: Config, mean: Sequence[float], std: Sequence[float], device: torch.device):
        if unsupported_extras(config):
            raise ConfigError(f"augment_on: device does not implement {', '.join(unsupported_extras(config))}")
        self.pad, self.size = config.crop_padding, config.cutout_size
        self.rotates = config.p_rotate > 0 and config.rotate_limit > 0
        self.flips = config.p_hflip > 0
        # albumentations pads with the mean as the uint8 image holds it: rounded to a whole grey level
        mean255 = torch.tensor(mean, dtype=torch.float32) * 255.0  # as albumentations' Normalize computes it
        fill = torch.round(torch.tensor(mean, dtype=torch.float64) * 255.0)
        self.fill = fill.float().view(1, 3, 1, 1).to(device)
        self.fill_u8 = fill.to(torch.uint8).view(1, 1, 1, 3).to(device)
        self.mean255 = mean255.view(1, 3, 1, 1).to(device)
        self.inv_std255 = torch.reciprocal(torch.tensor(std, dtype=torch.float32) * 255.0).view(1, 3, 1, 1).to(device)
        self.device = device

    def __call__(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """uint8 B x H x W x 3 (device) + the batch's parameters (device) -> normalized float32 B x 3 x H x W."""
        x = self.crop(images, params)
        x = self.rotate(x, params)
        if self.flips:
            x = torch.where(params.flip.view(-1, 1, 1, 1), x.flip(3), x)
        x = (x - self.mean255) * self.inv_std255
        return self.cut(x, params)

    def crop(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Pad with the mean, then take each sample's window: one gather from a strided view of all windows."""
        b, h, w, c = images.shape
        pad = self.pad
        padded = self.fill_u8.expand(b, h + 2 * pad, w + 2 * pad, c).clone()
        padded[:, pad:pad + h, pad:pad + w] = images
        windows = padded.unfold(1, h, 1).unfold(2, w, 1)  # B x (2pad+1) x (2pad+1) x C x H x W, a view
        batch = torch.arange(b, device=images.device)
        return windows[batch, params.offset_y, params.offset_x].float()  # B x C x H x W

    def rotate(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Rotate about the centre, bilinear, corners filled with the mean, rounded to whole grey levels."""
        if not self.rotates:
            return x
        if x.device.type == "cpu":  # only the rotated samples (on a GPU, choosing them would wait for the device)
            which = params.rotate.nonzero().flatten()
            out = x.clone()
            if len(which):
                out[which] = self._rotated(x[which], params.angle[which])
            return out
        return torch.where(params.rotate.view(-1, 1, 1, 1), self._rotated(x, params.angle), x)

    def _rotated(self, x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        rad = torch.deg2rad(angle)
        cos, sin = torch.cos(rad), torch.sin(rad)
        zero = torch.zeros_like(cos)
        # output -> input coordinates (normalized, square image): the inverse of cv2's rotation matrix
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1).float()
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Sample (image - fill) with zero padding, then add the fill back: outside the image is the fill, and the
        # edge pixels blend with it as cv2's BORDER_CONSTANT does.
        rotated = F.grid_sample(x - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return torch.round(rotated + self.fill).clamp_(0, 255)

    def cut(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """One size x size square set to 0 (the mean, after normalization) where the cutout applies."""
        b, _, h, w = x.shape
        ar_h = torch.arange(h, device=x.device).view(1, h, 1)
        ar_w = torch.arange(w, device=x.device).view(1, 1, w)
        y0, x0 = params.cut_y.view(-1, 1, 1), params.cut_x.view(-1, 1, 1)
        square = (ar_h >= y0) & (ar_h < y0 + self.size) & (ar_w >= x0) & (ar_w < x0 + self.size)
        return x.masked_fill((square & params.cutout.view(-1, 1, 1)).view(b, 1, h, w), 0.0)


class DeviceTrainLoader:
    """The training batches of one process, augmented on the device: what ignite's Engine runs in place of a
    DataLoader. The order and the shard come from `sampler` (a ResumableSampler: the DistributedSampler order,
    and the batches a resumed epoch skips); `set_epoch` picks the epoch's parameters."""

    def __init__(self, config: Config, images: np.ndarray, labels: np.ndarray, mean: Sequence[float],
                 std: Sequence[float], sampler, batch_size: int, device: torch.device):
        self.config, self.sampler, self.batch_size, self.device = config, sampler, batch_size, device
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)  # uint8 N x H x W x 3
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.augment = DeviceAugment(config, mean, std, device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def epoch_params(self) -> AugmentParams:
        return draw_params(self.config, len(self.labels), self.config.seed, self.epoch,
                           side=self.images.shape[1]).to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: the order and the parameters are read when the epoch's first batch is asked for, after
        # the trainer's EPOCH_STARTED handlers have set the epoch.
        indices = torch.tensor(list(iter(self.sampler)), dtype=torch.int64, device=self.device)
        params = self.epoch_params()
        for start in range(0, len(indices), self.batch_size):
            index = indices[start:start + self.batch_size]
            yield self.augment(self.images[index], params.take(index)), self.labels[index]
