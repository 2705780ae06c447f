"""Full width on a CPU: the default recipe at width 1.0 for 40 epochs, seed after seed, resumable,
reported in benchmarks/study/FULL-WIDTH-CPU.md.

A GPU measures full width in minutes (gpu_study.sh); without one, this measures the default there on the CPU,
which takes hours a seed, so it stops and resumes. It is the recipe study's machinery with the width set to 1.0:
each recipe runs through recipe_study.step (start it, resume it from its last checkpoint, skip it when finished;
its output appended to RUNS_DIR/<recipe>.log), a finished run's numbers are kept in
benchmarks/study/full-width-cpu-runs/ so its row outlives the run folder, and the table is recipe_report's. The report
adds the project's target for full width: the default's mean over two seeds against 91%.

    OMP_NUM_THREADS=2 nohup python benchmarks/study/full_width_cpu.py --data-dir /tmp/data/cifar10-jpeg >> fw.log 2>&1 &

The run folders go to ~/.cache/ignite-cifar/full-width-cpu (outside the repository, so that a fresh clone or a
deleted work tree keeps them and resumes them) unless --runs-dir or IGNITE_CIFAR_RUNS_HOME says otherwise.
    python benchmarks/study/full_width_cpu.py --report-only     # the report from what is there; trains nothing

Run it with one OMP_NUM_THREADS for the whole of a run (a thread count change can move the last digits).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from pathlib import Path
from typing import Any

from recipe_report import collect, read_history, table_lines
from recipe_rule import DEFAULT, pct
from recipe_study import (
    DRY_FLAGS,
    RUNS_HOME,
    STUDY_FLAGS,
    exit_code,
    load_variants,
    run_each,
    setting_for,
    shown,
    shown_dir,
    train_command,
)

from ignite_cifar import files

HERE = Path(__file__).resolve().parent
REPORT = "FULL-WIDTH-CPU.md"
RECORDS = HERE / "full-width-cpu-runs"
# the default and its second seed (its recipe file named <default>-seed2), the two the target's mean is over; then
# the default with a plateau that cuts at full width (recipes/<default>-cut.yaml), seed 42 as the default's first
SEEDS = (DEFAULT, f"{DEFAULT}-seed2")
CUTTING = f"{DEFAULT}-cut"
RECIPES = (*SEEDS, CUTTING)
COMPARE_EPOCHS = (30, 35, 40)  # where the cutting variant is read beside the default
FULL_WIDTH = {**STUDY_FLAGS, "width": 1.0}
TARGET = 0.91  # the project's full-width target for the default: mean test accuracy of two seeds
SEEDS_FOR_TARGET = 2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="the image folder (DIR/train/<class>, DIR/test/<class>) of the JPEG export")
    p.add_argument("--runs-dir", default=str(RUNS_HOME / "full-width-cpu"),
                   help="where the run folders and their logs go (default: %(default)s, outside the repository, so "
                        "that a fresh clone or a deleted work tree keeps them)")
    p.add_argument("--dry", action="store_true", help="the recipe study's dry setting (synthetic, tiny, 2 epochs); "
                                                     "the report and records go into the runs folder")
    p.add_argument("--report-only", action="store_true", help="write the report from what is there; train nothing")
    return p.parse_args(argv)


def setting(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of every run: the recipe study's at width 1.0 (its dry setting with --dry)."""
    study_setting = setting_for(args)  # checks --data-dir
    return dict(DRY_FLAGS) if args.dry else {**study_setting, **FULL_WIDTH}


def target_line(summaries: dict[str, dict[str, Any]]) -> str:
    """Where the default stands against the full-width target, given its seeds' summaries: only finished runs count."""
    accs = [s["test_accuracy"] for s in summaries.values() if s["state"] == "finished"]
    if not accs:
        return (f"Target ({pct(TARGET)}%, mean of {SEEDS_FOR_TARGET} seeds): not measured yet, no run has "
                "finished.")
    mean = statistics.fmean(accs)
    seeds = f"{len(accs)} seed{'s' if len(accs) > 1 else ''}"
    if len(accs) < SEEDS_FOR_TARGET:
        return (f"Target ({pct(TARGET)}%, mean of {SEEDS_FOR_TARGET} seeds): not decided, {seeds} finished "
                f"({pct(mean)}%).")
    verdict = "met" if mean >= TARGET else "not met"
    return f"Target ({pct(TARGET)}%, mean of {SEEDS_FOR_TARGET} seeds): **{verdict}**, {pct(mean)}% over {seeds}."


def cell(value: float | None) -> str:
    return "-" if value is None else pct(value)


def comparison_lines(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """The cutting variant beside the default's seed 42 at COMPARE_EPOCHS (the average's val / the raw weights'),
    and, once the default's two seeds and the variant have finished, the study's rule: the variant becomes the
    default only if it beats the default's seed 42 by more than the default's two seeds differ."""
    status = {"missing": "not started"}
    rows = [f"| `{name}` | {status.get(summaries[name]['state'], summaries[name]['state'])} | " + " | ".join(
        f"{cell(summaries[name]['val'].get(e))} / {cell(summaries[name]['raw_val'].get(e))}" for e in COMPARE_EPOCHS)
        + f" | {cell(summaries[name]['test_accuracy'])} |" for name in (DEFAULT, CUTTING)]
    lines = ["## The cutting variant beside the default", "",
             "Val accuracy in %, the weight average's / the raw weights' ('-': not reached).", "",
             "| run (seed 42) | status | " + " | ".join(f"@{e}" for e in COMPARE_EPOCHS) + " | final test |",
             "|---|---|" + "---|" * (len(COMPARE_EPOCHS) + 1), *rows, ""]
    if any(summaries[name]["state"] != "finished" for name in (*SEEDS, CUTTING)):
        return lines + ["Rule (adopt the variant if it beats the default by more than the default's two seeds differ): "
                        "not decided until all three runs have finished."]
    seed_gap = abs(summaries[SEEDS[0]]["test_accuracy"] - summaries[SEEDS[1]]["test_accuracy"])
    gain = summaries[CUTTING]["test_accuracy"] - summaries[DEFAULT]["test_accuracy"]
    verdict = "adopt it as the default" if gain > seed_gap else "keep the default"
    return lines + [f"Rule: the variant's gain {100 * gain:+.2f} points against a seed difference of "
                    f"{100 * seed_gap:.2f}: **{verdict}**."]


def epoch_cost(record: dict[str, Any]) -> float:
    """Seconds one epoch took: its training and its evaluations (the average's and the raw weights')."""
    return record["epoch_seconds"] + (record.get("val_seconds") or 0.0) + (record.get("raw_val_seconds") or 0.0)


def progress_line(name: str, s: dict[str, Any], records: list[dict[str, Any]]) -> str | None:
    """How far an unfinished run is, and the hours its remaining epochs take at its median epoch so far (the median,
    so that an epoch slowed by a pause or by work beside it does not set the estimate)."""
    if s["state"] == "finished" or not records:
        return None
    per_epoch = statistics.median(epoch_cost(r) for r in records)
    left_h = per_epoch * (s["epochs"] - len(records)) / 3600
    return (f"- `{name}`: {len(records)} of {s['epochs']} epochs in {s['wall_s'] / 3600:.1f} h of training; "
            f"about {left_h:.1f} h more at its median epoch so far ({per_epoch / 60:.1f} min, evaluations "
            "included). Not a result until it finishes.")


def write_report(variants: list, runs_dir: Path, flags: dict[str, Any], out_dir: Path) -> Path:
    summaries = collect(variants, runs_dir, int(flags["epochs"]), out_dir / RECORDS.name)
    shown_flags = {**flags, "data_dir": "DIR"} if "data_dir" in flags else flags
    machines = sorted({m for s in summaries.values() for m in (s["machines"] or [])})
    data = ("DRY RUN: synthetic data, tiny subsets, not a result" if flags["dataset"] == "synthetic" else
            "all 50,000 training images of the JPEG export, val = its 10,000 test images")
    lines = ["# Full width on a CPU", "",
             f"Written by `benchmarks/study/full_width_cpu.py` ({dt.datetime.now():%Y-%m-%d %H:%M}). The default "
             "recipe "
             f"at width {flags['width']}, batch {flags['batch_size']}, {flags['epochs']} epochs, {data}; one run at "
             "a time, resumed where it stopped. Accuracies in %; LR drops are the first epoch trained at the new lr. "
             f"Each finished run's numbers are kept in `{RECORDS.name}/` beside this file.", "",
             f"Trained on: {'; '.join(machines) or 'not recorded'}. Run folders (checkpoints, logs): "
             f"`{shown_dir(runs_dir)}`, outside the repository, so that a fresh clone or a deleted work tree "
             "keeps them.", "",
             *table_lines(summaries), "", target_line({name: summaries[name] for name in SEEDS if name in summaries})]
    lines += ["", *comparison_lines(summaries)] if {DEFAULT, CUTTING} <= summaries.keys() else []
    progress = [line for name, s in summaries.items()
                if (line := progress_line(name, s, read_history(runs_dir / name)["epochs"]))]
    lines += ["", "## Unfinished", "", *progress] if progress else []
    lines += ["", "## Commands", ""]
    lines += [f"- `{v.name}`: `{shown(train_command(v, Path(shown_dir(runs_dir)), shown_flags))}`" for v in variants]
    path = out_dir / REPORT
    files.write_text(path, "\n".join(lines) + "\n")
    return path


def in_run_order(variants: list) -> list:
    """The variants in RECIPES' order: the default's two seeds before the cutting variant (the study's own order
    would put the variant first, by name)."""
    return sorted(variants, key=lambda variant: RECIPES.index(variant.name))


def run(args: argparse.Namespace) -> int:
    flags = setting(args)
    variants = in_run_order(load_variants(list(RECIPES)))
    runs_dir = Path(args.runs_dir)
    out_dir = runs_dir if args.dry else HERE
    code = run_each([] if args.report_only else variants, runs_dir, flags,
                    lambda: write_report(variants, runs_dir, flags, out_dir), kept=out_dir / RECORDS.name)
    print(f"report: {write_report(variants, runs_dir, flags, out_dir)}", flush=True)
    return code


def main(argv=None) -> int:
    return exit_code("full_width_cpu", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
