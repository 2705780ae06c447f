"""Augmentation: the recipe is really applied (checked on pixels), test transform, determinism, describe()."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from ignite_cifar.config import make_config
from ignite_cifar.data.augment import (
    AugmentedDataset,
    build_test_transform,
    build_train_transform,
    denormalize,
    describe,
    eval_dataset,
    normalize_array,
)

from .helpers import MEAN, REPO, STD

FILL = np.array(MEAN) * 255.0


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)


def _smooth_image():
    """A smooth, asymmetric pattern: rotations by different angles look clearly different."""
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    r = 127 + 100 * np.sin(xx * 0.35 + 0.2 * yy)
    g = 127 + 100 * np.cos(yy * 0.3 - 0.1 * xx)
    b = 40 + 5 * xx + 2 * yy
    return np.clip(np.stack([r, g, b], -1), 0, 255).round().astype(np.uint8)


def _unnormalize(t: torch.Tensor) -> np.ndarray:
    """Normalized 3 x H x W tensor -> H x W x 3 float in 0..255 (not rounded, not clamped)."""
    m = torch.tensor(MEAN).view(3, 1, 1)
    s = torch.tensor(STD).view(3, 1, 1)
    return ((t.double() * s + m) * 255.0).permute(1, 2, 0).numpy()


def _config(**kw):
    return make_config(kw)


def _draws(config, image, n):
    ds = AugmentedDataset(np.stack([image] * 4), np.zeros(4, dtype=np.int64),
                          build_train_transform(config, MEAN, STD), seed=7)
    for epoch in range(n):
        ds.set_epoch(epoch)
        yield ds[epoch % 4][0]


# ---------------------------------------------------------------- the recipe, on pixels
def test_pad_and_random_crop_shift_the_image():
    config = _config(p_crop=1.0, p_rotate=0.0, p_cutout=0.0)
    image = _image(1)
    padded = np.empty((40, 40, 3))
    padded[:] = FILL
    padded[4:36, 4:36] = image
    shifts = []
    for out in _draws(config, image, 30):
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        pixels = _unnormalize(out)
        assert np.abs(pixels - pixels.round()).max() < 1e-3  # still whole uint8 values: no interpolation
        found = []
        for oy in range(9):
            for ox in range(9):
                window = padded[oy:oy + 32, ox:ox + 32]
                inside = np.zeros((40, 40), bool)
                inside[4:36, 4:36] = True
                inside = inside[oy:oy + 32, ox:ox + 32]
                # image pixels exactly; the padding is the fill up to uint8 rounding
                if (np.array_equal(pixels[inside].round(), window[inside])
                        and np.all(np.abs(pixels[~inside] - window[~inside]) <= 0.5 + 1e-6)):
                    found.append((oy - 4, ox - 4))
        assert len(found) == 1, found
        shifts.append(found[0])
    assert all(abs(dy) <= 4 and abs(dx) <= 4 for dy, dx in shifts)
    assert len(set(shifts)) >= 5  # really random, not always (0, 0)
    assert any(abs(dy) == 4 or abs(dx) == 4 for dy, dx in shifts)  # the full padding is used


def _rotate(image, angle):
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    return cv2.warpAffine(image.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(FILL))


def _best_angle(image, pixels):
    yy, xx = np.mgrid[0:32, 0:32]
    centre = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 12 ** 2  # away from the filled corners
    candidates = np.round(np.arange(-10, 10.001, 0.1), 1)
    errors = [np.abs(_rotate(image, a)[centre] - pixels[centre]).mean() for a in candidates]
    best = int(np.argmin(errors))
    return float(candidates[best]), float(errors[best]), float(np.abs(image[centre] - pixels[centre]).mean())


def test_rotation_stays_within_five_degrees():
    config = _config(p_crop=0.0, p_rotate=1.0, p_cutout=0.0)
    image = _smooth_image()
    angles = []
    for out in _draws(config, image, 25):
        pixels = _unnormalize(out)
        angle, error, _ = _best_angle(image, pixels)
        assert error < 2.0, (angle, error)  # the output is a rotation of the input
        angles.append(angle)
    assert max(abs(a) for a in angles) <= 5.0 + 0.15
    assert max(abs(a) for a in angles) > 3.0  # really rotated, with angles across the range
    assert min(angles) < 0 < max(angles)


def test_rotation_estimate_can_see_a_larger_angle():
    """The angle estimate used above is not blind: a 9 degree rotation is measured as about 9."""
    image = _smooth_image()
    angle, error, unrotated_error = _best_angle(image, _rotate(image, 9.0))
    assert abs(angle - 9.0) <= 0.15 and error < 0.5 < unrotated_error


def test_cutout_cuts_exactly_one_16x16_square():
    config = _config(p_crop=0.0, p_rotate=0.0, p_cutout=1.0)
    image = _image(2)
    expected = build_test_transform(MEAN, STD)(image=image)["image"]
    assert not (expected == 0).any()
    corners = set()
    for out in _draws(config, image, 30):
        zero = (out == 0)
        assert torch.equal(zero.all(0), zero.any(0))  # a cut pixel is zero in every channel
        ys, xs = np.nonzero(zero.all(0).numpy())
        assert len(ys) == 256
        assert ys.max() - ys.min() == 15 and xs.max() - xs.min() == 15  # one 16 x 16 square
        square = torch.zeros(32, 32, dtype=torch.bool)
        square[ys.min():ys.min() + 16, xs.min():xs.min() + 16] = True
        assert torch.allclose(out[:, ~square], expected[:, ~square], atol=1e-5)
        corners.add((int(ys.min()), int(xs.min())))
    assert len(corners) >= 10  # the square moves


def test_cutout_size_follows_the_config():
    config = _config(p_crop=0.0, p_rotate=0.0, p_cutout=1.0, cutout_size=8)
    out = next(_draws(config, _image(3), 1))
    assert int((out == 0).all(0).sum()) == 64


def test_recipe_probabilities_are_used():
    """With the shipped p=0.5 some samples are rotated/cut and some are not."""
    config = _config(p_crop=0.0)
    image = _image(4)
    plain = build_test_transform(MEAN, STD)(image=image)["image"]
    cut = [bool((out == 0).all(0).any()) for out in _draws(config, image, 40)]
    changed = [not torch.allclose(out, plain) for out in _draws(config, image, 40)]
    assert 5 < sum(cut) < 35 and not all(changed) and any(changed)


def test_test_transform_is_normalize_only():
    image = _image(5)
    out = build_test_transform(MEAN, STD)(image=image)["image"]
    assert isinstance(out, torch.Tensor) and out.shape == (3, 32, 32) and out.dtype == torch.float32
    expected = (image.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
    assert np.allclose(out.numpy(), expected.transpose(2, 0, 1), atol=1e-5)
    batch = normalize_array(image[None], MEAN, STD)
    assert torch.allclose(batch[0], out, atol=1e-5)
    dataset = eval_dataset(image[None], np.array([3]), MEAN, STD)
    assert torch.allclose(dataset[0][0], out, atol=1e-5) and int(dataset[0][1]) == 3


# ---------------------------------------------------------------- determinism
def _dataset(seed=11):
    images = np.stack([_image(i) for i in range(6)])
    config = _config()  # the recipe: crop, p=0.5 rotate, p=0.5 cutout
    return AugmentedDataset(images, np.arange(6), build_train_transform(config, MEAN, STD), seed=seed)


def test_augmented_dataset_is_deterministic_by_seed_epoch_index():
    a, b = _dataset(), _dataset()
    a.set_epoch(3)
    b.set_epoch(3)
    forward = [a[i][0] for i in range(6)]
    backward = [b[i][0] for i in reversed(range(6))][::-1]
    for x, y in zip(forward, backward, strict=True):
        assert torch.equal(x, y)
    # interleaving other reads (and the global RNGs) does not matter either
    np.random.seed(123)
    torch.manual_seed(123)
    _ = a[0], a[5], a[0]
    assert torch.equal(a[2][0], forward[2])
    assert [a[i][1] for i in range(6)] == list(range(6))


def test_augmented_dataset_changes_with_epoch_and_seed():
    a = _dataset()
    a.set_epoch(0)
    first = [a[i][0] for i in range(6)]
    a.set_epoch(1)
    second = [a[i][0] for i in range(6)]
    assert sum(not torch.equal(x, y) for x, y in zip(first, second, strict=True)) >= 5
    other = _dataset(seed=12)
    other.set_epoch(0)
    assert sum(not torch.equal(x, other[i][0]) for i, x in enumerate(first)) >= 5
    a.set_epoch(0)
    assert all(torch.equal(a[i][0], first[i]) for i in range(6))


# ---------------------------------------------------------------- describe
def _names(entries):
    return [e["name"] for e in entries]


def test_describe_the_recipe():
    described = describe(build_train_transform(_config(), MEAN, STD))
    yaml.safe_load(yaml.safe_dump(described))  # plain data
    assert _names(described) == ["Sequential", "Rotate", "Normalize", "CoarseDropout", "ToTensorV2"]
    assert _names(described[0]["transforms"]) == ["PadIfNeeded", "RandomCrop"]
    assert described[0]["transforms"][0]["min_height"] == 40
    assert described[1]["limit"] == [-5.0, 5.0] and described[1]["p"] == 0.5
    assert described[3]["hole_height_range"] == [16, 16] and described[3]["num_holes_range"] == [1, 1]
    assert np.allclose(described[2]["mean"], MEAN)


def test_describe_optional_transforms_only_when_on():
    off = describe(build_train_transform(_config(p_crop=0.0, p_rotate=0.0, p_cutout=0.0), MEAN, STD))
    assert _names(off) == ["Normalize", "ToTensorV2"]
    on = describe(build_train_transform(_config(p_hflip=0.5, p_shift_scale_rotate=0.3, p_to_gray=0.1), MEAN, STD))
    yaml.safe_dump(on)
    assert _names(on) == ["Sequential", "Rotate", "HorizontalFlip", "Affine", "ToGray", "Normalize",
                          "CoarseDropout", "ToTensorV2"]
    test = describe(build_test_transform(MEAN, STD))
    assert _names(test) == ["Normalize", "ToTensorV2"]
    yaml.safe_dump(test)


# ---------------------------------------------------------------- normalize / denormalize
def test_denormalize_inverts_normalize():
    images = np.stack([_image(i) for i in range(3)])
    x = normalize_array(images, MEAN, STD)
    assert x.shape == (3, 3, 32, 32)
    back = denormalize(x, MEAN, STD)
    assert back.shape == (3, 32, 32, 3)
    assert np.allclose(back, images / 255.0, atol=1e-5)


@pytest.mark.slow
def test_persistent_workers_see_each_new_epoch():
    """The trainer keeps its DataLoader workers across epochs: each epoch must still get its own augmentations,
    the same ones as without workers."""
    from torch.utils.data import DataLoader

    def epochs(loader, ds):
        out = []
        for epoch in range(3):
            ds.set_epoch(epoch)
            out.append(torch.cat([x for x, _ in loader]))
        return out

    ds = _dataset()
    with_workers = epochs(DataLoader(ds, batch_size=3, num_workers=1, persistent_workers=True), ds)
    ds_plain = _dataset()
    in_process = epochs(DataLoader(ds_plain, batch_size=3, num_workers=0), ds_plain)
    for a, b in zip(with_workers, in_process, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(with_workers[0], with_workers[1])


@pytest.mark.slow
def test_albumentations_asks_no_server_for_updates_unless_the_user_wants_it():
    """Its import-time version check is a network call in every process a run starts."""
    probe = ("import os, ignite_cifar.data.augment; "
             "print(os.environ['NO_ALBUMENTATIONS_UPDATE'])")
    for given, expected in ((None, "1"), ("0", "0")):
        env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
        env.update({} if given is None else {"NO_ALBUMENTATIONS_UPDATE": given})
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True,
                             check=True)
        assert out.stdout.strip() == expected
