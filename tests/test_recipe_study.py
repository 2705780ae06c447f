"""The recipe study driver in dry mode: runs each variant, skips finished runs, resumes unfinished ones, restarts
a run killed before its first checkpoint, and writes the report into the study folder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ignite_cifar import cli
from ignite_cifar.configs import outside_rules

from .helpers import load_benchmark

load_benchmark("recipe_rule")  # recipe_report imports it
recipe_report = load_benchmark("recipe_report")
recipe_study = load_benchmark("recipe_study")

VARIANTS = ["assignment", "adam"]


def _study(study_dir: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = recipe_study.main(["--dry", "--study-dir", str(study_dir), "--only", *VARIANTS, *extra])
    return code, capsys.readouterr().out


def _history(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())


def test_every_variant_file_names_what_it_changes_and_is_a_valid_config():
    variants = {v.name: v for v in recipe_study.load_variants()}
    assert {"assignment", "assignment-seed2", "zero-init", "label-smoothing", "gentle-plateau", "adam",
            "warmup", "ema", "combination"} <= set(variants)
    assert all(v.about for v in variants.values())
    assert variants["assignment"].overrides == {} and variants["assignment-seed2"].overrides == {"seed": 43}
    assert variants["adam"].overrides == {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0001}


def test_a_variant_is_described_by_all_its_leading_comment_lines():
    text = "# Warm up over 3 epochs\n# to the range test's peak.\nlr: 0.04\n# not this one\n"
    assert recipe_study.header_comment(text) == "Warm up over 3 epochs to the range test's peak."
    assert recipe_study.header_comment("lr: 0.04\n") == ""


def test_baselines_run_first_and_the_combination_last(tmp_path):
    names = ["zero-init", "combination", "adam", "assignment-seed2", "assignment"]
    ordered = sorted((tmp_path / f"{n}.yaml" for n in names), key=recipe_study._run_order)
    assert [p.stem for p in ordered] == ["assignment", "assignment-seed2", "adam", "zero-init", "combination"]


@pytest.mark.slow
def test_study_resumes_restarts_and_skips(tmp_path, capsys):
    """The study's calls as real processes: one resumes a run stopped between epochs and restarts one killed before
    its first checkpoint, the next skips both. (A run with no folder at all is started by the same step; the
    full-width driver's dry run, tests/test_full_width_cpu.py, starts one.)"""
    study_dir = tmp_path / "study"
    committed = [recipe_study.RECIPES.parent / name for name in (recipe_report.REPORT, recipe_report.CURVES)]
    committed += sorted(recipe_report.RECORDS.glob("*.json"))
    committed_before = [p.read_bytes() if p.exists() else None for p in committed]
    # adam stopped after its first epoch (what a kill between epochs leaves) ...
    variant = next(v for v in recipe_study.load_variants(["adam"]))
    cmd = recipe_study.train_command(variant, study_dir, recipe_study.DRY_FLAGS) + ["--epochs", "1"]
    assert cmd[1:4] == ["-m", "ignite_cifar", "train"]
    assert cli.main(cmd[3:]) == 0  # in this process: the study's own calls below are the processes under test
    first_epoch = _history(study_dir / "adam")["epochs"]
    assert len(first_epoch) == 1
    # ... and assignment as a kill in its first epoch leaves it: the folder claimed, no checkpoint yet
    (study_dir / "assignment").mkdir()
    (study_dir / "assignment" / "config.yaml").write_text("seed: 42\n")

    code, out = _study(study_dir, capsys)
    assert code == 0 and "adam: resumed after epoch 1" in out
    assert "assignment: started (moved the folder without a checkpoint to" in out
    assert len(list((study_dir / "aborted").glob("assignment-*"))) == 1
    epochs = recipe_study.DRY_FLAGS["epochs"]
    for name in VARIANTS:
        history = _history(study_dir / name)
        assert len(history["epochs"]) == epochs and "final_test" in history
    assert _history(study_dir / "adam")["epochs"][0] == first_epoch[0]  # kept, not retrained
    assert len(list((study_dir / "adam" / "tb").glob("events.out.tfevents.*"))) == 2  # two processes, one run
    assert "--resume" in (study_dir / "adam.log").read_text()
    config = (study_dir / "adam" / "config.yaml").read_text()
    assert "optimizer: adam" in config and "width: 0.0625" in config
    report = (study_dir / recipe_report.REPORT).read_text()
    assert "| assignment | finished | 42 | fp32 |" in report and "| adam | finished |" in report
    assert "| zero-init | not started |" in report and (study_dir / recipe_report.CURVES).stat().st_size > 0
    records = sorted(p.stem for p in (study_dir / "recipe-runs").glob("*.json"))
    assert records == sorted(VARIANTS)
    assert [p.read_bytes() if p.exists() else None for p in committed] == committed_before  # dry: not touched

    # again: both finished runs are skipped, their files untouched
    before = {n: (study_dir / n / "history.json").read_bytes() for n in VARIANTS}
    logs = {n: (study_dir / f"{n}.log").read_text() for n in VARIANTS}
    code, out = _study(study_dir, capsys)
    assert code == 0 and "assignment: skipped (finished)" in out and "adam: skipped (finished)" in out
    assert {n: (study_dir / n / "history.json").read_bytes() for n in VARIANTS} == before
    assert {n: (study_dir / f"{n}.log").read_text() for n in VARIANTS} == logs


def test_report_only_trains_nothing_and_shows_the_noise_rule(tmp_path, capsys):
    code, out = _study(tmp_path / "empty", capsys, "--report-only")
    assert code == 0 and "started" not in out
    report = (tmp_path / "empty" / recipe_report.REPORT).read_text()
    assert "| assignment | not started |" in report and "twice" in report and "--val-split 0" in report
    assert not (tmp_path / "empty" / "assignment").exists()


def test_the_report_shows_dir_in_place_of_this_machines_data_folder(tmp_path):
    data = str(tmp_path / "cifar10-jpeg")
    setting = {**recipe_study.STUDY_FLAGS, "data_dir": data}
    recipe_study.report(recipe_study.load_variants(VARIANTS), tmp_path / "s", setting, tmp_path, "note")
    report = (tmp_path / recipe_report.REPORT).read_text()
    assert "--data-dir DIR " in report and data not in report


@pytest.mark.parametrize("argv, words", [
    (["--only", "nonesuch"], ["--only", "nonesuch", "assignment"]),
    # a run's name is a recipe file's, nothing else
    (["--only", "../assignment"], ["--only", "../assignment", "assignment"]),
    (["--data-dir", "/no/such/folder"], ["--data-dir", "/no/such/folder", "train/"]),
    ([], ["--data-dir", "not given"]),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, words):
    code = recipe_study.main(["--study-dir", str(tmp_path / "s"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and all(w in err for w in words)
    assert not (tmp_path / "s").exists()


def test_the_recipe_files_say_when_they_leave_the_assignments_rules():
    """A recipe outside the rules says so in the first words of its description, and the others keep them."""
    for variant in recipe_study.load_variants():
        outside = bool(outside_rules(variant.overrides))
        assert outside == variant.about.startswith("OUTSIDE THE ASSIGNMENT'S RULES"), variant.name


def test_a_kept_record_gives_the_same_row_once_the_run_folder_is_gone(tmp_path):
    summary = {"epochs_done": 2, "epochs": 2, "state": "finished", "val": {1: 0.5, 2: 0.6}, "raw_val": {2: 0.55},
               "lr": [(1, 0.01), (2, 0.001)], "best": (2, 0.6), "test_accuracy": 0.6, "lr_drops": [(2, 0.001)],
               "images_per_s": 123.0, "wall_s": 60.0, "seed": 44, "precision": "bfloat16, channels_last",
               "machines": ["AMD EPYC (family 25, model 17), AVX512 kernels"], "source": "run folder x"}
    recipe_report.save_record("x", summary, tmp_path)
    kept = recipe_report.load_record("x", tmp_path)
    assert kept == summary
    variant = recipe_study.Variant("x", "")
    rows = [recipe_report._row({**s, "variant": variant}) for s in (summary, kept)]
    assert rows[0] == rows[1] and "| x | finished | 44 | bfloat16 |" in rows[0]
    assert "| 60.00 | 55.00 | 2 (1e-03) |" in rows[0]  # final test, then the raw weights at the last epoch
    assert recipe_report.load_record("nothing", tmp_path) is None
    old = json.loads((tmp_path / "x.json").read_text())  # a record kept before raw_val existed
    del old["raw_val"]
    (tmp_path / "x.json").write_text(json.dumps(old))
    assert recipe_report.load_record("x", tmp_path)["raw_val"] == {}


def test_a_record_names_each_machine_the_run_trained_on_once():
    first = {"cpu": "A", "cpu_kernels": "AVX2"}
    derived = {"machine": {"cpu": "B", "cpu_kernels": "AVX512", "cpu_bf16": "avx512_bf16"},
               "earlier_starts": [{"machine": first}, {"torch_threads": 2}, {"machine": first}]}
    assert recipe_report.machines_of(derived) == ["A, AVX2 kernels",
                                                  "B, AVX512 kernels, bf16 instructions: avx512_bf16"]
    assert recipe_report.machines_of({"precision": "fp32"}) is None  # written before runs named their machine


def test_wall_time_adds_the_segments_of_a_resumed_run():
    records = [{"wall_seconds": 10.0}, {"wall_seconds": 20.0}, {"wall_seconds": 12.0}, {"wall_seconds": 25.0}]
    assert recipe_report.wall_seconds(records) == 45.0


@pytest.mark.slow
def test_a_signal_stops_the_study_even_when_the_run_dies_of_it(tmp_path):
    """A SIGTERM that reaches a CLI still starting up kills it (exit -15) instead of a clean 143: the study must
    stop all the same, not go on to the next variant. The study runs as its own process, as a user starts it."""
    log = tmp_path / "x.log"
    study = (f"import sys; sys.path.insert(0, {str(recipe_study.RECIPES.parent)!r}); import recipe_study; "
             f"print(recipe_study.run_logged([sys.executable, '-c', 'import time; time.sleep(60)'], "
             f"__import__('pathlib').Path({str(log)!r})))")
    proc = subprocess.Popen([sys.executable, "-c", study], stdout=subprocess.PIPE, text=True)
    while "time.sleep(60)" not in (log.read_text() if log.exists() else ""):  # its child has been started
        assert proc.poll() is None, "the study ended before starting its child"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate()
    assert proc.returncode == 0 and out.strip() == str(128 + signal.SIGTERM)


def test_a_run_stopped_by_a_signal_stops_the_loop_after_its_report(tmp_path, monkeypatch, capsys):
    """run_each, shared by the recipe study and the full-width driver: a run ending in 143 (SIGTERM) or 130
    (Ctrl-C) is reported and nothing after it starts; other failures are remembered and the loop goes on."""
    calls, reports = [], []
    codes = {"a": 1, "b": 143, "c": 0}
    monkeypatch.setattr(recipe_study, "step",
                        lambda v, d, s, kept: (calls.append(v.name), ("started", codes[v.name]))[1])
    variants = [recipe_study.Variant(name, "") for name in codes]
    code = recipe_study.run_each(variants, tmp_path / "s", {}, lambda: reports.append(len(calls)))
    assert code == 143 and calls == ["a", "b"] and reports == [1, 2]
    assert "resume b" in capsys.readouterr().out
    codes["b"] = 0
    calls.clear()
    assert recipe_study.run_each(variants, tmp_path / "s", {}, lambda: None) == 1 and calls == ["a", "b", "c"]


def test_a_finished_run_known_only_by_its_record_is_not_trained_again(tmp_path, monkeypatch):
    """On a new machine the run folders are gone but the committed records stay: `make full-width-cpu` must not
    spend hours retraining a seed that finished."""
    monkeypatch.setattr(recipe_study, "run_logged", lambda *a: pytest.fail("it trained"))
    variant = recipe_study.load_variants(["adam"])[0]
    kept = tmp_path / "recipe-runs"
    kept.mkdir()
    (kept / "adam.json").write_text("{}")
    done, code = recipe_study.step(variant, tmp_path / "study", recipe_study.DRY_FLAGS, kept)
    assert code == 0 and done == "skipped (finished; its record is kept in recipe-runs/)"
