"""The run as the public API hands it out: train()'s RunResult, open_run, resume and show_log."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

import ignite_cifar
from ignite_cifar.errors import UserError

from .helpers import tiny_config


def test_train_returns_the_run_with_its_records_and_figures(smoke_run):
    run_dir, result = smoke_run
    assert isinstance(result, ignite_cifar.RunResult) and result.run_dir == run_dir
    history = json.loads((run_dir / "history.json").read_text())
    assert result.history == history["epochs"] and result.epochs == 2 and result.finished
    assert result.val_accuracy == history["epochs"][-1]["val_accuracy"]
    assert result.test == history["final_test"]
    listed = json.loads((run_dir / "misclassified.json").read_text())["mistakes"]
    assert result.mistakes == listed and result.mistake_indices == [m["index"] for m in listed]
    assert set(result.figures) == {"curves", "mistakes", "gradcam", "confusion", "faithfulness"}
    assert result.config.epochs == 2 and result.config.dataset == "synthetic"
    assert result.tensorboard_dir == run_dir / "tb"
    # what train() returned before it returned a RunResult
    assert (result["run_dir"], result["epochs"], result["val_accuracy"]) == (str(run_dir), 2, result.val_accuracy)


def test_open_run_reads_the_same_run_and_refuses_a_folder_that_is_none(smoke_run, tmp_path):
    run_dir, result = smoke_run
    opened = ignite_cifar.open_run(str(run_dir))
    assert opened.mistake_indices == result.mistake_indices and opened.history == result.history
    assert repr(opened).startswith(f"RunResult({str(run_dir)!r}: 2 epochs, val accuracy ")
    with pytest.raises(UserError, match="is not a run folder"):
        ignite_cifar.open_run(tmp_path)
    (tmp_path / "config.yaml").write_text((run_dir / "config.yaml").read_text())  # stopped before epoch 1 ended
    early = ignite_cifar.open_run(tmp_path)
    assert (early.history, early.epochs, early.val_accuracy, early.test, early.mistakes) == ([], 0, None, None, [])


def test_faithfulness_says_each_target_and_what_it_means(smoke_run):
    _, result = smoke_run
    text = result.faithfulness()
    verdict = json.loads((result.run_dir / "explanations.json").read_text())["groups"]["mistakes"]["verdict"]
    assert "deletion ratio" in text and "insertion gain" in text and f"sanity check {verdict['sanity']}" in text
    assert text.splitlines()[-1].startswith("faithful: " + ("yes" if verdict["faithful"] else "no ("))


def test_show_prints_the_indices_and_outside_ipython_the_figure_paths(smoke_run, capsys):
    _, result = smoke_run
    mistakes_out, gradcam_out = _two(capsys, result)
    assert str(result.mistake_indices) in mistakes_out and str(result.mistake_indices) in gradcam_out
    assert mistakes_out.endswith("misclassified.png") and gradcam_out.endswith("gradcam.png")


def _two(capsys, result):
    result.show_mistakes()
    first = capsys.readouterr().out.strip()
    result.show_gradcam()
    return first, capsys.readouterr().out.strip()


def test_explain_images_on_the_run_writes_and_returns_the_entries(smoke_run, tmp_path, capsys):
    _, result = smoke_run
    picture = tmp_path / "mine.png"
    Image.fromarray(np.full((40, 50, 3), 120, dtype=np.uint8)).save(picture)
    entries = result.explain_images([picture], output=tmp_path / "out", device="cpu")
    assert [e["image"] for e in entries] == [str(picture)] and len(entries[0]["top"]) == 3
    assert (tmp_path / "out" / "own_images.png").is_file()
    assert capsys.readouterr().out.strip().endswith("own_images.png")


def test_resume_continues_a_run_with_the_changes_given(tmp_path):
    first = ignite_cifar.train(tiny_config(tmp_path, run_name="short", epochs=1, explain_at_end=False))
    again = ignite_cifar.resume(first.run_dir, epochs=2)
    assert again.run_dir == first.run_dir and again.epochs == 2 and again.config.epochs == 2
    assert not again.finished  # the run's own explain_at_end (off) still holds


def test_show_log_prints_the_run_lines_once_where_asked():
    stream = io.StringIO()
    logger = logging.getLogger("ignite_cifar")
    before = list(logger.handlers), logger.level, logger.propagate
    try:
        ignite_cifar.show_log(io.StringIO())
        ignite_cifar.show_log(stream)  # again: replaces the first, no line twice
        logger.info("epoch 1/2")
        assert stream.getvalue() == "epoch 1/2\n"
    finally:
        logger.handlers[:], logger.level, logger.propagate = before[0], before[1], before[2]
