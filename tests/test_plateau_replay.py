"""benchmarks/study/plateau_replay.py: the project's plateau scheduler fed a run's recorded val metrics cuts where
torch's rules say, skips a warmup's epochs, and never claims a cut beyond the run's own first one."""

from __future__ import annotations

import json

import yaml

from ignite_cifar.training.schedules import Plateau

from .helpers import load_benchmark

load_benchmark("study_log_curves")  # plateau_replay imports it
plateau_replay = load_benchmark("plateau_replay")

LOSSES = [1.0, 0.9, 0.895, 0.893, 0.892]  # after epoch 2 only gains far below 0.01


def test_an_absolute_threshold_cuts_where_small_gains_stop_counting():
    absolute = Plateau(patience=2, threshold=0.01, threshold_mode="abs")
    # epochs 3, 4 and 5 do not beat 0.9 by 0.01: the third such epoch exceeds patience 2, so epoch 6 is cut
    assert plateau_replay.replay(LOSSES, absolute) == 6
    assert plateau_replay.replay(LOSSES, Plateau(patience=2)) is None  # relative 1e-4: every epoch improves
    assert plateau_replay.replay(LOSSES, absolute, warmup_epochs=2) is None  # counting starts at epoch 3
    accuracy = Plateau(patience=1, metric="accuracy", threshold=0.005, threshold_mode="abs")
    assert plateau_replay.replay([0.5, 0.6, 0.603, 0.604], accuracy) == 5  # two epochs short of +0.005


def _run(tmp_path, name, epochs, **config):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "history.json").write_text(json.dumps({"epochs": epochs}))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"plateau_factor": 0.1, "plateau_patience": 2, "min_lr": 1e-5, **config}))
    return plateau_replay.read_run(run_dir)


def test_a_run_answers_only_up_to_its_own_first_cut(tmp_path):
    lrs = [0.1] * 5 + [0.01] * 2  # its own setting cut after epoch 5
    epochs = [{"epoch": i + 1, "val_loss": v, "val_accuracy": 0.5, "lr": lr, "next_lr": nxt}
              for i, (v, lr, nxt) in enumerate(zip(LOSSES + [0.7, 0.6], lrs, lrs[1:] + [0.01], strict=True))]
    run = _run(tmp_path, "cut", epochs, plateau_threshold=0.01, plateau_threshold_mode="abs")
    assert run.first_cut == 6 and len(run.epochs) == 5 and run.own_on == "raw"  # no average: the raw weights
    assert plateau_replay.own_settings_agree(run)
    assert plateau_replay.answer(run, "raw", Plateau(patience=2)) == "> 5"  # not cut while its lr held
    assert plateau_replay.answer(run, "ema", Plateau()) == "no average"


def test_an_older_run_without_the_plateau_flags_replays_with_their_defaults(tmp_path):
    epochs = [{"epoch": i + 1, "val_loss": v, "raw_val_loss": v + 0.1, "lr": 1e-3, "next_lr": 1e-3}
              for i, v in enumerate(LOSSES)]
    run = _run(tmp_path, "old", epochs, ema_decay=0.999)
    assert run.own == Plateau(min_lr=1e-5) and run.own_on == "ema" and run.first_cut is None
    assert plateau_replay.own_settings_agree(run)
    assert plateau_replay.answer(run, "raw", Plateau(patience=2, threshold=0.01, threshold_mode="abs")) == "6"
    assert plateau_replay.answer(run, "ema", Plateau()) == "never"


def _epoch_line(run: str, epoch: int, planned: int, loss: float, lr: float) -> str:
    return (f"[{run}] epoch {epoch}/{planned}  train loss 1.0 acc 50.00%  val loss {loss:.4f} acc 60.00%  "
            f"lr {lr:g}  12.5s\n[{run}]          raw weights: val loss {loss + 0.1:.4f} acc 55.00%  (0.4s)\n")


def test_a_logged_run_stopped_early_answers_only_for_its_recorded_epochs(tmp_path):
    """From a gpu_study.sh log: the settings come from assignment.yaml and the run's recipe; a run the budget stopped
    never says 'never', only that no cut came in the epochs it recorded."""
    log = tmp_path / "call1" / "study.log"
    log.parent.mkdir()
    log.write_text("".join(_epoch_line("combination-weight-std", i + 1, 40, loss, 0.001)
                           for i, loss in enumerate(LOSSES)))
    [run] = plateau_replay.read_logged_runs(log)
    assert run.name == "call1/combination-weight-std" and not run.complete and run.own_on == "ema"
    assert run.own == Plateau(patience=2)  # the default recipe's: relative 1e-4 on the average's val loss
    assert plateau_replay.recorded_cut(run) == "> 5" and plateau_replay.own_settings_agree(run)
    assert plateau_replay.answer(run, "ema", Plateau(patience=2, threshold=0.01, threshold_mode="abs")) == "6"
    assert plateau_replay.answer(run, "ema", Plateau(patience=4, threshold=0.01, threshold_mode="abs")) == "> 5"
    assert plateau_replay.answer(run, "raw", Plateau(patience=2)) == "> 5"


def test_a_logged_run_without_a_recipe_is_refused_in_one_line(tmp_path, capsys):
    log = tmp_path / "study.log"
    log.write_text(_epoch_line("no-such-recipe", 1, 40, 1.0, 0.001))
    assert plateau_replay.main(["--logs", str(log)]) == 2
    assert capsys.readouterr().err.strip().endswith("names no recipe benchmarks/study/recipes/no-such-recipe.yaml")


def test_a_kept_record_replays_on_accuracy_and_says_its_losses_were_not_recorded(tmp_path):
    val = {"1": 0.5, "2": 0.6, "3": 0.601, "4": 0.602}
    record = {"variant": "combination-weight-std", "epochs_done": 4, "epochs": 4, "val": val,
              "raw_val": {e: v - 0.05 for e, v in val.items()}, "lr": [[e, 0.001] for e in range(1, 5)]}
    path = tmp_path / "combination-weight-std.json"
    path.write_text(json.dumps(record))
    run = plateau_replay.read_record(path)
    accuracy = Plateau(patience=1, metric="accuracy", threshold=0.005, threshold_mode="abs")
    assert plateau_replay.answer(run, "ema", accuracy) == "5"  # epochs 3 and 4 gain under 0.005 on 0.6
    assert plateau_replay.answer(run, "raw", Plateau()) == "not recorded"  # a record keeps no losses
    assert plateau_replay.own_settings_agree(run)  # its own (loss) setting cannot be checked, so it is not refuted
