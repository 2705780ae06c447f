"""Data sets -> uint8 N x 32 x 32 x 3 arrays + integer labels + class names, and deterministic splits."""

from __future__ import annotations

import functools
import os
import urllib.error
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ignite_cifar.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 5000, 1000
# What PIL raises for a file it will not decode: not an image, truncated, or (DecompressionBomb*, which are not
# OSErrors) more pixels than PIL.Image.MAX_IMAGE_PIXELS allows (the warning, where a filter makes it an error).
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
              Image.DecompressionBombWarning)


@dataclass
class Split:
    """Images as one uint8 N x 32 x 32 x 3 array (not N objects) and int64 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> "Split":
        return Split(self.images[index], self.labels[index])


@dataclass
class DataSplits:
    train: Split
    test: Split
    classes: list[str]
    val: Split | None = None  # None: the test split is used as val
    skipped_images: int = 0


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A deterministic subset of `n` indices with classes as balanced as the split allows, in index order."""
    if n > len(labels):
        raise DataError(f"a subset of {n} is larger than the split, which has {len(labels)} images")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    # Round-robin over classes so every class gets n // k (+1 for the first n % k) while it has images.
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        for c in classes:
            if depth < len(per_class[c]) and len(chosen) < n:
                chosen.append(int(per_class[c][depth]))
        depth += 1
    return np.sort(np.asarray(chosen, dtype=np.int64))


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, held_out) with about `fraction` of every class held out."""
    n_out = int(round(len(labels) * fraction))
    # Proportional per class (largest remainder), not balanced: a small class must not be emptied.
    rng = np.random.default_rng(seed + 1)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * fraction
    take = np.floor(exact).astype(np.int64)
    take[np.argsort(-(exact - take), kind="stable")[: n_out - int(take.sum())]] += 1
    parts = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    held = np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.empty(0, dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held)
    return keep, held


def _subset(split: Split, n: int, seed: int, name: str) -> Split:
    if n == 0:
        return split
    if n > len(split):
        raise DataError(f"{name}: {n} is larger than the split, which has {len(split)} images")
    return split.take(stratified_indices(split.labels, n, seed))


# ---------------------------------------------------------------- synthetic
# One synthetic image in five shows the colour of its class and the stripes of another, or the other way round: the
# label then follows either cue, at random, so no model gets those right more than about half the time. A short run
# learns the rest perfectly and still ends with mistakes to show (about 50 of the smoke run's 500 test images).
SYNTHETIC_MIXED = 0.2


def synthetic_split(n: int, num_classes: int, seed: int) -> Split:
    """Learnable images: each class is a colour and a stripe orientation, plus noise; one in five (SYNTHETIC_MIXED)
    mixes the cues of two classes. Deterministic by seed."""
    images, labels = _synthetic_arrays(n, num_classes, seed)
    return Split(images.copy(), labels.copy())


@functools.lru_cache(maxsize=4)
def _synthetic_arrays(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """synthetic_split's arrays, drawn once per process (a Python loop: about 0.8 s for the 6,000 images of a
    synthetic run, which every run in one process, such as a test worker, would otherwise draw again)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    colour, stripe = _mixed_cues(labels, num_classes, rng)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    palette = np.random.default_rng(1234).uniform(40, 215, size=(num_classes, 3)).astype(np.float32)
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        angle = np.pi * stripe[i] / num_classes
        stripes = 30 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.8 + rng.uniform(0, 2 * np.pi))
        img = palette[colour[i]] + stripes[..., None] + rng.normal(0, 20, size=(32, 32, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def _mixed_cues(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(colour class, stripe class) of each image: the label's for both, except for a SYNTHETIC_MIXED fraction,
    where one of the two is another class's."""
    colour, stripe = labels.copy(), labels.copy()
    if num_classes < 2:
        return colour, stripe
    mixed = rng.random(len(labels)) < SYNTHETIC_MIXED
    other = (labels + rng.integers(1, num_classes, len(labels))) % num_classes
    colour_is_other = rng.random(len(labels)) < 0.5
    colour[mixed & colour_is_other] = other[mixed & colour_is_other]
    stripe[mixed & ~colour_is_other] = other[mixed & ~colour_is_other]
    return colour, stripe


# ---------------------------------------------------------------- image folder
def _list_class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataError(f"folder data set: {root} is missing; expected DIR/train/<class>/* and DIR/test/<class>/*")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _decode(path: Path) -> np.ndarray:
    """One image as RGB 32x32 uint8: other modes are converted, other sizes resized."""
    with Image.open(path) as img:
        img.load()
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (32, 32):
            img = img.resize((32, 32), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def unreadable_reason(exc: Exception) -> str:
    """Why an image was refused, for a one-line error: the exception's name, and for a decompression bomb PIL's
    own words (its size and the limit)."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"{type(exc).__name__}: {str(exc).split(', could be')[0]}"
    return type(exc).__name__


def _decode_all(paths: list[Path], skip_bad: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode `paths` in a thread pool; returns (images, mask of the paths that decoded)."""
    images = np.zeros((len(paths), 32, 32, 3), dtype=np.uint8)
    ok = np.ones(len(paths), dtype=bool)

    def work(i: int) -> None:
        try:
            images[i] = _decode(paths[i])
        except UNREADABLE as exc:
            if not skip_bad:
                raise DataError(f"cannot read image {paths[i]} ({unreadable_reason(exc)}); "
                                "fix or delete it, or pass --skip-bad-images") from None
            ok[i] = False

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        list(pool.map(work, range(len(paths))))
    return images, ok


def load_folder(data_dir: str | os.PathLike, train_subset: int, test_subset: int, seed: int,
                skip_bad_images: bool = False) -> DataSplits:
    """DIR/train/<class>/* and DIR/test/<class>/*; only the files a subset selects are decoded."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data-dir {root} does not exist; point --data-dir at a folder with train/ and test/ inside")
    classes = _list_class_folders(root / "train")
    if not classes:
        raise DataError(f"folder data set: {root / 'train'} has no class folders")
    test_classes = _list_class_folders(root / "test")
    if test_classes != classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise DataError(f"folder data set: train and test class folders differ "
                        f"(only in train: {only_train or 'none'}; only in test: {only_test or 'none'})")
    splits, skipped = {}, 0
    for name, subset in (("train", train_subset), ("test", test_subset)):
        paths: list[Path] = []
        labels: list[int] = []
        for label, cls in enumerate(classes):
            files = _list_images(root / name / cls)
            if not files:
                raise DataError(f"folder data set: class folder {root / name / cls} has no images")
            paths += files
            labels += [label] * len(files)
        label_arr = np.asarray(labels, dtype=np.int64)
        if subset:
            if subset > len(paths):
                raise DataError(f"{name}_subset: {subset} is larger than the split, which has {len(paths)} images")
            index = stratified_indices(label_arr, subset, seed)
            paths, label_arr = [paths[i] for i in index], label_arr[index]
        images, ok = _decode_all(paths, skip_bad_images)
        if not ok.all():
            bad = int((~ok).sum())
            skipped += bad
            warnings.warn(f"skipped {bad} unreadable image(s) in {root / name}", stacklevel=2)
            images, label_arr = images[ok], label_arr[ok]
        splits[name] = Split(images, label_arr)
    return DataSplits(splits["train"], splits["test"], classes, skipped_images=skipped)


# ---------------------------------------------------------------- torchvision CIFAR-10
def load_cifar10(data_dir: str | os.PathLike) -> DataSplits:
    """torchvision's CIFAR10 under data_dir, downloaded when absent."""
    from torchvision.datasets import CIFAR10

    root = Path(data_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        train = CIFAR10(str(root), train=True, download=True)
        test = CIFAR10(str(root), train=False, download=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(
            f"could not download CIFAR-10 into {root} ({reason}). Offline? Put the extracted "
            f"'cifar-10-batches-py' folder into {root}, or train from images with "
            "--dataset folder --data-dir DIR (DIR/train/<class>/*, DIR/test/<class>/*)") from None
    return DataSplits(Split(np.asarray(train.data, dtype=np.uint8), np.asarray(train.targets, dtype=np.int64)),
                      Split(np.asarray(test.data, dtype=np.uint8), np.asarray(test.targets, dtype=np.int64)),
                      list(train.classes))


def load_data(config) -> DataSplits:
    """The configured data set as arrays, subset and split as the config says."""
    if config.dataset == "synthetic":
        classes = [f"class{i}" for i in range(10)]
        data = DataSplits(synthetic_split(SYNTHETIC_TRAIN, 10, config.seed),
                          synthetic_split(SYNTHETIC_TEST, 10, config.seed + 10_000), classes)
    elif config.dataset == "folder":
        data = load_folder(config.data_dir, config.train_subset, config.test_subset, config.seed,
                           config.skip_bad_images)
    else:
        data = load_cifar10(config.data_dir)
    if config.dataset != "folder":  # the folder loader subsets before decoding
        data.train = _subset(data.train, config.train_subset, config.seed, "train_subset")
        data.test = _subset(data.test, config.test_subset, config.seed, "test_subset")
    if config.val_split > 0:
        keep, held = stratified_holdout(data.train.labels, config.val_split, config.seed)
        if len(held) == 0 or len(keep) == 0:
            raise DataError(f"val_split: {config.val_split} of {len(data.train)} training images leaves an empty split")
        data.val, data.train = data.train.take(held), data.train.take(keep)
    return data


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images, in [0, 1] units."""
    channels = [images[..., c] for c in range(3)]  # one channel at a time keeps temporaries small
    mean = [round(float(ch.mean(dtype=np.float64)) / 255.0, 6) for ch in channels]
    # floor at one grey level: a constant channel would otherwise divide by zero in Normalize
    std = [max(round(float(ch.std(dtype=np.float64)) / 255.0, 6), 1 / 255) for ch in channels]
    return mean, std
