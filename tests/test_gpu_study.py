"""The GPU study script (benchmarks/gpu/gpu_study.sh) in its CPU dry mode, and its report's rule: a run that did not
finish is listed as unfinished, never as a result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from .helpers import REPO


def _study(tmp: Path, recipes: str, budget: int | None = None, lanes: str | None = None, epochs: int = 1,
           out_name: str = "out", flags: str | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp / out_name
    env = {**os.environ, "GPU_DRY_RUN": "1", "OUT": str(out), "PYTHON": sys.executable, "STUDY_RECIPES": recipes,
           "GPU_STUDY_DIR": str(tmp / "study"), "GPU_DRY_EPOCHS": str(epochs)}
    if budget is not None:
        env["GPU_BUDGET_S"] = str(budget)
    if lanes is not None:
        env["STUDY_LANES"] = lanes
    if flags is not None:
        env["STUDY_FLAGS"] = flags
    done = subprocess.run(["bash", "benchmarks/gpu/gpu_study.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    return done, out


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    """One study folder called as a user would, three times: two recipes in two lanes with STUDY_FLAGS=auto (it
    measures, picks a mode and trains an epoch of each), then again with 2 epochs planned (each run resumes in the
    mode the first call chose), then once more (both finished: kept, nothing trained). The tests read what each
    call left, so the study trains 4 tiny epochs for all of them."""
    tmp = tmp_path_factory.mktemp("study")
    first = _study(tmp, "assignment adam", lanes="2", flags="auto", out_name="call1")
    second = _study(tmp, "assignment adam", lanes="2", flags="auto", epochs=2, out_name="call2")
    third = _study(tmp, "assignment adam", lanes="2", flags="auto", epochs=2, out_name="call3")
    for done, _ in (first, second, third):
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"tmp": tmp, "first": first[1], "second": second[1], "third": third[1]}


@pytest.fixture(scope="module")
def dry_study(calls):
    """The first call: what its runs.tar.gz and report hold after one epoch of each recipe."""
    return calls["first"]


@pytest.mark.slow
def test_dry_study_leaves_the_table_the_log_and_the_finished_run_without_checkpoints(dry_study):
    out = dry_study
    assert {"STUDY-GPU.md", "runs.tar.gz", "study.json", "study.log"} <= {p.name for p in out.iterdir()}
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
        history = json.loads(tar.extractfile("assignment/history.json").read())
        config = yaml.safe_load(tar.extractfile("assignment/config.yaml"))
    assert "assignment/gradcam.png" in names and not any("checkpoints" in n for n in names)
    assert config["derived"]["augment_on"] == "device" and config["epochs"] == 1
    report = (out / "STUDY-GPU.md").read_text()
    assert "DRY RUN" in report and "Unfinished" not in report
    accuracy = history["final_test"]["test_accuracy"]
    assert f"| assignment | 42 | **{100 * accuracy:.2f}%** |" in report


@pytest.mark.slow
def test_a_spent_budget_starts_nothing_and_reports_no_result(tmp_path):
    done, out = _study(tmp_path, "assignment adam", budget=0)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "STUDY-GPU.md").read_text()
    assert "- assignment: not started: the time budget was spent" in report and "- adam: not started" in report
    assert "**" not in report  # no accuracy anywhere
    assert not (out / "runs.tar.gz").exists()


@pytest.mark.slow
def test_lanes_train_recipes_at_once_and_report_them_in_list_order(dry_study):
    rows = json.loads((dry_study / "study.json").read_text())
    assert [(r["name"], r["finished"]) for r in rows] == [("assignment", True), ("adam", True)]
    report = (dry_study / "STUDY-GPU.md").read_text()
    assert "up to 2 recipes trained at once on the one GPU" in report and "not of one run alone" in report
    log = (dry_study / "study.log").read_text()
    assert "[assignment] epoch 1/1" in log and "[adam] epoch 1/1" in log


@pytest.mark.slow
def test_the_same_command_again_resumes_an_unfinished_run_and_keeps_a_finished_one(calls):
    """A run with fewer epochs than planned (as one cut off by the budget of the last call) is resumed from its
    checkpoint in the study folder, not started again; a finished one is kept and reported without training."""
    log = (calls["second"] / "study.log").read_text()
    assert "train --resume" in log and "[assignment] epoch 2/2" in log and "[assignment] epoch 1/2" not in log
    history = json.loads((calls["tmp"] / "study" / "assignment" / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2] and "final_test" in history
    assert json.loads((calls["second"] / "study.json").read_text())[0]["finished"]
    assert "assignment: finished in an earlier call, kept" in (calls["third"] / "study.log").read_text()
    row = json.loads((calls["third"] / "study.json").read_text())[0]
    assert row["finished"] and row["epochs_done"] == 2


@pytest.mark.slow
def test_auto_flags_measure_first_and_every_later_call_keeps_the_mode_they_chose(calls):
    """STUDY_FLAGS=auto: the captured step's lr check and a step matrix first, the runs in the mode it chose; the next
    call resumes them in that same mode instead of measuring again (a run's precision never changes halfway)."""
    first, second = calls["first"], calls["second"]
    assert json.loads((first / "captured_lr.json").read_text())["passed"] and (first / "matrix.md").is_file()
    mode = (calls["tmp"] / "study" / ".study-flags").read_text().split()
    assert mode[:1] == ["--amp"] and "--no-compile" in mode  # the dry matrix compiles nothing
    log = (first / "study.log").read_text()
    assert f"study mode: {' '.join(mode)}" in log and f"{' '.join(mode)} --config assignment" in log
    log = (second / "study.log").read_text()
    assert "the mode an earlier call chose, kept for its runs" in log
    assert not (second / "matrix.md").exists() and f"--epochs 2 {' '.join(mode)}" in log


@pytest.mark.slow
@pytest.mark.parametrize("lanes", ["0", "two"])
def test_a_bad_lane_count_is_refused_in_one_line(tmp_path, lanes):
    done, out = _study(tmp_path, "assignment", lanes=lanes)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"gpu_study: STUDY_LANES must be a whole number >= 1, got '{lanes}'"]


def _dry_runs(dry_study, tmp: Path, name: str, **changes) -> Path:
    """The dry study's finished run, unpacked under tmp/runs as `name`, its config.yaml changed by `changes`."""
    out = dry_study
    runs = tmp / "runs"
    runs.mkdir()
    with tarfile.open(out / "runs.tar.gz") as tar:
        tar.extractall(runs, filter="data")
    run = runs / name
    shutil.rmtree(runs / "adam")  # the second recipe of the dry study: only the first is used here
    (runs / "assignment").rename(run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, **changes}))
    return runs


def _report(tmp: Path, runs: Path, status: str) -> str:
    """gpu_study_report.py on `runs` with `status` (one line per recipe: name, exit code, wall s, limit s)."""
    env = tmp / "env.json"
    env.write_text(json.dumps({"date": "d", "device": "cpu", "capability": None, "gpu_memory_gib": None,
                               "driver": None, "cpu_cores": 2, "python": "3", "torch": "t", "cuda": None,
                               "cudnn": None}))
    (tmp / "status").write_text(status)
    report_file = tmp / "STUDY-GPU.md"
    subprocess.run([sys.executable, "benchmarks/gpu/gpu_study_report.py", "--env", str(env), "--status",
                    str(tmp / "status"), "--runs", str(runs), "--out", str(report_file), "--json",
                    str(tmp / "rows.json")], cwd=REPO, check=True, capture_output=True)
    return report_file.read_text()


@pytest.mark.slow
def test_a_run_cut_off_by_the_budget_is_unfinished_not_a_result(dry_study, tmp_path):
    """The report script on a study whose second run was stopped by the budget after its first of 40 epochs."""
    runs = _dry_runs(dry_study, tmp_path, "adam", epochs=40)
    report = _report(tmp_path, runs, "adam 124 300 300\nema -1 0 12\n")
    val = json.loads((runs / "adam" / "history.json").read_text())["epochs"][0]["val_accuracy"]
    assert ("- adam: cut off by the time budget after 300 s (limit 300 s); 1 of 40 epochs recorded "
            f"(val {100 * val:.2f}% at epoch 1: progress, not a result)") in report
    assert "- ema: not started" in report
    assert "**" not in report and "| adam |" not in report
    assert [r["finished"] for r in json.loads((tmp_path / "rows.json").read_text())] == [False, False]


@pytest.mark.slow
def test_a_finished_run_outside_the_assignments_rules_says_so_in_its_row(dry_study, tmp_path):
    runs = _dry_runs(dry_study, tmp_path, "combination-hflip", p_hflip=0.5)
    report = _report(tmp_path, runs, "combination-hflip 0 30 300\n")
    row = next(line for line in report.splitlines() if line.startswith("| combination-hflip | 42 | **"))
    # the dry run's single epoch is outside the rules too
    assert row.endswith("| **no**: epochs 1 (the assignment: 40); horizontal flip |")


def test_its_default_list_names_existing_recipes_and_starts_with_the_full_width_questions():
    """Three lanes train the first three together: the default's two seeds and its variant whose plateau cuts."""
    line = next(line for line in (REPO / "benchmarks/gpu/gpu_study.sh").read_text().splitlines()
                if line.startswith("RECIPES="))
    names = line.split(':-"', 1)[1].rstrip('"}').split()
    assert names[:3] == ["combination-weight-std", "combination-weight-std-seed2", "combination-weight-std-cut"]
    assert len(set(names)) == len(names)
    assert all((REPO / "benchmarks/study/recipes" / f"{name}.yaml").is_file() for name in names)
