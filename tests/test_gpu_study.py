"""The GPU study script (benchmarks/gpu_study.sh) in its CPU dry mode, and its report's rule: a run that did not
finish is listed as unfinished, never as a result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from .helpers import REPO


def _study(tmp: Path, recipes: str, budget: int | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp / "out"
    env = {**os.environ, "GPU_DRY_RUN": "1", "OUT": str(out), "PYTHON": sys.executable, "STUDY_RECIPES": recipes}
    if budget is not None:
        env["GPU_BUDGET_S"] = str(budget)
    done = subprocess.run(["bash", "benchmarks/gpu_study.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    return done, out


@pytest.fixture(scope="module")
def dry_study(tmp_path_factory):
    return _study(tmp_path_factory.mktemp("study"), "shipped")


def test_dry_study_leaves_the_table_the_log_and_the_finished_run_without_checkpoints(dry_study):
    done, out = dry_study
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["STUDY-GPU.md", "runs.tar.gz", "study.json", "study.log"]
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
        history = json.loads(tar.extractfile("shipped/history.json").read())
        config = yaml.safe_load(tar.extractfile("shipped/config.yaml"))
    assert "shipped/gradcam.png" in names and not any("checkpoints" in n for n in names)
    assert config["derived"]["augment_on"] == "device" and config["epochs"] == 1
    report = (out / "STUDY-GPU.md").read_text()
    assert "DRY RUN" in report and "Unfinished" not in report
    accuracy = history["final_test"]["test_accuracy"]
    assert f"| shipped | 42 | **{100 * accuracy:.2f}%** |" in report


def test_a_spent_budget_starts_nothing_and_reports_no_result(tmp_path):
    done, out = _study(tmp_path, "shipped adam", budget=0)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "STUDY-GPU.md").read_text()
    assert "- shipped: not started: the time budget was spent" in report and "- adam: not started" in report
    assert "**" not in report  # no accuracy anywhere
    assert not (out / "runs.tar.gz").exists()


def test_a_run_cut_off_by_the_budget_is_unfinished_not_a_result(dry_study, tmp_path):
    """The report script on a study whose second run was stopped by the budget after its first of 40 epochs."""
    _, out = dry_study
    runs = tmp_path / "runs"
    runs.mkdir()
    with tarfile.open(out / "runs.tar.gz") as tar:
        tar.extractall(runs, filter="data")
    cut = runs / "adam"
    (runs / "shipped").rename(cut)
    config = yaml.safe_load((cut / "config.yaml").read_text())
    (cut / "config.yaml").write_text(yaml.safe_dump({**config, "epochs": 40}))
    env = tmp_path / "env.json"
    env.write_text(json.dumps({"date": "d", "device": "cpu", "capability": None, "gpu_memory_gib": None,
                               "driver": None, "cpu_cores": 2, "python": "3", "torch": "t", "cuda": None,
                               "cudnn": None}))
    status = tmp_path / "status"
    status.write_text("adam 124 300 300\nema -1 0 12\n")
    report_file = tmp_path / "STUDY-GPU.md"
    subprocess.run([sys.executable, "benchmarks/gpu_study_report.py", "--env", str(env), "--status", str(status),
                    "--runs", str(runs), "--out", str(report_file), "--json", str(tmp_path / "rows.json")],
                   cwd=REPO, check=True, capture_output=True)
    report = report_file.read_text()
    assert "- adam: cut off by the time budget after 300 s (limit 300 s); 1 of 40 epochs recorded" in report
    assert "- ema: not started" in report
    assert "**" not in report and "| adam |" not in report
    assert [r["finished"] for r in json.loads((tmp_path / "rows.json").read_text())] == [False, False]
