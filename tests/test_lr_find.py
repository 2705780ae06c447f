"""lr-find: ignite's FastaiLRFinder on a tiny synthetic setup, the files it writes, and its one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from PIL import Image

from ignite_cifar import cli
from ignite_cifar.config import RangeTest
from ignite_cifar.training import engines
from ignite_cifar.training.lr_find import lr_find

from .helpers import tiny_config

TINY = ["--dataset", "synthetic", "--width", "0.125", "--train-subset", "200", "--test-subset", "20",
        "--batch-size", "40", "--num-workers", "0"]
NUM_ITER = 10


def _strict_json(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    """One tiny lr-find through the CLI, with the temporary folder (where the finder caches the starting state)
    pointed at a folder of its own and every torch.save recorded:
    (exit code, stdout, run folder, that temporary folder, root, the paths torch.save wrote)."""
    root = tmp_path_factory.mktemp("lrfind")
    cache = root / "tmp"
    cache.mkdir()
    out, saved = io.StringIO(), []
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        saved.append(Path(f))
        return real_save(obj, f, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(tempfile, "tempdir", str(cache))
        mp.setattr(torch, "save", save)
        code = cli.main(["lr-find", *TINY, "--num-iter", str(NUM_ITER), "--output-dir", str(root / "runs"),
                         "--run-name", "tiny"])
    return code, out.getvalue(), root / "runs" / "tiny", cache, root, saved


def test_writes_a_png_and_the_json_and_nothing_else(found):
    code, _, run_dir, _, root, _ = found
    assert code == 0
    assert sorted(p.name for p in run_dir.iterdir()) == ["lr_find.json", "lr_find.png"]
    assert [p.name for p in (root / "runs").iterdir()] == ["tiny"]
    assert (run_dir / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(run_dir / "lr_find.png") as image:
        image.verify()
        assert image.format == "PNG" and min(image.size) > 100


def test_the_weights_it_trained_are_kept_nowhere(found):
    _, _, _, cache, root, saved = found
    # the one torch.save is the finder's copy of the starting state, in a temporary folder that is gone now
    assert len(saved) == 1 and saved[0].parent.parent == cache and not saved[0].parent.exists()
    assert not list(root.rglob("*.pt")) and not list(root.rglob("checkpoints"))


def test_lrs_rise_exponentially_from_start_lr_to_end_lr(found):
    report = _strict_json(found[2] / "lr_find.json")
    lrs, start, end, n = report["lrs"], report["start_lr"], report["end_lr"], report["num_iter"]
    assert (start, end, n) == (1e-5, 1.0, NUM_ITER)
    assert len(lrs) == len(report["losses"]) == report["iterations_run"]
    assert len(lrs) == n if report["diverged_at_lr"] is None else len(lrs) <= n
    assert lrs == pytest.approx([start * (end / start) ** ((k + 1) / n) for k in range(len(lrs))], rel=1e-9)


def test_the_suggestion_is_fastai_steepest_descent_within_the_range(found):
    _, stdout, run_dir, _, _, _ = found
    report = _strict_json(run_dir / "lr_find.json")
    lrs, losses, suggested = report["lrs"], report["losses"], report["suggested_lr"]
    assert report["start_lr"] <= suggested <= report["end_lr"]
    lowest = losses.index(min(loss for loss in losses if loss is not None))
    assert report["lowest_loss_lr"] == lrs[lowest] and report["lowest_loss"] == losses[lowest]
    slopes = [losses[i + 1] - losses[i - 1] for i in range(1, lowest)]
    assert suggested == lrs[1 + slopes.index(min(slopes))]
    assert report["suggestion_rule"].startswith("steepest descent of the smoothed loss")
    assert stdout == (f"suggested lr: {suggested:.3g} (steepest descent of the smoothed loss); "
                      f"wrote {run_dir / 'lr_find.png'}\n")


def test_the_json_records_the_config_it_used(found):
    report = _strict_json(found[2] / "lr_find.json")
    config = report["config"]
    assert config["width"] == 0.125 and config["batch_size"] == 40 and config["dataset"] == "synthetic"
    assert "epochs" not in config and "lr" not in config  # the test sets the lr; there are no epochs
    assert len(report["derived"]["mean"]) == 3 and report["derived"]["device"] == "cpu"


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """id: (argv, words the one-line message must contain)."""
    out = ["--output-dir", str(tmp / "runs")]
    return {
        "start-above-end": ([*TINY, *out, "--start-lr", "1", "--end-lr", "0.1"], ["start_lr", "below end_lr"]),
        "start-equals-end": ([*TINY, *out, "--start-lr", "0.1", "--end-lr", "0.1"], ["start_lr", "below end_lr"]),
        "start-zero": ([*TINY, *out, "--start-lr", "0"], ["start_lr", "> 0"]),
        "one-iteration": ([*TINY, *out, "--num-iter", "1"], ["num_iter", ">= 3"]),
        "no-iterations": ([*TINY, *out, "--num-iter", "0"], ["num_iter", ">= 3"]),
        "start-not-a-number": ([*TINY, *out, "--start-lr", "fast"], ["--start-lr", "fast"]),
        "two-processes": ([*TINY, *out, "--nproc-per-node", "2"], ["nproc_per_node", "one process"]),
        # an existing folder, so that lr-find's own guard answers (not a missing-path check before it)
        "resume": ([*TINY, *out, "--resume", str(tmp)], ["resume", "fresh weights"]),
        "missing-data-dir": (["--dataset", "folder", "--data-dir", str(tmp / "missing"), *out],
                             ["does not exist", "--data-dir"]),
        "width-zero": ([*TINY, *out, "--width", "0"], ["width", "> 0"]),
    }


@pytest.mark.parametrize("case", list(_bad_inputs(Path("."))))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    argv, words = _bad_inputs(tmp_path)[case]
    try:
        code = cli.main(["lr-find", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("ignite-cifar: error:"), err
    assert "Traceback" not in err and all(w in err for w in words), (words, err)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_folder_that_holds_a_result_is_not_overwritten(found, capsys):
    _, _, run_dir, _, root, _ = found
    before = (run_dir / "lr_find.json").read_bytes()
    for argv in (["--output", str(run_dir)], ["--output-dir", str(root / "runs"), "--run-name", "tiny"]):
        assert cli.main(["lr-find", *TINY, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(run_dir) in err, err
    assert (run_dir / "lr_find.json").read_bytes() == before


@pytest.fixture
def batch_losses(monkeypatch):
    """Replace the trainer's batch losses by a given sequence (the finder reads them from the trainer's output)."""

    def use(values):
        real = engines.create_trainer

        def create_trainer(*args, **kwargs):
            trainer = real(*args, **kwargs)

            @trainer.on(Events.ITERATION_COMPLETED)
            def replace(engine):
                engine.state.output["loss"] = torch.tensor(values[engine.state.iteration - 1])

            return trainer

        monkeypatch.setattr(engines, "create_trainer", create_trainer)

    return use


def test_a_nan_loss_stops_the_test_as_diverged_and_still_suggests(tmp_path, batch_losses):
    batch_losses([3.0, 2.8, 2.5, 2.1, 1.9, 1.8, math.nan, 1.0, 1.0, 1.0])
    report = lr_find(tiny_config(tmp_path, width=0.125, train_subset=200, test_subset=20, batch_size=40),
                     RangeTest(num_iter=NUM_ITER))
    assert report["iterations_run"] == 7 and report["losses"][-1] is None
    assert report["diverged_at_lr"] == report["lrs"][-1]
    assert report["lowest_loss_lr"] == report["lrs"][5]
    assert report["lrs"][0] <= report["suggested_lr"] < report["lowest_loss_lr"]
    _strict_json(Path(report["run_dir"]) / "lr_find.json")


def test_a_loss_that_only_rises_gives_no_suggestion_in_one_line_but_keeps_the_curve(tmp_path, batch_losses, capsys):
    batch_losses([2.0, 2.1, 2.2, 2.3, 2.4])
    argv = ["lr-find", *TINY, "--num-iter", "5", "--output", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ignite-cifar: error: no suggested lr"), err
    report = _strict_json(tmp_path / "out" / "lr_find.json")
    assert report["suggested_lr"] is None and report["lowest_loss_lr"] == report["lrs"][0]
    assert (tmp_path / "out" / "lr_find.png").is_file()

