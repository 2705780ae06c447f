"""Shared fixtures: a finished tiny run, the real-image archive extracted, a smoke run on the real images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ignite_cifar.config import make_config

from .helpers import extract_real_images, require_archive, tiny_config

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one thread each (and in the CLI processes they start), since
    # OpenMP threads that spin while waiting for a core slow everything down many times over.
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One finished tiny run shared by the tests that only read its outputs."""
    from ignite_cifar.training.launch import train

    tmp = tmp_path_factory.mktemp("smoke")
    config = tiny_config(tmp, run_name="smoke")
    result = train(config)
    return Path(result["run_dir"]), result


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory):
    """The real CIFAR-10 JPEG export (the first REAL_PER_CLASS images of each class), extracted once; skipped (or
    failed in CI) when the archive is absent."""
    require_archive()
    return extract_real_images(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="session")
def real_smoke_run(cifar_folder, tmp_path_factory):
    """The shipped smoke config on the real images, with the GradCAM probe after every epoch: (run folder,
    train()'s result, config)."""
    from ignite_cifar.config import read_yaml
    from ignite_cifar.training.launch import train

    tmp = tmp_path_factory.mktemp("real")
    config = make_config({**read_yaml("smoke"), "dataset": "folder", "data_dir": str(cifar_folder),
                          "output_dir": str(tmp), "run_name": "real", "probe_every": 1})
    result = train(config)
    return Path(result["run_dir"]), result, config
