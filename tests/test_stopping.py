"""Stopping: Ctrl-C and SIGTERM stop a run at a safe point and it resumes in step; a process of a data-parallel run
that dies (a signal, the OOM killer) ends the run in one line with the way to resume."""


from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ignite_cifar import cli, files
from ignite_cifar.errors import TrainingStopped
from ignite_cifar.training import engines
from ignite_cifar.training.launch import train

from .helpers import REPO, tiny_config, train_in_process_killing_rank_1


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_the_run_resumes(tmp_path):
    out = tmp_path / "runs"
    argv = [sys.executable, "-m", "ignite_cifar", "train", "--dataset", "synthetic", "--width", "0.0625",
            "--epochs", "4", "--batch-size", "50", "--train-subset", "1000", "--test-subset", "100",
            "--num-workers", "0", "--n-misclassified", "3", "--output-dir", str(out), "--run-name", "stopped"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = out / "stopped"
    deadline = time.monotonic() + 300
    while files.find_checkpoint(run_dir) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.2)  # into epoch 2, well before the run could end (exact moments are tested in-process below)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "interrupted" in err and f"--resume {run_dir}" in err and "Traceback" not in err
    saved = files.load_checkpoint(files.find_checkpoint(run_dir))
    assert saved["trainer"]["iteration"] >= 20  # at least epoch 1 (20 iterations)
    recorded = [r["epoch"] for r in json.loads((run_dir / "history.json").read_text())["epochs"]]
    assert recorded == list(range(1, saved["trainer"]["iteration"] // 20 + 1))  # every finished epoch is recorded
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2, 3, 4]
    assert history["epochs"][-1]["iteration"] == 80
    assert (run_dir / "gradcam.png").is_file()


# In-process interruptions at chosen moments: the signal is sent from inside the run, so where it lands is exact.
def _history(run_dir) -> list[dict]:
    return json.loads((Path(run_dir) / "history.json").read_text())["epochs"]


def _metrics(run_dir) -> list[tuple]:
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "iteration")
    return [tuple(r[k] for k in keys) for r in _history(run_dir)]


def _send_signals(monkeypatch, factory: str, event, when, count: int = 1) -> None:
    """Make engines.<factory> attach a handler that sends `count` SIGTERMs to this process the first time
    when(engine)."""
    real = getattr(engines, factory)
    sent = []

    def wrapped(*args, **kwargs):
        engine = real(*args, **kwargs)

        @engine.on(event)
        def send(engine):
            if not sent and when(engine):
                sent.append(engine.state.iteration)
                for _ in range(count):
                    os.kill(os.getpid(), signal.SIGTERM)

        return engine

    monkeypatch.setattr(engines, factory, wrapped)


def _stopped_run(config) -> TrainingStopped:
    with pytest.raises(TrainingStopped) as caught:
        train(config)
    assert caught.value.exit_code == 143
    return caught.value


def test_a_signal_during_the_evaluation_stops_after_the_epoch_is_saved(smoke_run, tmp_path, monkeypatch):
    """The epoch's evaluation, history record, plateau step and checkpoint finish first; resuming then gives
    exactly the straight run (before, a SIGTERM here lost the epoch's record: seen in CI)."""
    from ignite.engine import Events

    _send_signals(monkeypatch, "create_evaluator", Events.ITERATION_COMPLETED, lambda e: True)
    stopped = _stopped_run(tiny_config(tmp_path, run_name="eval-stop", explain_at_end=False))
    run_dir = tmp_path / "runs" / "eval-stop"
    assert "interrupted at epoch 1, iteration 6" in str(stopped)
    assert files.load_checkpoint(files.find_checkpoint(run_dir))["trainer"]["iteration"] == 6
    assert [r["epoch"] for r in _history(run_dir)] == [1]
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    assert _metrics(run_dir) == _metrics(smoke_run[0])


def test_a_signal_mid_step_stops_after_that_step(smoke_run, tmp_path, monkeypatch):
    from ignite.engine import Events

    _send_signals(monkeypatch, "create_trainer", Events.ITERATION_STARTED, lambda e: e.state.iteration == 3)
    stopped = _stopped_run(tiny_config(tmp_path, run_name="step-stop", explain_at_end=False))
    run_dir = tmp_path / "runs" / "step-stop"
    assert "iteration 3;" in str(stopped)
    assert files.load_checkpoint(files.find_checkpoint(run_dir))["trainer"]["iteration"] == 3  # step 3 kept
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    # the model saw every batch once, in order: validation equals the straight run's
    # (train metrics of the interrupted epoch cover only the batches after the resume)
    val = lambda rows: [(r["val_loss"], r["val_accuracy"], r["lr"], r["iteration"]) for r in rows]  # noqa: E731
    assert val(_history(run_dir)) == val(_history(smoke_run[0]))
    # images/s of the resumed epoch count its last 3 batches of 50, not all 300 images
    images = [r["train_images_per_s"] * r["epoch_seconds"] for r in _history(run_dir)]
    assert images == pytest.approx([150, 300], rel=0.05)


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from ignite.engine import Events

    from ignite_cifar.training.stopping import StopRequests

    monkeypatch.setattr(StopRequests, "ECHO_SECONDS", 0.0)  # both signals below come within microseconds
    _send_signals(monkeypatch, "create_evaluator", Events.ITERATION_COMPLETED, lambda e: True, count=2)
    stopped = _stopped_run(tiny_config(tmp_path, run_name="forced"))
    assert "second signal" in str(stopped) and "none (still in epoch 1)" in str(stopped)
    assert files.find_checkpoint(tmp_path / "runs" / "forced") is None


def test_a_signal_echoed_at_once_counts_as_one(tmp_path, monkeypatch):
    """A process group's SIGTERM plus the launcher's relay of it reach a worker twice: still a safe stop."""
    from ignite.engine import Events

    _send_signals(monkeypatch, "create_evaluator", Events.ITERATION_COMPLETED, lambda e: True, count=2)
    stopped = _stopped_run(tiny_config(tmp_path, run_name="echo", n_misclassified=2))
    assert "interrupted at epoch 1, iteration 6; saved" in str(stopped)


@pytest.mark.slow
def test_two_processes_stop_on_sigterm_to_the_launcher_and_resume_in_step(tmp_path):
    """The launcher relays SIGTERM; the processes agree on one safe point; the launcher reports it in one line.
    Resumed, the replicas must stay identical (they once shared the loaded momentum buffers and diverged)."""
    out = tmp_path / "runs"
    argv = [sys.executable, "-m", "ignite_cifar", "train", "--dataset", "synthetic", "--width", "0.0625",
            "--epochs", "30", "--batch-size", "50", "--train-subset", "300", "--test-subset", "100",
            "--num-workers", "0", "--nproc-per-node", "2", "--no-explain-at-end", "--output-dir", str(out),
            "--run-name", "ddp-stop"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = out / "ddp-stop"
    deadline = time.monotonic() + 300
    while files.find_checkpoint(run_dir) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # the launcher only, as `kill PID` would
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("ignite-cifar: interrupted at epoch")
    done = files.load_checkpoint(files.find_checkpoint(run_dir))["trainer"]["iteration"] // 6
    assert [r["epoch"] for r in _history(run_dir)] == list(range(1, done + 1))
    assert cli.main(["train", "--resume", str(run_dir), "--epochs", str(done + 2)]) == 0
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == list(range(1, done + 3))
    checksums = history["distributed"]["replica_checksums"]
    assert checksums[0] == checksums[1]


@pytest.mark.slow
def test_a_process_killed_like_out_of_memory_ends_in_one_line_and_the_run_resumes(tmp_path, monkeypatch, capfd):
    """Process 1 of 2 dies of SIGKILL in epoch 2, as under the kernel's OOM killer (helpers.
    train_in_process_killing_rank_1): the launcher stops the other and says in one line which one died, how, and
    the --resume command (it was torch's ProcessExitedException traceback); resumed, the run completes."""
    import multiprocessing

    from ignite_cifar.config import dump_yaml
    from ignite_cifar.training import launch

    config = tmp_path / "ddp.yaml"
    config.write_text(dump_yaml(tiny_config(tmp_path, run_name="killed", nproc_per_node=2, backend="gloo",
                                            explain_at_end=False).to_dict()))
    monkeypatch.setattr(launch, "train_in_process", train_in_process_killing_rank_1)
    assert cli.main(["train", "--config", str(config)]) == 1
    err = capfd.readouterr().err  # the spawned processes' output too
    run_dir = tmp_path / "runs" / "killed"
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "ignite-cifar: error: training process 1 of 2 was killed by signal 9 (SIGKILL, possibly out of memory); the "
        f"other was stopped. Last good checkpoint: {run_dir / 'checkpoints' / 'last_checkpoint_6.pt'}. Resume with: "
        f"python -m ignite_cifar train --resume {run_dir}"), err
    assert not multiprocessing.active_children()
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2] and history["epochs"][-1]["iteration"] == 12


def test_a_process_that_dies_otherwise_is_named_with_its_signal_or_exit_code(tmp_path):
    from types import SimpleNamespace

    from torch.multiprocessing.spawn import ProcessExitedException

    from ignite_cifar.training.launch import _died

    plan = SimpleNamespace(config=SimpleNamespace(nproc_per_node=4), run_dir=tmp_path / "not-started")
    assert str(_died(plan, ProcessExitedException("", 2, 99, exit_code=3))) == (
        "training process 2 of 4 exited with code 3 without an error; the others were stopped. Last good checkpoint: "
        f"none (still in epoch 1). Start it again with: python -m ignite_cifar train --resume {plan.run_dir}")
    assert str(_died(plan, ProcessExitedException("", 0, 99, exit_code=-11, signal_name="SIGSEGV"))).startswith(
        "training process 0 of 4 was killed by signal 11 (SIGSEGV); the others were stopped.")


def test_a_signal_in_the_last_epoch_leaves_a_run_its_line_finishes_without_training(tmp_path, monkeypatch, capsys):
    from ignite.engine import Events

    _send_signals(monkeypatch, "create_trainer", Events.ITERATION_STARTED, lambda e: e.state.iteration == 12)
    stopped = _stopped_run(tiny_config(tmp_path, run_name="last", n_misclassified=2))
    run_dir = tmp_path / "runs" / "last"
    kept = files.find_checkpoint(run_dir)
    assert str(stopped).endswith(f"Training is done and saved in {kept}. Finish the run with: "
                                 f"python -m ignite_cifar train --resume {run_dir}"), stopped
    assert not (run_dir / "gradcam.png").exists() and not files.run_finished(run_dir)
    assert [r["epoch"] for r in _history(run_dir)] == [1, 2]
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    assert (run_dir / "gradcam.png").is_file() and files.run_finished(run_dir)
    assert files.find_checkpoint(run_dir) == kept and [r["epoch"] for r in _history(run_dir)] == [1, 2]
