"""A machine's faults at every phase of a run, and the line each ends in: followed once the fault is gone, that line's
command finishes the run, and nothing written before the fault is lost or left half-written.

The full disk is injected, without root, at the writes a run makes: its own files (files.atomic_write), checkpoints
(ignite's DiskSaver) and TensorBoard's event writer. From the chosen write on, every write fails with ENOSPC."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
from pathlib import Path
from typing import Callable

import pytest
from ignite.handlers import DiskSaver
from tensorboard.summary.writer import event_file_writer

from ignite_cifar import cli, files

# one iteration an epoch, two epochs
TINY = ["--config", "assignment", "--dataset", "synthetic", "--width", "0.0625", "--epochs", "2", "--batch-size",
        "50", "--train-subset", "50", "--test-subset", "50", "--num-workers", "0", "--log-every", "1",
        "--n-misclassified", "3", "--probe-every", "0", "--amp", "off"]


class FullDisk:
    """From the `n`-th write whose path `where` accepts, every write fails as on a full disk, until `free()`."""

    def __init__(self, monkeypatch, where: Callable[[Path], bool], n: int = 1):
        self.where, self.n, self.seen, self.full = where, n, 0, False
        real_atomic_write, real_save = files.atomic_write, DiskSaver._save_func
        real_event_write = event_file_writer._AsyncWriter.write

        def atomic_write(path, write):
            def faulty(tmp):
                self.check(Path(path))
                write(tmp)
            real_atomic_write(path, faulty)

        def save(saver, checkpoint, path, func):
            self.check(Path(path))
            real_save(saver, checkpoint, path, func)

        def event_write(writer, data):
            if self.full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_event_write(writer, data)

        monkeypatch.setattr(files, "atomic_write", atomic_write)
        monkeypatch.setattr(DiskSaver, "_save_func", save)
        monkeypatch.setattr(event_file_writer._AsyncWriter, "write", event_write)

    def check(self, path: Path) -> None:
        if not self.full and self.where(path):
            self.seen += 1
            self.full = self.seen >= self.n
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def free(self) -> None:
        self.full, self.where = False, lambda _path: False


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip()


def next_command(line: str, argv: list[str]) -> list[str]:
    """The command a failure line names: `python -m ignite_cifar ARGS` (its ARGS), or the same command again."""
    named = re.search(r"with: python -m ignite_cifar (.+?)$", line)
    if named:
        return shlex.split(named.group(1))
    assert "Run the same command again" in line, line
    return argv


def assert_nothing_half_written(root: Path) -> None:
    """Every checkpoint left loads, every JSON file parses, no temporary file is left behind."""
    for ckpt in root.rglob("*.pt"):
        files.load_checkpoint(ckpt)
    for record in root.rglob("*.json"):
        json.loads(record.read_text())
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("tmp")]


def assert_finished(run_dir: Path, explained: bool = True, epochs: int = 2) -> None:
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == list(range(1, epochs + 1))
    assert [p.name for p in files.find_checkpoints(run_dir)] == [f"last_checkpoint_{epochs}.pt"]  # no older one left
    if not explained:
        return
    assert "final_test" in history and files.run_finished(run_dir)
    found = json.loads((run_dir / "misclassified.json").read_text())["found"]
    expected = {"config.yaml", "curves.png", "confusion.png", "evaluation.json", "explanations.json"}
    expected |= {"misclassified.png", "gradcam.png"} if found else set()
    assert expected <= {p.name for p in run_dir.iterdir()}, sorted(p.name for p in run_dir.iterdir())


def named(name: str, n: int = 1):
    return lambda path: path.name == name, n


# phase: (the write the disk fills at, the words of the line). In training the runs write no explanations (they
# have their own phases below), so that each case takes seconds.
TRAINING = {
    "claiming the folder": (named("config.yaml", 1), "nothing was kept. Run the same command again"),
    "starting epoch 1": (named("config.yaml", 2), "none (still in epoch 1). Start it again with"),
    "ending epoch 1": (named("history.json", 1), "none (still in epoch 1). Start it again with"),
    "epoch 2's checkpoint": ((lambda p: p.name.startswith("last_checkpoint"), 2), "last_checkpoint_1.pt. Resume with"),
}
COMPLETION = {
    "the completion's first file": (named("misclassified.json"), "Finish the run with"),
    "the completion's last record": (named("history.json", 3), "Finish the run with"),
}


@pytest.mark.parametrize("phase", [*TRAINING, *COMPLETION])
def test_a_full_disk_ends_in_a_line_whose_command_finishes_the_run(phase, tmp_path, monkeypatch, capsys):
    (where, n), words = {**TRAINING, **COMPLETION}[phase]
    explained = phase in COMPLETION
    argv = ["train", *TINY, "--output-dir", str(tmp_path / "runs"), "--run-name", "full",
            *([] if explained else ["--no-explain-at-end"])]
    disk = FullDisk(monkeypatch, where, n)
    code, err = run_cli(argv, capsys)
    assert code == 1 and err.count("\n") == 0 and "Traceback" not in err, err
    assert "No space left on device" in err and words in err, err
    assert_nothing_half_written(tmp_path)
    run_dir = tmp_path / "runs" / "full"
    kept = files.find_checkpoint(run_dir) if run_dir.exists() else None
    kept_bytes = kept.read_bytes() if kept else None

    disk.free()
    code, err = run_cli(next_command(err, argv), capsys)
    assert code == 0, err
    assert_finished(run_dir, explained)
    if explained:  # the completion step alone: nothing trained again; and now the run is finished
        assert files.find_checkpoint(run_dir) == kept and kept.read_bytes() == kept_bytes
        code, err = run_cli(["train", "--resume", str(run_dir)], capsys)
        assert code == 2 and "finished 2 epochs already" in err, err


def test_a_failed_checkpoint_write_keeps_the_one_before(tmp_path, monkeypatch, capsys):
    """ignite removes the checkpoint it replaces before writing the new one; a failed write must not take the last
    good one with it."""
    FullDisk(monkeypatch, lambda p: p.name.startswith("last_checkpoint"), 2)
    code, err = run_cli(["train", *TINY, "--no-explain-at-end", "--output-dir", str(tmp_path), "--run-name", "kept"],
                        capsys)
    kept = tmp_path / "kept" / "checkpoints" / "last_checkpoint_1.pt"
    assert code == 1 and f"Last good checkpoint: {kept}." in err, err
    assert files.load_checkpoint(kept)["trainer"]["iteration"] == 1


def test_a_damaged_checkpoint_is_refused_with_the_command_that_goes_on_past_it(tmp_path, capsys):
    argv = ["train", *TINY, "--epochs", "1", "--no-explain-at-end", "--output-dir", str(tmp_path), "--run-name", "cut"]
    assert cli.main(argv) == 0
    run_dir = tmp_path / "cut"
    ckpt = files.find_checkpoint(run_dir)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # half a checkpoint
    before = sorted(p.name for p in run_dir.rglob("*"))
    capsys.readouterr()

    code, err = run_cli(["train", "--resume", str(run_dir), "--epochs", "2"], capsys)
    assert code == 2 and err.count("\n") == 0 and "not a PyTorch checkpoint" in err, err
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # refused: nothing touched
    command = next_command(err, [])
    assert command[-1] == "--set-aside-damaged", err
    code, err = run_cli([*command, "--epochs", "2"], capsys)
    assert code == 0, err
    assert (run_dir / "checkpoints" / f"{ckpt.name}.damaged").is_file()  # kept for a look, never read again
    assert_finished(run_dir, explained=False)  # no checkpoint before it: started again from its config.yaml


def test_a_damaged_history_is_refused_with_the_command_that_goes_on_past_it(tmp_path, capsys):
    argv = ["train", *TINY, "--epochs", "1", "--no-explain-at-end", "--output-dir", str(tmp_path), "--run-name", "cut"]
    assert cli.main(argv) == 0
    run_dir = tmp_path / "cut"
    text = (run_dir / "history.json").read_text()
    (run_dir / "history.json").write_text(text[: len(text) // 2])  # cut short, as a hand copy might leave it
    capsys.readouterr()

    code, err = run_cli(["train", "--resume", str(run_dir), "--epochs", "2"], capsys)
    assert code == 2 and err.count("\n") == 0 and "history.json is damaged" in err, err
    command = next_command(err, [])
    assert command[-1] == "--set-aside-damaged", err
    code, err = run_cli([*command, "--epochs", "2"], capsys)
    assert code == 0, err
    assert (run_dir / "history.json.damaged").read_text() == text[: len(text) // 2]  # kept as it was
    history = json.loads((run_dir / "history.json").read_text())["epochs"]
    assert [r["epoch"] for r in history] == [2]  # epoch 1's record went with the damaged file; training did not
