"""Builders the tests share, imported by name: tiny configs and where the repository and the real images are."""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
import tarfile
import zlib
from pathlib import Path
from types import ModuleType

import pytest

from ignite_cifar.config import make_config, read_yaml

REPO = Path(__file__).resolve().parents[1]
# Channel statistics for the augmentation tests: 255 * mean is never a whole grey level, so no uint8 pixel normalizes
# to exactly 0, and a fill with the mean is rounded as the uint8 image holds it.
MEAN = (0.31, 0.52, 0.73)
STD = (0.21, 0.23, 0.19)
ASSIGNMENT_RECIPE = read_yaml("assignment")  # the assignment's recipe, field by field (configs/assignment.yaml)
ARCHIVE = Path(os.environ.get("IGNITE_CIFAR_ARCHIVE", REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))


def load_benchmark(name: str) -> ModuleType:
    """A benchmarks/<room>/ script as a module, registered under its name (dataclasses and the scripts' imports of
    each other look it up there), its room on sys.path for the scripts it imports."""
    if name in sys.modules:
        return sys.modules[name]
    path, = (REPO / "benchmarks").glob(f"*/{name}.py")
    if str(path.parent) not in sys.path:  # its imports of the scripts beside it resolve as when it is run
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_config(tmp_path: Path, **overrides):
    """A seconds-long synthetic run of the assignment recipe (SGD, no weight average: the machinery under test, not
    the default recipe, which has its own tests): narrow ResNet18, small subsets, no workers, 3 mistakes explained,
    no probe (the probe is tested on the real-image run, tests/conftest.py), fp32 (so that a saved run evaluated in
    fp32 gives the very numbers the run recorded; bf16 has its own tests)."""
    values = dict(ASSIGNMENT_RECIPE)
    values.update(dataset="synthetic", width=0.0625, epochs=2, batch_size=50, lr=0.02, train_subset=300,
                  test_subset=100, num_workers=0, output_dir=str(tmp_path / "runs"), run_name="tiny", log_every=2,
                  n_misclassified=3, probe_every=0, amp="off")
    values.update(overrides)
    return make_config(values)


def write_huge_png(path: Path, width: int = 20000, height: int = 10000) -> Path:
    """A valid black 1-bit PNG of width x height (20000 x 10000: 200 megapixels, beyond PIL's decompression-bomb
    limit), written by hand in about 0.05 s and 0.1 MB (PIL's own encoder takes about a second)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(bytes(((width + 7) // 8 + 1) * height), 1)  # each row: filter byte 0, then zeros
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def require_archive() -> None:
    """Skip a test that needs the real-image archive when it is absent, except in CI, where that is a failure."""
    if not ARCHIVE.is_file():
        if os.environ.get("IGNITE_CIFAR_REQUIRE_ARCHIVE"):
            pytest.fail(f"IGNITE_CIFAR_REQUIRE_ARCHIVE is set but {ARCHIVE} does not exist")
        pytest.skip(f"{ARCHIVE} not found")


# The real-image tests use this many images of each class from the archive (cifar10-jpeg/<split>/<class>/NNNN.jpg):
# enough for the stratified subsets they train on, while creating 5,000 files instead of 60,000 (about 20 s of file
# system work on these machines).
REAL_PER_CLASS = {"train": 400, "test": 100}


def archive_members(tar: tarfile.TarFile, per_class: dict[str, int] = REAL_PER_CLASS):
    """The archive's folders and, in each split's class folders, the first `per_class[split]` images."""
    for member in tar:
        parts = Path(member.name).parts  # cifar10-jpeg, split, class, NNNN.jpg
        if member.isdir() or len(parts) != 4 or int(Path(parts[3]).stem) < per_class[parts[1]]:
            yield member


def extract_real_images(dest: Path, per_class: dict[str, int] = REAL_PER_CLASS) -> Path:
    """Part of the real archive (archive_members) extracted under dest: the image folder's path."""
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(dest, members=archive_members(tar, per_class), filter="data")
    return dest / "cifar10-jpeg"


def write_real_archive(dest: Path, per_class: dict[str, int]) -> Path:
    """A smaller copy of the real archive, same layout, with the first `per_class` images of each class."""
    with tarfile.open(ARCHIVE) as src, tarfile.open(dest, "w:gz", compresslevel=1) as out:
        for member in archive_members(src, per_class):
            out.addfile(member, src.extractfile(member) if member.isfile() else None)
    return dest


KILL_RANK_1_AT = 8  # tiny_config's runs on 2 processes take 6 iterations an epoch: this is epoch 2's second


def train_in_process_killing_rank_1(local_rank: int, plan, result) -> None:
    """launch.train_in_process, except that process 1 kills itself with SIGKILL, as the kernel's OOM killer would,
    when iteration KILL_RANK_1_AT starts. A test puts this in place of launch.train_in_process (the spawned processes
    unpickle it from this module), so the package itself needs no hook for it."""
    import signal

    from ignite.engine import Events

    from ignite_cifar.training import engines, launch

    if local_rank == 1:
        real = engines.create_trainer

        def create_trainer(*args, **kwargs):
            trainer = real(*args, **kwargs)
            trainer.add_event_handler(Events.ITERATION_STARTED(once=KILL_RANK_1_AT),
                                      lambda _: os.kill(os.getpid(), signal.SIGKILL))
            return trainer

        engines.create_trainer = create_trainer
    launch.train_in_process(local_rank, plan, result)
