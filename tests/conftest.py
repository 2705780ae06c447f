"""Shared fixtures: a finished tiny run, the real-image archive extracted, a smoke run on the real images; the `slow`
mark held to its meaning, and the files that start processes scheduled first."""

from __future__ import annotations

import collections
import multiprocessing.process
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

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


# `slow` (setup.cfg): the test starts a process (a CLI, a benchmark script, a notebook kernel, a TensorBoard server,
# spawned data-parallel workers, DataLoader workers, torch.compile's C++ compiler). `make test-quick` leaves those out;
# a test without the mark that starts a Python process, a shell script or multiprocessing workers fails, so that the
# quick tier stays what it says.
SCRIPT_RUNNERS = {"bash", "sh", "make"}


def _starts_python_or_a_script(args) -> bool:
    program = Path(str(args if isinstance(args, (str, bytes, os.PathLike)) else args[0]).split()[0])
    return program.name in SCRIPT_RUNNERS or program.parent == Path(sys.executable).parent


def _unmarked_process(what: str):
    return AssertionError(f"this test starts {what} but is not marked @pytest.mark.slow (tests/conftest.py)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if item.get_closest_marker("slow"):
        yield
        return
    execute_child = subprocess.Popen._execute_child

    def checked_execute_child(self, args, *rest, **kwargs):
        if _starts_python_or_a_script(args):
            raise _unmarked_process(f"a process ({args if isinstance(args, str) else ' '.join(map(str, args))})")
        return execute_child(self, args, *rest, **kwargs)

    def refused_start(self):
        raise _unmarked_process(f"a multiprocessing process ({type(self).__name__})")

    with mock.patch.object(subprocess.Popen, "_execute_child", checked_execute_child), \
            mock.patch.object(multiprocessing.process.BaseProcess, "start", refused_start):
        yield


def pytest_collection_modifyitems(config, items):
    """The files with the most `slow` tests first (each file stays whole and in order): with `--dist loadfile
    --no-loadscope-reorder` (`make test`) the two workers start on the files that take longest, and the many short
    files even them out at the end (xdist's own order, by number of tests, left them for last)."""
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    first_seen = {path: i for i, path in enumerate(dict.fromkeys(item.path for item in items))}
    items.sort(key=lambda item: (-slow[item.path], first_seen[item.path]))
