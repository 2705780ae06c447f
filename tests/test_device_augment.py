"""The device path (`--augment-on device`) held to albumentations (augment.py), the reference: same parameters give
the same image, the parameters follow the same distributions, and runs stay deterministic and resumable (its
data-parallel run: tests/test_train.py's two gloo processes)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from scipy import stats

from ignite_cifar import cli
from ignite_cifar.config import make_config
from ignite_cifar.data.augment import build_train_transform
from ignite_cifar.data.device_augment import (
    AugmentParams,
    DeviceAugment,
    DeviceTrainLoader,
    draw_params,
    resolve_augment_on,
)
from ignite_cifar.data.loaders import ResumableSampler
from ignite_cifar.errors import ConfigError, TrainingStopped
from ignite_cifar.training import engines
from ignite_cifar.training.launch import train

from .helpers import MEAN, STD, tiny_config

CPU = torch.device("cpu")
ALPHA = 1e-3  # significance of the distribution tests (fixed seeds: each gives the same p-value on every run)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)


def _grey_levels(x: torch.Tensor) -> torch.Tensor:
    """Normalized 3 x H x W -> grey levels (float64, not rounded)."""
    return x.double() * (torch.tensor(STD).double().view(3, 1, 1) * 255) + torch.tensor(MEAN).double().view(3, 1, 1) \
        * 255


def _albumentations_draws(config, n: int, seed: int = 0):
    """n images through the albumentations train transform, with the parameters each draw applied."""
    transform = A.Compose(build_train_transform(config, MEAN, STD).transforms, save_applied_params=True)
    for k in range(n):
        image = _image(seed + k)
        transform.set_random_state(np.random.default_rng((seed, k)), random.Random(k))
        out = transform(image=image)
        yield image, out["image"], dict(out["applied_transforms"])


def _params_of(applied: dict) -> AugmentParams:
    """albumentations' applied parameters as the device path's (one sample)."""
    x0, y0, _, _ = applied["RandomCrop"]["crop_coords"] if "RandomCrop" in applied else (4, 4, 0, 0)
    matrix = applied.get("Rotate", {}).get("matrix")
    angle = math.degrees(math.atan2(matrix[0, 1], matrix[0, 0])) if matrix is not None else 0.0
    hx0, hy0, _, _ = applied["CoarseDropout"]["holes"][0] if "CoarseDropout" in applied else (0, 0, 0, 0)

    def one(v, dtype=torch.int64):
        return torch.tensor([v], dtype=dtype)

    return AugmentParams(one(int(y0)), one(int(x0)), one(matrix is not None, torch.bool), one(angle, torch.float64),
                         one("HorizontalFlip" in applied, torch.bool), one("CoarseDropout" in applied, torch.bool),
                         one(int(hy0)), one(int(hx0)))


# ---------------------------------------------------------------- same parameters, same image
@pytest.mark.parametrize("p_hflip", [0.0, 1.0])
def test_crop_flip_and_cutout_equal_albumentations_exactly(p_hflip):
    config = make_config({"p_rotate": 0.0, "p_cutout": 1.0, "p_hflip": p_hflip})
    device = DeviceAugment(config, MEAN, STD, CPU)
    corners = set()
    for image, reference, applied in _albumentations_draws(config, 60):
        params = _params_of(applied)
        corners.add((int(params.offset_y), int(params.offset_x)))
        out = device(torch.from_numpy(image)[None], params)[0]
        assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
        assert torch.equal(out, reference)  # bit for bit: same pixels, same float32 normalization
    assert len(corners) > 20  # the crops really moved


def test_rotation_equals_albumentations_within_one_grey_level():
    """Tolerance: cv2.warpAffine on uint8 (what albumentations runs) interpolates in fixed point, with coordinates
    in 1/32 pixel, then rounds; grid_sample interpolates in float32, then we round. On random-noise images (the
    steepest gradients) no pixel differs by more than 1 grey level and fewer than 2% differ at all."""
    config = make_config({"p_rotate": 1.0, "p_cutout": 1.0})
    device = DeviceAugment(config, MEAN, STD, CPU)
    differing, angles = [], []
    for image, reference, applied in _albumentations_draws(config, 60):
        params = _params_of(applied)
        angles.append(float(params.angle))
        out = device(torch.from_numpy(image)[None], params)[0]
        diff = (_grey_levels(out) - _grey_levels(reference)).abs()
        assert float(diff.max()) <= 1.0 + 1e-3
        assert torch.equal(out == 0, reference == 0)  # the cutout square exactly (no other pixel normalizes to 0)
        differing.append(float((diff > 1e-3).double().mean()))
    assert np.mean(differing) < 0.02
    assert max(angles) > 3 and min(angles) < -3  # rotated both ways, across the range


def test_a_rotation_by_the_wrong_angle_is_seen():
    """The comparison above is not blind: 0.5 degree off gives many pixels off by more than one grey level."""
    config = make_config({"p_rotate": 1.0, "p_cutout": 0.0})
    device = DeviceAugment(config, MEAN, STD, CPU)
    image, reference, applied = next(_albumentations_draws(config, 1))
    params = _params_of(applied)
    params.angle += 0.5
    diff = (_grey_levels(device(torch.from_numpy(image)[None], params)[0]) - _grey_levels(reference)).abs()
    assert float((diff > 1.5).double().mean()) > 0.2


# ---------------------------------------------------------------- same distributions
DISTRIBUTION_CONFIG = {"p_hflip": 0.3, "p_crop": 0.8}


@pytest.fixture(scope="module")
def reference_params():
    """albumentations' own parameters over 3000 draws of the recipe (with a flip and a crop that may not apply)."""
    config = make_config(DISTRIBUTION_CONFIG)
    ref = [_params_of(applied) for _, _, applied in _albumentations_draws(config, 3000)]
    return {f: np.array([float(getattr(p, f)) for p in ref]) for f in AugmentParams.__dataclass_fields__}


def _chi2_two_sample(a, b, categories) -> float:
    table = np.array([[np.sum(a == c) for c in categories], [np.sum(b == c) for c in categories]])
    return stats.chi2_contingency(table).pvalue


def test_parameters_follow_albumentations_distributions(reference_params):
    """Two-sample tests, device draws against albumentations' own: chi-square on the crop offsets (0..8 in each
    axis), the cutout corner (0..16 in each axis) and each probability; Kolmogorov-Smirnov on the angle. Plus
    one-sample tests of the device draws against the distributions read from albumentations' source."""
    ref, n_dev = reference_params, 30000
    dev = draw_params(make_config(DISTRIBUTION_CONFIG), n_dev, seed=5, epoch=0)
    for name in ("offset_y", "offset_x"):
        assert _chi2_two_sample(ref[name], getattr(dev, name).numpy(), range(9)) > ALPHA, name
    # the crop's probability: (4, 4) is what "not cropped" looks like (and a crop to the centre, 1/81 of crops)
    centred_ref = (ref["offset_y"] == 4) & (ref["offset_x"] == 4)
    centred_dev = ((dev.offset_y == 4) & (dev.offset_x == 4)).numpy()
    assert _chi2_two_sample(centred_ref, centred_dev, (False, True)) > ALPHA
    cut_ref, cut_dev = ref["cutout"] > 0, dev.cutout.numpy()
    for name in ("cut_y", "cut_x"):
        assert _chi2_two_sample(ref[name][cut_ref], getattr(dev, name).numpy()[cut_dev], range(17)) > ALPHA, name
    for flag in ("rotate", "flip", "cutout"):
        assert _chi2_two_sample(ref[flag] > 0, getattr(dev, flag).numpy(), (False, True)) > ALPHA, flag
    rotated_ref, rotated_dev = ref["rotate"] > 0, dev.rotate.numpy()
    assert stats.ks_2samp(ref["angle"][rotated_ref], dev.angle.numpy()[rotated_dev]).pvalue > ALPHA

    # against the distributions themselves (albumentations 2.0.8: RandomCrop int((40 - 32 + 1) * random()),
    # Rotate uniform(-5, 5), CoarseDropout integers(0, 32 - 16 + 1), `random() < p` for each probability)
    full_crop = draw_params(make_config({}), n_dev, seed=6, epoch=0)
    for name in ("offset_y", "offset_x"):
        counts = np.bincount(getattr(full_crop, name).numpy())
        assert len(counts) == 9 and stats.chisquare(counts).pvalue > ALPHA
    for name in ("cut_y", "cut_x"):
        counts = np.bincount(getattr(dev, name).numpy()[cut_dev])
        assert len(counts) == 17 and stats.chisquare(counts).pvalue > ALPHA
    assert stats.kstest(dev.angle.numpy(), stats.uniform(loc=-5, scale=10).cdf).pvalue > ALPHA
    for flag, p in (("rotate", 0.5), ("cutout", 0.5), ("flip", 0.3)):
        assert stats.binomtest(int(getattr(dev, flag).sum()), n_dev, p).pvalue > ALPHA, flag


def test_the_distribution_tests_reject_plausible_mistakes(reference_params):
    """The tests above are not blind: at the same significance they reject offsets over 0..7, a classic cutout (a
    centre anywhere, the square clipped at the border, so its top row 0..23) and an angle within +-4.5 degrees."""
    ref, rng = reference_params, np.random.default_rng(0)
    assert _chi2_two_sample(ref["offset_y"], rng.integers(0, 8, 30000), range(9)) < ALPHA
    classic_top = np.clip(rng.integers(0, 32, 30000) - 8, 0, None)
    assert _chi2_two_sample(ref["cut_y"][ref["cutout"] > 0], classic_top, range(24)) < ALPHA
    assert stats.ks_2samp(ref["angle"][ref["rotate"] > 0], rng.uniform(-4.5, 4.5, 30000)).pvalue < ALPHA


# ---------------------------------------------------------------- determinism: any batch split, any world size
def _loader(config, images, world=1, rank=0, batch_size=7, skip=0):
    sampler = ResumableSampler(range(len(images)), num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    sampler.skip = skip
    return DeviceTrainLoader(config, images, np.arange(len(images)), MEAN, STD, sampler, batch_size, CPU)


def _epoch(loader, epoch: int) -> dict[int, torch.Tensor]:
    """{sample index: augmented image} of one epoch (the labels are the indices)."""
    loader.sampler.set_epoch(epoch)
    loader.set_epoch(epoch)
    return {int(i): x for xs, ys in loader for x, i in zip(xs, ys, strict=True)}


def test_same_seed_same_images_with_any_batch_split_and_world_size():
    config = make_config({"p_hflip": 0.5, "seed": 3})
    images = np.stack([_image(i) for i in range(23)])
    one = _epoch(_loader(config, images, batch_size=23), 2)
    assert sorted(one) == list(range(23))
    small = _epoch(_loader(config, images, batch_size=4), 2)
    two = {**_epoch(_loader(config, images, world=2, rank=0, batch_size=5), 2),
           **_epoch(_loader(config, images, world=2, rank=1, batch_size=5), 2)}
    for i in range(23):
        assert torch.equal(one[i], small[i]) and torch.equal(one[i], two[i])
    other_epoch = _epoch(_loader(config, images), 3)
    other_seed = _epoch(_loader(make_config({"p_hflip": 0.5, "seed": 4}), images), 2)
    assert sum(not torch.equal(one[i], other_epoch[i]) for i in range(23)) > 15
    assert sum(not torch.equal(one[i], other_seed[i]) for i in range(23)) > 15


def test_shards_are_distributed_sampler_shards_and_a_resumed_epoch_skips_what_it_trained():
    config = make_config({})
    images = np.stack([_image(i) for i in range(20)])
    full = _loader(config, images, world=2, rank=1, batch_size=3)
    full.sampler.set_epoch(1)
    full.set_epoch(1)
    from torch.utils.data.distributed import DistributedSampler

    expected = DistributedSampler(range(20), num_replicas=2, rank=1, shuffle=True, seed=config.seed)
    expected.set_epoch(1)
    assert [int(i) for _, ys in full for i in ys] == list(expected)
    assert len(full) == 4  # 10 samples in batches of 3
    straight = [(x, y) for x, y in full]
    resumed = _loader(config, images, world=2, rank=1, batch_size=3, skip=6)  # 2 batches trained already
    resumed.sampler.set_epoch(1)
    resumed.set_epoch(1)
    tail = list(resumed)
    assert len(tail) == 2 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                  for a, b in zip(tail, straight[2:], strict=True))
    assert len(list(resumed)) == 4  # the skip applies once


# ---------------------------------------------------------------- choosing the path
def test_auto_is_device_on_cuda_only_and_device_refuses_what_it_lacks():
    assert resolve_augment_on(make_config({}), "cuda") == "device"
    assert resolve_augment_on(make_config({}), "cpu") == "cpu"
    assert resolve_augment_on(make_config({"augment_on": "device"}), "cpu") == "device"
    assert resolve_augment_on(make_config({"augment_on": "cpu"}), "cuda") == "cpu"
    assert resolve_augment_on(make_config({"p_to_gray": 0.1}), "cuda") == "cpu"  # auto keeps the full pipeline
    for extra in ("p_shift_scale_rotate", "p_to_gray"):
        with pytest.raises(ConfigError, match=f"augment_on: device does not implement {extra}"):
            make_config({"augment_on": "device", extra: 0.2})


def test_cli_refuses_the_device_path_with_an_extra_it_lacks(capsys):
    assert cli.main(["train", "--augment-on", "device", "--p-to-gray", "0.1", "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert "p_to_gray" in err and "--augment-on cpu" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- whole runs
def _history(run_dir) -> list[dict]:
    return json.loads((Path(run_dir) / "history.json").read_text())["epochs"]


def _val(run_dir) -> list[tuple]:
    return [(r["val_loss"], r["val_accuracy"], r["lr"], r["iteration"]) for r in _history(run_dir)]


def _small(tmp_path, **kw):
    return tiny_config(tmp_path, augment_on="device", train_subset=120, test_subset=40, batch_size=20,
                       probe_every=0, explain_at_end=False, **kw)


@pytest.fixture(scope="module")
def straight_device_run(tmp_path_factory):
    result = train(_small(tmp_path_factory.mktemp("device"), run_name="straight"))
    return Path(result["run_dir"])


def test_a_device_run_records_its_data_path(straight_device_run):
    import yaml

    derived = yaml.safe_load((straight_device_run / "config.yaml").read_text())["derived"]
    assert derived["augment_on"] == "device" and derived["data_workers"] == 0
    assert [r["iteration"] for r in _history(straight_device_run)] == [6, 12]


def test_interrupted_mid_epoch_and_resumed_equals_the_straight_device_run(straight_device_run, tmp_path,
                                                                          monkeypatch):
    from ignite.engine import Events

    real = engines.create_trainer

    def with_a_signal(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.add_event_handler(Events.ITERATION_STARTED(once=8), lambda _: os.kill(os.getpid(), signal.SIGTERM))
        return trainer

    monkeypatch.setattr(engines, "create_trainer", with_a_signal)
    with pytest.raises(TrainingStopped, match="iteration 8;"):
        train(_small(tmp_path, run_name="halves"))
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / "halves"
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    # every batch seen once, in order, with the same augmentations: the val metrics equal the straight run's
    assert _val(run_dir) == _val(straight_device_run)
