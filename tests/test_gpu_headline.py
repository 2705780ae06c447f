"""The GPU headline script (benchmarks/gpu/gpu_headline.sh) in its CPU dry mode: the kit, the matrix, the choice,
the run and the report go through the same path as on the GPU machine, so that one call there cannot fail on
something never run here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

from .helpers import REPO, require_archive, write_real_archive

pytestmark = pytest.mark.slow  # the shell script in its dry mode: a dozen processes (tests/conftest.py)

HANG_GUARD_S = 900  # not a speed limit: the dry run takes about a minute; this only keeps a hang from blocking CI


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    require_archive()
    tmp = tmp_path_factory.mktemp("gpu")
    shared = tmp / "shared"  # the layout `make gpu-kit` reads: SHARED/data/<archive>, SHARED/gpu/wheels/*.whl
    (shared / "data").mkdir(parents=True)
    (shared / "gpu" / "wheels").mkdir(parents=True)
    # the dry run trains on 512 / 200 images: the first 60 / 30 of each class are enough, and quicker to unpack
    write_real_archive(shared / "data" / "cifar10-jpeg.tar.gz", {"train": 60, "test": 30})
    (shared / "gpu" / "wheels" / "placeholder-0.0-py3-none-any.whl").write_bytes(b"")
    kit, out = tmp / "kit", tmp / "out"
    subprocess.run(["make", "--no-print-directory", "gpu-kit", f"SHARED={shared}", f"GPU_KIT={kit}"], cwd=REPO,
                   check=True, capture_output=True, timeout=HANG_GUARD_S)
    env = {**os.environ, "GPU_DRY_RUN": "1", "GPU_KIT": str(kit), "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "benchmarks/gpu/gpu_headline.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    return done, out


def test_dry_run_succeeds_and_leaves_the_files_that_come_back(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["RESULTS-GPU.md", "captured_lr.json", "headline.log", "matrix.json", "matrix.md", "run.tar.gz"]
    assert json.loads((out / "captured_lr.json").read_text())["passed"]
    assert "## The captured step's lr (benchmarks/speed/captured_lr_check.py)" in (out / "RESULTS-GPU.md").read_text()


def test_the_matrix_choice_is_what_the_run_used(dry_run):
    _, out = dry_run
    matrix = json.loads((out / "matrix.json").read_text())
    assert len(matrix["entries"]) == 2 and all(e["correct"] for e in matrix["entries"])
    choice = matrix["choice"]
    assert choice == min(matrix["entries"], key=lambda e: e["run_steps_s"])
    with tarfile.open(out / "run.tar.gz") as tar:
        config = yaml.safe_load(tar.extractfile("headline/config.yaml"))
    assert config["channels_last"] == choice["channels_last"] and config["compile"] == choice["compile"]
    assert config["derived"]["data_workers"] >= 0 and config["num_workers"] == "auto"
    assert config["augment_on"] == config["derived"]["augment_on"] == "device"  # the fast data path


def test_the_run_folder_comes_back_without_checkpoints(dry_run):
    _, out = dry_run
    with tarfile.open(out / "run.tar.gz") as tar:
        names = set(tar.getnames())
        history = json.loads(tar.extractfile("headline/history.json").read())
    for name in ("history.json", "curves.png", "misclassified.png", "gradcam.png", "confusion.png", "config.yaml"):
        assert f"headline/{name}" in names
    assert not any("checkpoints" in n for n in names)
    assert [r["epoch"] for r in history["epochs"]] == [1]
    final = history["final_test"]  # of --test-subset 200: 20 images of each of the 10 classes
    assert len(final["per_class_accuracy"]) == 10
    assert 200 * final["test_accuracy"] == pytest.approx(round(200 * final["test_accuracy"]), abs=1e-6)
    assert final["test_accuracy"] == pytest.approx(sum(final["per_class_accuracy"].values()) / 10)


def test_the_report_names_the_machine_and_the_measured_figures(dry_run):
    _, out = dry_run
    report = (out / "RESULTS-GPU.md").read_text()
    with tarfile.open(out / "run.tar.gz") as tar:
        history = json.loads(tar.extractfile("headline/history.json").read())
    assert "DRY RUN" in report and "device: cpu" in report
    assert "| epochs done / planned | 1 / 1 |" in report
    assert f"**{100 * history['final_test']['test_accuracy']:.2f}%**" in report
    assert f"**{history['epochs'][-1]['wall_seconds']:.1f} s**" in report
    assert "| off | on | off | 32 |" in report and "| off | off | off | 32 |" in report  # both matrix rows
