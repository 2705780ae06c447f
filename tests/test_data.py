"""Data: synthetic images, stratified subsets and hold-outs, image folders and their errors, offline CIFAR-10."""

from __future__ import annotations

import socket
import warnings

import numpy as np
import pytest
from PIL import Image

from ignite_cifar.config import make_config
from ignite_cifar.data import datasets as data_mod
from ignite_cifar.data.datasets import (
    channel_stats,
    load_cifar10,
    load_data,
    load_folder,
    stratified_holdout,
    stratified_indices,
    synthetic_split,
)
from ignite_cifar.errors import DataError

from .helpers import write_huge_png


# ---------------------------------------------------------------- synthetic
def test_synthetic_split_is_deterministic_by_seed():
    a, b, c = synthetic_split(60, 10, seed=3), synthetic_split(60, 10, seed=3), synthetic_split(60, 10, seed=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert a.images.dtype == np.uint8 and a.images.shape == (60, 32, 32, 3)
    assert a.labels.dtype == np.int64 and a.labels.min() >= 0 and a.labels.max() <= 9
    assert np.bincount(a.labels, minlength=10).tolist() == [6] * 10
    assert a.images.std() > 10  # not a blank image


def test_synthetic_splits_drawn_once_are_handed_out_as_copies():
    first = synthetic_split(60, 10, seed=5)
    drawn = first.images.copy()
    first.images[:] = 0  # a caller changing its split in place ...
    first.labels[:] = 0
    again = synthetic_split(60, 10, seed=5)  # ... does not change what the next caller gets
    assert np.array_equal(again.images, drawn) and again.labels.max() > 0


def test_one_synthetic_image_in_five_mixes_two_classes_cues():
    """A short run learns the clean images and still has mistakes to explain (about half the mixed ones)."""
    labels = np.arange(1000) % 10
    colour, stripe = data_mod._mixed_cues(labels, 10, np.random.default_rng(0))
    mixed = (colour != labels) | (stripe != labels)
    assert 0.17 < mixed.mean() < 0.23
    assert not ((colour != labels) & (stripe != labels)).any()  # one cue stays the label's


def test_load_data_synthetic_shapes():
    data = load_data(make_config({"dataset": "synthetic", "train_subset": 100, "test_subset": 30}))
    assert data.train.images.shape == (100, 32, 32, 3) and data.train.labels.shape == (100,)
    assert data.test.images.shape == (30, 32, 32, 3) and data.test.labels.shape == (30,)
    assert data.train.images.dtype == np.uint8 and data.val is None
    assert len(data.classes) == 10 and set(np.unique(data.train.labels)) <= set(range(10))
    full = load_data(make_config({"dataset": "synthetic"}))
    assert len(full.train) == data_mod.SYNTHETIC_TRAIN and len(full.test) == data_mod.SYNTHETIC_TEST


# ---------------------------------------------------------------- stratified subsets
def _labels(counts, seed=0):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    return np.random.default_rng(seed).permutation(labels)


@pytest.mark.parametrize("counts, n", [([50] * 10, 95), ([30, 12, 40, 25], 37), ([5, 9, 7], 15)])
def test_stratified_indices_are_balanced_and_deterministic(counts, n):
    labels = _labels(counts)
    idx = stratified_indices(labels, n, seed=1)
    assert np.array_equal(idx, stratified_indices(labels, n, seed=1))
    assert not np.array_equal(idx, stratified_indices(labels, n, seed=2))
    assert len(idx) == n and len(np.unique(idx)) == n
    assert np.all(np.diff(idx) > 0)  # sorted, in index order
    per_class = np.bincount(labels[idx], minlength=len(counts))
    assert per_class.max() - per_class.min() <= 1


def test_stratified_indices_when_a_class_runs_out():
    labels = _labels([2, 20, 20])
    idx = stratified_indices(labels, 30, seed=0)
    per_class = np.bincount(labels[idx], minlength=3)
    assert per_class.tolist()[0] == 2 and sorted(per_class[1:].tolist()) == [14, 14]
    assert len(np.unique(idx)) == 30


def test_stratified_indices_rejects_more_than_the_labels():
    with pytest.raises(DataError, match="larger"):
        stratified_indices(_labels([3, 3]), 7, seed=0)


def test_subset_larger_than_the_split_is_a_data_error():
    with pytest.raises(DataError, match="train_subset"):
        load_data(make_config({"dataset": "synthetic", "train_subset": data_mod.SYNTHETIC_TRAIN + 1}))
    with pytest.raises(DataError, match="test_subset"):
        load_data(make_config({"dataset": "synthetic", "test_subset": data_mod.SYNTHETIC_TEST + 1}))


@pytest.mark.parametrize("counts", [[100] * 4, [90, 10], [200, 50, 30, 20]])
def test_stratified_holdout_holds_out_the_fraction_of_every_class(counts):
    labels = _labels(counts)
    keep, held = stratified_holdout(labels, 0.2, seed=5)
    assert len(np.intersect1d(keep, held)) == 0
    assert np.array_equal(np.union1d(keep, held), np.arange(len(labels)))
    assert abs(len(held) - round(0.2 * len(labels))) <= 1
    for c, n in enumerate(counts):
        assert abs((labels[held] == c).sum() - 0.2 * n) <= 1, c
    again = stratified_holdout(labels, 0.2, seed=5)
    assert np.array_equal(again[0], keep) and np.array_equal(again[1], held)


def test_val_split_in_load_data():
    config = make_config({"dataset": "synthetic", "val_split": 0.2})
    data = load_data(config)
    n = data_mod.SYNTHETIC_TRAIN
    assert len(data.val) == n // 5 and len(data.train) == n - n // 5
    assert np.bincount(data.val.labels, minlength=10).tolist() == [n // 50] * 10
    # val and train are different images of the original training split
    full = load_data(make_config({"dataset": "synthetic"})).train
    keep, held = stratified_holdout(full.labels, 0.2, config.seed)
    assert np.array_equal(data.val.images, full.images[held]) and np.array_equal(data.train.images, full.images[keep])


# ---------------------------------------------------------------- image folders
COLOURS = {"cat": (200, 30, 30), "ant": (30, 200, 30), "bee": (30, 30, 200)}


def _save(path, mode="RGB", size=32, colour=(10, 20, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        img = Image.new("L", (size, size), colour[0])
    elif mode == "RGBA":
        img = Image.new("RGBA", (size, size), (*colour, 255))
    else:
        img = Image.new("RGB", (size, size), colour)
    img.save(path, format=fmt)


@pytest.fixture
def folder(tmp_path):
    """DIR/{train,test}/{cat,ant,bee}: 4/2/3 train images with a grayscale, an RGBA and a 64x64 one; 2 test each."""
    root = tmp_path / "imgs"
    train_counts = {"cat": 4, "ant": 2, "bee": 3}
    for cls, n in train_counts.items():
        for i in range(n):
            _save(root / "train" / cls / f"{i}.png", colour=COLOURS[cls])
        for i in range(2):
            _save(root / "test" / cls / f"{i}.jpg", colour=COLOURS[cls])
    _save(root / "train" / "ant" / "gray.png", mode="L", colour=(77,))
    _save(root / "train" / "bee" / "alpha.png", mode="RGBA", colour=COLOURS["bee"])
    _save(root / "train" / "cat" / "big.jpg", size=64, colour=COLOURS["cat"])
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def test_folder_loads_rgb_32x32_with_sorted_classes(folder):
    data = load_folder(folder, 0, 0, seed=0)
    assert data.classes == ["ant", "bee", "cat"]
    assert data.train.images.shape == (3 + 4 + 5, 32, 32, 3) and data.train.images.dtype == np.uint8
    assert data.test.images.shape == (6, 32, 32, 3)
    assert data.train.labels.tolist() == [0] * 3 + [1] * 4 + [2] * 5
    assert data.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.skipped_images == 0
    # Every image has its class's colour (the grayscale one is grey), so labels match the pictures.
    for split in (data.train, data.test):
        for img, label in zip(split.images, split.labels, strict=True):
            pixel = img.reshape(-1, 3).mean(0)
            if np.allclose(pixel, 77, atol=1):
                continue
            assert np.allclose(pixel, COLOURS[data.classes[label]], atol=4), (label, pixel)
    gray = data.train.images[0:3]
    assert any(np.all(img == 77) for img in gray)  # L -> RGB with three equal channels


def test_folder_subset_decodes_only_selected_files(folder, monkeypatch):
    decoded = []
    real = data_mod._decode

    def spy(path):
        decoded.append(path.name)
        return real(path)

    monkeypatch.setattr(data_mod, "_decode", spy)
    data = load_folder(folder, 3, 3, seed=0)
    assert len(decoded) == 6
    assert sorted(data.train.labels.tolist()) == [0, 1, 2] and sorted(data.test.labels.tolist()) == [0, 1, 2]


def test_folder_through_load_data_with_val_split(folder):
    data = load_data(make_config({"dataset": "folder", "data_dir": str(folder), "val_split": 0.25}))
    assert len(data.val) + len(data.train) == 12 and len(data.val) == 3
    assert sorted(data.val.labels.tolist()) == [0, 1, 2]


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "absent", 0, 0, seed=0)


def test_missing_train_folder(folder):
    import shutil
    shutil.rmtree(folder / "train")
    with pytest.raises(DataError, match="train"):
        load_folder(folder, 0, 0, seed=0)


def test_train_and_test_classes_differ(folder):
    (folder / "test" / "bee").rename(folder / "test" / "wasp")
    with pytest.raises(DataError, match="differ") as info:
        load_folder(folder, 0, 0, seed=0)
    assert "bee" in str(info.value) and "wasp" in str(info.value)


def test_class_folder_without_images(folder):
    (folder / "train" / "dog").mkdir()
    (folder / "test" / "dog").mkdir()
    (folder / "train" / "dog" / "readme.txt").write_text("no pictures")
    with pytest.raises(DataError, match="no images") as info:
        load_folder(folder, 0, 0, seed=0)
    assert "dog" in str(info.value)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_image_names_the_file(folder, kind):
    bad = folder / "train" / "bee" / "x.png"
    if kind == "garbage":
        bad.write_bytes(b"this is not a png at all" * 10)
    else:
        good = (folder / "train" / "bee" / "0.png").read_bytes()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[: len(good) // 2 + 40])
    with pytest.raises(DataError) as info:
        load_folder(folder, 0, 0, seed=0)
    assert "x.png" in str(info.value) and "skip-bad-images" in str(info.value)


def test_skip_bad_images_counts_and_warns(folder):
    (folder / "train" / "bee" / "x.png").write_bytes(b"\x89PNG garbage")
    (folder / "test" / "cat" / "y.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 1"):
        data = load_folder(folder, 0, 0, seed=0, skip_bad_images=True)
    assert data.skipped_images == 2
    assert len(data.train) == 12 and len(data.test) == 6  # the bad files are extra ones
    assert data.train.labels.tolist() == [0] * 3 + [1] * 4 + [2] * 5
    config = make_config({"dataset": "folder", "data_dir": str(folder), "skip_bad_images": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_data(config).skipped_images == 2


def test_an_image_pil_refuses_as_too_large_names_the_file_or_is_skipped(folder):
    write_huge_png(folder / "train" / "bee" / "huge.png")  # 20000 x 10000: PIL raises DecompressionBombError
    with pytest.raises(DataError) as info:
        load_folder(folder, 0, 0, seed=0)
    message = str(info.value)
    assert "huge.png" in message and "DecompressionBombError" in message and "skip-bad-images" in message
    with pytest.warns(UserWarning, match="skipped 1"):
        data = load_folder(folder, 0, 0, seed=0, skip_bad_images=True)
    assert data.skipped_images == 1 and len(data.train) == 12


def test_a_decompression_bomb_warning_made_an_error_is_a_refused_image(folder, monkeypatch):
    # the 64 x 64 big.jpg is over this limit, but not twice over it: PIL only warns, unless told to raise
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(DataError, match="big.jpg .DecompressionBombWarning: Image size .4096 pixels."):
            load_folder(folder, 0, 0, seed=0)


def test_folder_subset_too_big(folder):
    with pytest.raises(DataError, match="train_subset"):
        load_folder(folder, 13, 0, seed=0)


# ---------------------------------------------------------------- torchvision CIFAR-10 offline
def test_cifar10_download_failure_says_how_to_work_offline(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    # Port 9 (discard) on the loopback: nothing listens, so the connection is refused at once.
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    hosts = []
    real_connect = socket.create_connection

    def loopback_only(address, *args, **kwargs):
        hosts.append(address[0])
        if address[0] != "127.0.0.1":
            raise OSError(f"test must stay offline, tried {address}")
        kwargs.pop("timeout", None)
        return real_connect(address, 5, *args[1:], **kwargs)  # a refused connection, never a long wait

    monkeypatch.setattr(socket, "create_connection", loopback_only)
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path / "cifar")
    message = str(info.value)
    assert "--dataset folder" in message and "cifar-10-batches-py" in message
    assert str(tmp_path / "cifar") in message
    assert hosts and set(hosts) == {"127.0.0.1"}


# ---------------------------------------------------------------- statistics
def test_channel_stats_match_numpy():
    images = np.random.default_rng(0).integers(0, 256, size=(7, 32, 32, 3), dtype=np.uint8)
    images[..., 2] //= 3
    mean, std = channel_stats(images)
    x = images.astype(np.float64) / 255.0
    assert np.allclose(mean, x.mean(axis=(0, 1, 2)), atol=1e-6)
    assert np.allclose(std, x.std(axis=(0, 1, 2)), atol=1e-6)
    assert mean[2] < mean[0] / 2


def test_the_val_loader_uses_the_eval_batch_size():
    import torch

    from ignite_cifar.data.loaders import build_dataflow

    config = make_config({"dataset": "synthetic", "train_subset": 64, "test_subset": 30, "eval_batch_size": 7,
                          "batch_size": 16, "num_workers": 0, "augment_on": "cpu"})
    data = data_mod.load_data(config)
    flow = build_dataflow(config, data, [0.5] * 3, [0.25] * 3, torch.device("cpu"))
    assert flow.val_loader.batch_size == 7 and flow.train_loader.batch_size == 16
    assert [len(y) for _, y in flow.val_loader] == [7, 7, 7, 7, 2]
