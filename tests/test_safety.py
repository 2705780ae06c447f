"""Failing safely: one-line errors with exit code 2, atomic writes, checkpoints as data, writes the machine refuses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ignite_cifar import cli, files
from ignite_cifar.errors import CheckpointError, MachineError
from ignite_cifar.training import engines
from ignite_cifar.training.launch import train

from .helpers import tiny_config, write_huge_png


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _image_folder(root: Path, classes=("a", "b"), test_classes=None, per_class=2, empty=None, corrupt=None,
                  huge=None) -> Path:
    from PIL import Image

    for split, names in (("train", classes), ("test", test_classes or classes)):
        (root / split).mkdir(parents=True)
        for c in names:
            folder = root / split / c
            folder.mkdir()
            if c == empty:
                continue
            for i in range(per_class):
                Image.new("RGB", (32, 32), (40 * i, 100, 200)).save(folder / f"{i}.png")
            if c == corrupt and split == "train":
                (folder / "broken.png").write_bytes(b"this is not a png")
            if c == huge and split == "train":
                write_huge_png(folder / "huge.png")
    return root


class _Case:
    """What the bad invocations build on: a scratch folder and the finished run in the output folder they point at.
    Each case builds only what it uses."""

    def __init__(self, tmp: Path, earlier: Path):
        self.tmp, self.earlier = tmp, earlier
        self.out = ["--output-dir", str(earlier.parent)]
        self.tiny = ["--dataset", "synthetic", "--width", "0.0625", "--epochs", "1", "--num-workers", "0",
                     "--train-subset", "100", "--test-subset", "50"] + self.out

    def folder(self, name: str, **kwargs) -> list[str]:
        return ["--dataset", "folder", "--data-dir", str(_image_folder(self.tmp / name, **kwargs))] + self.out

    def file(self, name: str, text: str) -> str:
        (self.tmp / name).write_text(text)
        return str(self.tmp / name)

    def damaged(self, name: str, damage) -> str:
        """A copy of the earlier run, damaged by `damage(folder)` (as a crash or a hand edit would leave it)."""
        copy = self.tmp / name
        shutil.copytree(self.earlier, copy)
        damage(copy)
        return str(copy)

    def other_architecture(self) -> str:
        """A copy of the earlier run whose config.yaml claims another width than its checkpoint has."""
        other = self.tmp / "other-arch"
        shutil.copytree(self.earlier, other)
        saved = yaml.safe_load((other / "config.yaml").read_text())
        saved["width"] = 0.125
        (other / "config.yaml").write_text(yaml.safe_dump(saved))
        return str(other)


BAD_YAML = "epochs: 2\nlr: 0.1\nmodel: [resnet18\nwidth: 1\n"  # the bracket opened on line 3 never closes

# id: (argv built from a _Case, words the one-line message must contain)
CASES = {
    "missing-data-dir": (lambda c: ["--dataset", "folder", "--data-dir", str(c.tmp / "nowhere")] + c.out,
                         ["does not exist", "--data-dir"]),
    "no-class-folders": (lambda c: c.folder("emptydir", classes=()), ["no class folders"]),
    "train-test-classes-differ": (lambda c: c.folder("differ", classes=("a", "b"), test_classes=("a", "c")),
                                  ["differ", "'b'", "'c'"]),
    "class-without-images": (lambda c: c.folder("noimages", empty="b"), ["has no images"]),
    "unreadable-image": (lambda c: c.folder("corrupt", corrupt="a"), ["broken.png", "--skip-bad-images"]),
    "image-too-large": (lambda c: c.folder("bomb", huge="b"),
                        ["huge.png", "DecompressionBombError", "200000000 pixels", "--skip-bad-images"]),
    "unknown-flag": (lambda c: ["--frobnicate", "3"] + c.tiny, ["unrecognized arguments", "--frobnicate"]),
    "epochs-not-integer": (lambda c: c.tiny + ["--epochs", "abc"], ["epochs", "integer", "abc"]),
    "epochs-zero": (lambda c: c.tiny + ["--epochs", "0"], ["epochs", ">= 1"]),
    "lr-zero": (lambda c: c.tiny + ["--lr", "0"], ["lr", "> 0"]),
    "lr-negative": (lambda c: c.tiny + ["--lr", "-1"], ["lr", "> 0"]),
    "batch-size-zero": (lambda c: c.tiny + ["--batch-size", "0"], ["batch_size", ">= 1"]),
    "subset-too-large": (lambda c: c.tiny + ["--train-subset", "999999"], ["train_subset", "larger than the split"]),
    "val-split-one": (lambda c: c.tiny + ["--val-split", "1"], ["val_split", "[0, 1)"]),
    "unknown-model": (lambda c: c.tiny + ["--model", "vgg"], ["model", "resnet18, resnet34"]),
    "unknown-norm": (lambda c: c.tiny + ["--norm", "batch"], ["norm", "layer"]),
    "probability-above-one": (lambda c: c.tiny + ["--p-hflip", "2"], ["p_hflip", "probability"]),
    "unknown-gradcam-layer": (lambda c: c.tiny + ["--gradcam-layer", "layer9"], ["gradcam_layer", "layer9", "layer4"]),
    "unknown-gradcam-method": (lambda c: c.tiny + ["--gradcam-method", "scorecam"], ["gradcam_method", "gradcam++"]),
    "unknown-mistake-order": (lambda c: c.tiny + ["--mistake-order", "random"], ["mistake_order", "confident, first"]),
    "unknown-optimizer": (lambda c: c.tiny + ["--optimizer", "rmsprop"], ["optimizer", "sgd, adam, adamw"]),
    "label-smoothing-one": (lambda c: c.tiny + ["--label-smoothing", "1"], ["label_smoothing", "[0, 1)"]),
    "label-smoothing-negative": (lambda c: c.tiny + ["--label-smoothing", "-0.1"], ["label_smoothing", "[0, 1)"]),
    "warmup-negative": (lambda c: c.tiny + ["--warmup-epochs", "-2"], ["warmup_epochs", ">= 0"]),
    "ema-decay-one": (lambda c: c.tiny + ["--ema-decay", "1"], ["ema_decay", "[0, 1)"]),
    "resume-with-other-optimizer": (lambda c: ["--resume", str(c.earlier), "--optimizer", "adam", "--epochs", "2"],
                                    ["optimizer", "sgd", "adam"]),
    "resume-with-other-param-groups": (lambda c: ["--resume", str(c.earlier), "--no-decay-norm-bias", "--epochs", "2"],
                                       ["decay_norm_bias", "param groups"]),
    "nesterov-without-momentum": (lambda c: c.tiny + ["--nesterov", "--momentum", "0"], ["nesterov", "momentum"]),
    "unknown-plateau-metric": (lambda c: c.tiny + ["--plateau-metric", "f1"], ["plateau_metric", "loss, accuracy"]),
    "plateau-threshold-negative": (lambda c: c.tiny + ["--plateau-threshold", "-1"], ["plateau_threshold", ">= 0"]),
    "yaml-does-not-parse": (lambda c: ["--config", c.file("bad.yaml", BAD_YAML)] + c.tiny, ["bad.yaml", "line 4"]),
    "yaml-missing": (lambda c: ["--config", str(c.tmp / "missing.yaml")] + c.tiny, ["no such file"]),
    "output-dir-not-writable": (lambda c: c.tiny + ["--output-dir", str(Path(c.file("plainfile", "x")) / "runs")],
                                ["output_dir", "cannot write"]),
    "run-name-exists": (lambda c: c.tiny + ["--run-name", c.earlier.name], ["exists already", "--resume"]),
    "resume-not-a-checkpoint": (lambda c: ["--resume", c.file("notes.pt", "just text")], ["notes.pt"]),
    "resume-other-architecture": (lambda c: ["--resume", c.other_architecture()],
                                  ["does not fit", "shape", "checkpoint (4,", "model (8,"]),
    "resume-missing": (lambda c: ["--resume", str(c.tmp / "nothing-here")], ["does not exist"]),
    # every file a resumed run reads back, damaged
    "resume-history-cut-short": (lambda c: ["--resume", c.damaged("cut", _cut_history), "--epochs", "2"],
                                 ["history.json", "damaged", "move it aside"]),
    "resume-history-not-records": (lambda c: ["--resume", c.damaged("edited", _edit_history), "--epochs", "2"],
                                   ["history.json", "damaged", "integer 'epoch'"]),
    "resume-config-not-yaml": (lambda c: ["--resume", c.damaged("yaml", _break_config), "--epochs", "2"],
                               ["config.yaml", "not valid YAML"]),
    "resume-config-bad-value": (lambda c: ["--resume", c.damaged("value", _bad_config_value), "--epochs", "2"],
                                ["epochs", "integer", "banana"]),
    "resume-checkpoint-cut-short": (lambda c: ["--resume", c.damaged("ckpt", _cut_checkpoint), "--epochs", "2"],
                                    ["last_checkpoint", "not a PyTorch checkpoint"]),
    "resume-checkpoint-without-trainer": (lambda c: ["--resume", c.damaged("part", _drop_trainer), "--epochs", "2"],
                                          ["last_checkpoint", "lacks trainer"]),
}


def _cut_history(run: Path) -> None:
    text = (run / "history.json").read_text()
    (run / "history.json").write_text(text[: len(text) // 2])


def _edit_history(run: Path) -> None:
    (run / "history.json").write_text(json.dumps({"epochs": [{"epoch": "one"}]}))


def _break_config(run: Path) -> None:
    (run / "config.yaml").write_text("epochs: [2\nwidth: 0.0625\n")


def _bad_config_value(run: Path) -> None:
    saved = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**saved, "epochs": "banana"}))


def _cut_checkpoint(run: Path) -> None:
    ckpt = files.find_checkpoint(run)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])


def _drop_trainer(run: Path) -> None:
    ckpt = files.find_checkpoint(run)
    state = files.load_checkpoint(ckpt)
    del state["trainer"]
    torch.save(state, ckpt)


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """A finished run in the output folder every bad invocation below points at (none may change it)."""
    result = train(tiny_config(tmp_path_factory.mktemp("earlier"), run_name="earlier", epochs=1))
    return Path(result["run_dir"])


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_touches_nothing(case, tmp_path, earlier_run, capsys):
    before = _snapshot(earlier_run.parent)
    build, words = CASES[case]
    argv = build(_Case(tmp_path, earlier_run))
    try:
        code = cli.main(["train"] + argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("ignite-cifar: error:"), err
    assert "Traceback" not in err and all(w in err for w in words), (words, err)
    assert _snapshot(earlier_run.parent) == before


@pytest.mark.parametrize("command, given, name", [
    ("train", ["--run-name", "../escaped"], "../escaped"),
    ("train", ["--run-name", "{tmp}/absolute"], "{tmp}/absolute"),
    ("train", ["--run-name", "nested/run"], "nested/run"),
    ("train", ["--run-name", ".."], ".."),
    ("train", ["--run-name", "."], "."),
    ("train", ["--run-name", ""], ""),
    ("train", ["--config", "{tmp}/escape.yaml"], "../escaped"),  # a YAML's run_name (make train ARGS=... too)
    ("lr-find", ["--run-name", "../escaped", "--num-iter", "3"], "../escaped"),
])
def test_a_run_name_that_is_not_one_folder_name_is_refused_before_anything_is_written(tmp_path, capsys, command,
                                                                                      given, name):
    """A run name is the run folder's name inside --output-dir: '../escaped' or an absolute path put it elsewhere
    (they used to, exit 0). Refused in one line, exit 2, nothing written anywhere."""
    (tmp_path / "escape.yaml").write_text("run_name: ../escaped\n")
    tiny = ["--dataset", "synthetic", "--width", "0.0625", "--epochs", "1", "--num-workers", "0", "--train-subset",
            "100", "--test-subset", "50", "--no-explain-at-end", "--output-dir", str(tmp_path / "work" / "runs")]
    code = cli.main([command, *tiny, *(arg.format(tmp=tmp_path) for arg in given)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"ignite-cifar: error: run_name: {name.format(tmp=tmp_path)!r} is "), err
    assert ("leave --run-name out" if not name else "the run folder goes inside --output-dir") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["escape.yaml"]


def test_bad_master_port_exits_2_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MASTER_PORT", "http")
    code = cli.main(["train", "--dataset", "synthetic", "--nproc-per-node", "2", "--output-dir",
                     str(tmp_path / "runs"), "--width", "0.0625"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "MASTER_PORT='http'" in err
    assert not (tmp_path / "runs").exists()


def test_spawned_runs_rendezvous_on_a_free_port(monkeypatch):
    import socket

    from ignite_cifar.training.launch import master_port

    monkeypatch.delenv("MASTER_PORT", raising=False)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        try:
            held.bind(("127.0.0.1", 2222))  # ignite's fixed default: a port another run may hold
        except OSError:
            pass  # someone holds it already, which serves the test as well
        port = master_port()
        assert port != 2222
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))  # free when handed out
    monkeypatch.setenv("MASTER_PORT", "29511")
    assert master_port() == 29511


def test_offline_cifar10_download_exits_2_with_hint(tmp_path, monkeypatch, capsys):
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # nothing listens there
    code = cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
                     "--output-dir", str(tmp_path / "runs"), "--width", "0.0625"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "could not download CIFAR-10" in err and "--dataset folder" in err and "cifar-10-batches-py" in err


def test_skip_bad_images_skips_and_counts(tmp_path):
    from ignite_cifar.training.launch import train

    data_dir = _image_folder(tmp_path / "imgs", corrupt="a", per_class=3)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        result = train(tiny_config(tmp_path, dataset="folder", data_dir=str(data_dir), train_subset=0, test_subset=0,
                                   skip_bad_images=True, epochs=1, batch_size=4, n_misclassified=2))
    derived = yaml.safe_load((Path(result["run_dir"]) / "config.yaml").read_text())["derived"]
    assert derived["skipped_images"] == 1 and derived["train_images"] == 6


@pytest.mark.slow
def test_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ignite_cifar", "train", "--epochs", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ignite-cifar: error: epochs: must be >= 1, got 0"
    proc = subprocess.run([sys.executable, "-m", "ignite_cifar", "train", "--epochs", "0", "--debug"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.slow
def test_a_bad_flag_value_is_refused_before_torch_is_imported():
    """The one-line refusal comes at once, not after the seconds torch takes to import."""
    code = ("import sys; from ignite_cifar.cli import main; code = main(['train', '--lr', '-1']); "
            "print(code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["2", "False"], proc.stderr
    assert proc.stderr.strip() == "ignite-cifar: error: lr: must be > 0, got -1.0"


class _Marker:
    """Unpickling this runs os.system: a stand-in for a malicious checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_checkpoint_with_code_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "runs" / "evil" / "checkpoints" / "last_checkpoint_1.pt"
    crafted.parent.mkdir(parents=True)
    torch.save({"model": {}, "payload": _Marker(marker)}, crafted)
    with pytest.raises(CheckpointError, match="not a safe checkpoint"):
        files.load_checkpoint(crafted)
    (crafted.parent.parent / "config.yaml").write_text("dataset: synthetic\nwidth: 0.0625\n")
    for argv in (["train", "--resume", str(crafted)], ["evaluate", "--checkpoint", str(crafted)],
                 ["explain", "--run", str(crafted.parent.parent)]):
        assert cli.main(argv) == 2, argv
        assert "not a safe checkpoint" in capsys.readouterr().err
    assert not marker.exists()
    # and the same object unpickled without the guard would have run it: the test's payload is real
    with open(crafted, "rb") as fh:
        torch.load(fh, weights_only=False)
    assert marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path):
    from ignite_cifar.training.launch import train

    result = train(tiny_config(tmp_path, run_name="plain", epochs=1, explain_at_end=False))
    written = sorted((Path(result["run_dir"]) / "checkpoints").glob("*.pt"))
    assert [p.name.split("_")[0] for p in written] == ["best", "last"]  # the loop below has files to check
    for path in written:
        torch.load(path, weights_only=True)  # raises on anything but tensors and plain Python values


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "history.json"
    files.write_json(target, {"epochs": [1]})

    def crash(tmp):
        Path(tmp).write_text('{"epochs": [1, 2')  # half written ...
        raise OSError("disk full")  # ... then the crash

    with pytest.raises(MachineError, match=f"cannot write {target}: disk full"):  # one line, naming file and cause
        files.atomic_write(target, crash)
    assert json.loads(target.read_text()) == {"epochs": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]  # no temporary file left behind


def _train_under_file_size_limit(args: list[str], limit: int) -> subprocess.CompletedProcess:
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (%d, %d)); "
            "from ignite_cifar.cli import main; sys.exit(main(sys.argv[1:]))" % (limit, limit))
    return subprocess.run([sys.executable, "-c", code, "train", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_write_the_machine_refuses_ends_in_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """A file-size limit (as a full disk would) makes the next checkpoint fail: exit 1, one line naming the file,
    the cause and the last good checkpoint, which is still there and loads."""
    run_dir = Path(train(tiny_config(tmp_path, run_name="limited", epochs=1, explain_at_end=False))["run_dir"])
    kept = files.find_checkpoint(run_dir)
    done = _train_under_file_size_limit(["--resume", str(run_dir), "--epochs", "2"], 100_000)
    last_line = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert last_line.startswith(f"ignite-cifar: error: cannot write {run_dir / 'checkpoints'}")
    assert "ulimit -f" in last_line and f"Last good checkpoint: {kept}" in last_line
    assert files.find_checkpoint(run_dir) == kept and files.load_checkpoint(kept)["trainer"]["iteration"] == 6
    assert not list((run_dir / "checkpoints").glob("*.tmp")) and not list((run_dir / "checkpoints").glob("tmp*"))


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # TensorBoard's writer thread
def test_a_vanished_output_folder_ends_in_one_line(tmp_path, monkeypatch, capsys):
    from ignite.engine import Events

    real = engines.create_trainer

    def vanishing(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3),
                                  lambda _: shutil.rmtree(tmp_path / "runs" / "gone"))
        return trainer

    monkeypatch.setattr(engines, "create_trainer", vanishing)
    config = tiny_config(tmp_path, run_name="gone", epochs=1)
    argv = ["train", "--dataset", "synthetic", "--width", "0.0625", "--epochs", "1", "--num-workers", "0",
            "--train-subset", "300", "--test-subset", "100", "--batch-size", "50", "--output-dir",
            config.output_dir, "--run-name", "gone"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()  # the whole of stderr: no thread's traceback above the line
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("ignite-cifar: error: cannot write") and "gone" in err and "Last good checkpoint" in err
