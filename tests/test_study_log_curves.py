"""benchmarks/study/study_log_curves.py: a run's curve and epoch times read back from gpu_study.sh's prefixed log."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .helpers import REPO

LOG = """== [6 s] 3. the recipes, 2 at a time: a b
[a] run folder: /tmp/x/a | resnet18 width 1
[a] epoch 1/2  train loss 1.6 acc 39.75%  val loss 1.08 acc 61.50%  lr 0.001  25.2s
[a]          raw weights: val loss 1.32 acc 52.33%  (0.4s)
[b] epoch 1/3  train loss 1.7 acc 40.44%  val loss 1.11 acc 61.73%  lr 0.001  24.0s  | about 25 s left
[a] epoch 2/2  train loss 1.2 acc 55.95%  val loss 0.84 acc 70.25%  lr 0.0001  12.6s
[b]          raw weights: val loss 1.27 acc 54.36%  (0.3s)
[a]          raw weights: val loss 0.92 acc 67.23%  (0.4s)
[b] epoch 2/3  train loss 1.4 acc 56.65%  val loss 0.87 acc 70.64%  lr 0.001  12.9s
[a] test accuracy (final EMA model): 70.30% on 10000 images; 20 mistakes explained in /tmp/x/a/gradcam.png
[b] stopping after the current iteration or epoch end (send the signal again to stop at once)
"""


def _curves(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/study/study_log_curves.py", *args], cwd=REPO,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_a_finished_run_has_its_test_accuracy_and_a_cut_off_one_says_unfinished(tmp_path):
    log = tmp_path / "call1" / "study.log"
    log.parent.mkdir()
    log.write_text(LOG)
    done = _curves(str(log))
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[2:]
    assert rows == ["| call1 | a | **70.30%** (final test) | 61.50 / - / - / - | 70.25 (2) | 67.23 | 55.95 | 0.0001 "
                    "| 25.2 | 12.6 |",
                    "| call1 | b | unfinished: 2 of 3 epochs | 61.73 / - / - / - | 70.64 (2) | - | 56.65 | 0.001 "
                    "| 24.0 | 12.9 |"]


@pytest.mark.slow
def test_a_missing_log_is_refused_in_one_line(tmp_path):
    done = _curves(str(tmp_path / "nope.log"))
    assert done.returncode == 2 and done.stderr.strip() == f"study_log_curves: no such log: {tmp_path / 'nope.log'}"
