"""The full-width CPU driver: the default's two seeds through the recipe study's machinery, at width 1.0, with a
report that counts only finished runs toward the full-width target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import REPO, load_benchmark

load_benchmark("recipe_rule")
load_benchmark("recipe_report")
recipe_study = load_benchmark("recipe_study")
full_width_cpu = load_benchmark("full_width_cpu")


def _summary(state: str, accuracy: float | None = None, epochs_done: int = 40, wall_s: float = 0.0) -> dict:
    return {"state": state, "test_accuracy": accuracy, "epochs_done": epochs_done, "epochs": 40, "wall_s": wall_s}


def test_it_runs_the_default_its_second_seed_and_the_cutting_variant_at_full_width():
    variants = {v.name: v for v in recipe_study.load_variants(list(full_width_cpu.RECIPES))}
    assert [variants[name].overrides.get("seed", 42) for name in full_width_cpu.SEEDS] == [42, 43]
    cutting = variants[full_width_cpu.CUTTING].overrides
    assert cutting.get("seed", 42) == 42 and cutting["plateau_metric"] == "accuracy"
    assert 0.1 <= cutting["plateau_factor"] <= 0.3
    assert full_width_cpu.FULL_WIDTH == {**recipe_study.STUDY_FLAGS, "width": 1.0}


def test_the_two_seeds_run_before_the_cutting_variant(tmp_path, monkeypatch):
    """The study orders its variants by name, which would put `-cut` before `-seed2`; the target needs the seeds."""
    started = []
    monkeypatch.setattr(full_width_cpu, "run_each", lambda variants, *args, **kwargs: started.extend(variants) or 0)
    monkeypatch.setattr(full_width_cpu, "write_report", lambda *args: tmp_path / "report.md")
    assert full_width_cpu.main(["--dry", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert [variant.name for variant in started] == list(full_width_cpu.RECIPES)
    assert full_width_cpu.RECIPES[-1] == full_width_cpu.CUTTING


def test_only_finished_runs_count_toward_the_target():
    line = full_width_cpu.target_line
    assert "not measured yet" in line({"a": _summary("unfinished", None, 12)})
    one = line({"a": _summary("finished", 0.92), "b": _summary("unfinished", None, 3)})
    assert "not decided" in one and "92.00%" in one
    assert "**met**, 91.50% over 2 seeds" in line({"a": _summary("finished", 0.92), "b": _summary("finished", 0.91)})
    assert "**not met**, 89.00%" in line({"a": _summary("finished", 0.88), "b": _summary("finished", 0.90)})


def test_an_unfinished_run_says_how_far_it_is_and_roughly_how_long_it_has_left():
    def record(epoch_s: float) -> dict:
        return {"epoch_seconds": epoch_s, "val_seconds": 30.0, "raw_val_seconds": 30.0}

    records = [record(1500.0), record(480.0), record(500.0)]  # the first one paused: the median ignores it
    line = full_width_cpu.progress_line("a", _summary("unfinished", None, 3, wall_s=2 * 3600), records)
    assert "3 of 40 epochs in 2.0 h" in line and "9.3 min" in line and "about 5.8 h more" in line
    assert full_width_cpu.progress_line("a", _summary("finished", 0.9), records) is None
    assert full_width_cpu.progress_line("a", _summary("aborted", None, 0), []) is None


@pytest.mark.slow
def test_dry_run_trains_then_skips_and_reports(tmp_path, capsys, monkeypatch):
    """One seed, to keep it short: the start / resume / skip machinery is the recipe study's, tested there."""
    monkeypatch.setattr(full_width_cpu, "RECIPES", full_width_cpu.RECIPES[:1])
    runs = tmp_path / "runs"
    committed = [full_width_cpu.HERE / full_width_cpu.REPORT, *sorted(full_width_cpu.RECORDS.glob("*.json"))]
    before = [p.read_bytes() if p.exists() else None for p in committed]
    assert full_width_cpu.main(["--dry", "--runs-dir", str(runs)]) == 0
    assert "combination-weight-std: started" in capsys.readouterr().out
    history = json.loads((runs / "combination-weight-std" / "history.json").read_text())
    assert len(history["epochs"]) == recipe_study.DRY_FLAGS["epochs"] and "final_test" in history
    assert full_width_cpu.main(["--dry", "--runs-dir", str(runs)]) == 0
    assert "combination-weight-std: skipped (finished)" in capsys.readouterr().out
    report = (runs / full_width_cpu.REPORT).read_text()
    assert "DRY RUN" in report and "| combination-weight-std | finished | 42 |" in report
    assert "not decided, 1 seed finished" in report and "--width 0.0625" in report
    assert [p.name for p in (runs / full_width_cpu.RECORDS.name).glob("*.json")] == ["combination-weight-std.json"]
    assert [p.read_bytes() if p.exists() else None for p in committed] == before  # a dry run leaves them alone


@pytest.mark.parametrize("argv, words", [
    (["--data-dir", "/no/such/folder"], ["--data-dir", "/no/such/folder", "train/"]),
    ([], ["--data-dir", "not given"]),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, words):
    code = full_width_cpu.main(["--runs-dir", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("full_width_cpu: error:") and all(w in err for w in words)
    assert not (tmp_path / "r").exists()


def test_runs_live_outside_the_repository_by_default_and_the_report_names_the_folder(tmp_path, monkeypatch):
    """Hours of training must outlive the work tree: a fresh clone or a cleaned tree keeps the home folder."""
    for default in (full_width_cpu.parse_args([]).runs_dir, recipe_study.parse_args([]).study_dir):
        assert not Path(default).resolve().is_relative_to(REPO)
        assert Path(default).resolve().is_relative_to(recipe_study.RUNS_HOME.resolve())
    monkeypatch.setattr(Path, "home", lambda: tmp_path)
    runs = tmp_path / ".cache" / "ignite-cifar" / "full-width-cpu"
    assert recipe_study.shown_dir(runs) == "~/.cache/ignite-cifar/full-width-cpu"
    flags = full_width_cpu.setting(full_width_cpu.parse_args(["--dry", "--runs-dir", str(runs)]))
    variants = recipe_study.load_variants(list(full_width_cpu.RECIPES))
    report = full_width_cpu.write_report(variants, runs, flags, tmp_path).read_text()
    assert "Run folders (checkpoints, logs): `~/.cache/ignite-cifar/full-width-cpu`" in report
    assert "--output-dir ~/.cache/ignite-cifar/full-width-cpu" in report and str(tmp_path) not in report


def _with_curve(state: str, accuracy: float | None, val: dict[int, float]) -> dict:
    return {**_summary(state, accuracy), "val": val, "raw_val": {e: v - 0.03 for e, v in val.items()}}


def test_the_cutting_variant_is_adopted_only_beyond_the_seeds_difference():
    default, seed2, cutting = full_width_cpu.SEEDS[0], full_width_cpu.SEEDS[1], full_width_cpu.CUTTING
    curve = {30: 0.88, 35: 0.89, 40: 0.895}

    def verdict(variant_accuracy: float | None, state: str = "finished") -> str:
        return full_width_cpu.comparison_lines({default: _with_curve("finished", 0.894, curve),
                                                seed2: _with_curve("finished", 0.898, curve),
                                                cutting: _with_curve(state, variant_accuracy, curve)})[-1]

    assert "88.00 / 85.00" in "".join(full_width_cpu.comparison_lines(
        {name: _with_curve("finished", 0.9, curve) for name in (default, seed2, cutting)}))
    assert "not decided" in verdict(None, "unfinished")
    assert "keep the default" in verdict(0.898)  # +0.40 points: no more than the seeds differ (0.40)
    assert "adopt it as the default" in verdict(0.899)

