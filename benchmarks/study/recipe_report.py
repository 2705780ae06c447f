"""The recipe study's report: what each run reached, kept as a small record, and the noise rule's verdicts.

A run folder holds checkpoints and TensorBoard files and is not committed; so when a run finishes, the numbers the
report shows are kept in `benchmarks/study/recipe-runs/<variant>.json` (every epoch's val accuracy and lr, the final
test, the seed and the precision). The report reads a run folder where there is one and its record where there is
not, so running one variant never loses the rows of the others.

The rule and its verdicts are recipe_rule.py's; this file reads the runs and writes RECIPE.md and the curves.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import yaml
from recipe_holdout import holdout_section
from recipe_rule import noise_section, pct

from ignite_cifar import files
from ignite_cifar.config import Config

REPORT, CURVES = "RECIPE.md", "recipe-curves.png"
RECORDS = Path(__file__).resolve().parent / "recipe-runs"
SPEED_NOTE = Path(__file__).resolve().parent / "RECIPE-SPEED.md"  # how the study's speed setting was chosen
REPORT_EPOCHS = (10, 20, 30, 40)
KEPT = ("epochs_done", "epochs", "val", "raw_val", "lr", "best", "test_accuracy", "lr_drops", "images_per_s",
        "wall_s", "seed", "precision", "machines", "source")
BY_EPOCH = ("val", "raw_val")  # {epoch: accuracy}; json keeps the epochs as strings


# ---------------------------------------------------------------- one run folder
def read_history(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "history.json"
    return json.loads(path.read_text()) if path.is_file() else {"epochs": []}


def run_state(run_dir: Path, epochs: int) -> str:
    """missing | finished | unfinished (resume from its checkpoint) | explain (all epochs, no final test) |
    aborted (a folder without a checkpoint: killed in its first epoch)."""
    if not run_dir.exists():
        return "missing"
    if files.find_checkpoint(run_dir) is None:
        return "aborted"
    history = read_history(run_dir)
    if len(history["epochs"]) < epochs:
        return "unfinished"
    return "finished" if "final_test" in history else "explain"


def wall_seconds(records: list[dict[str, Any]]) -> float:
    """Training wall time over all of a run's processes: `wall_seconds` restarts with each resume."""
    total, last = 0.0, 0.0
    for r in records:
        now = float(r.get("wall_seconds", 0.0))
        total += now - last if now >= last else now
        last = now
    return total


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def summarize_folder(run_dir: Path, epochs: int) -> dict[str, Any]:
    """What the report shows of one run, read from its folder."""
    history = read_history(run_dir)
    records = history["epochs"]
    final = history.get("final_test") or _evaluation(run_dir)
    best = max(records, key=lambda r: r["val_accuracy"]) if records else None
    config = _run_config(run_dir)
    speeds = [r["train_images_per_s"] for r in records if r.get("train_images_per_s")]
    return {
        "epochs_done": len(records), "epochs": epochs, "state": run_state(run_dir, epochs),
        "val": {r["epoch"]: r["val_accuracy"] for r in records},
        # with --ema-decay, val is the average's and raw_val the trained weights' (empty without an average)
        "raw_val": {r["epoch"]: r["raw_val_accuracy"] for r in records if "raw_val_accuracy" in r},
        "lr": [(r["epoch"], r["lr"]) for r in records],
        "best": (best["epoch"], best["val_accuracy"]) if best else None,
        "test_accuracy": final.get("test_accuracy") if final else None,
        "lr_drops": [(b["epoch"], b["lr"]) for a, b in itertools.pairwise(records) if b["lr"] < a["lr"]],
        "images_per_s": statistics.median(speeds) if speeds else None,
        "wall_s": wall_seconds(records),
        "seed": config.get("seed"), "precision": (config.get("derived") or {}).get("precision"),
        "machines": machines_of(config.get("derived") or {}), "source": f"run folder {run_dir.name}",
    }


def machines_of(derived: dict[str, Any]) -> list[str] | None:
    """The CPUs (or GPUs) a run trained on, each once, oldest start first: a seed repeats a run only on one machine
    type (docs/results.md). None for runs written before config.yaml named the machine (2026-12-04)."""
    labels = []
    for start in [*derived.get("earlier_starts", []), derived]:
        machine = start.get("machine")
        if machine:
            label = f"{machine.get('gpu') or machine['cpu']}, {machine['cpu_kernels']} kernels" + (
                f", bf16 instructions: {machine['cpu_bf16']}" if "cpu_bf16" in machine else "")
            labels += [label] if label not in labels else []
    return labels or None


def _evaluation(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "evaluation.json"  # written by `explain --run` when the final test was not in history
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------- records of finished runs
def save_record(name: str, summary: dict[str, Any], records_dir: Path) -> None:
    """Keep a finished run's numbers in records_dir/<name>.json (rewritten only when they change)."""
    kept = {"variant": name, **{k: summary[k] for k in KEPT}}
    for key in BY_EPOCH:
        kept[key] = {str(e): acc for e, acc in summary[key].items()}
    text = json.dumps(kept, indent=1) + "\n"
    path = records_dir / f"{name}.json"
    if not path.is_file() or path.read_text() != text:
        files.write_text(path, text)


def load_record(name: str, records_dir: Path) -> dict[str, Any] | None:
    """A kept record as a summary (state `kept`), or None when there is none."""
    path = records_dir / f"{name}.json"
    if not path.is_file():
        return None
    kept = json.loads(path.read_text())
    summary = {k: kept.get(k) for k in KEPT}
    for key in BY_EPOCH:  # records kept before raw_val existed have none
        summary[key] = {int(e): acc for e, acc in (kept.get(key) or {}).items()}
    summary["lr"] = [tuple(p) for p in kept["lr"]]
    summary["lr_drops"] = [tuple(p) for p in kept["lr_drops"]]
    summary["best"] = tuple(kept["best"]) if kept["best"] else None
    return {**summary, "state": "finished"}


def collect(variants: list, study_dir: Path, epochs: int, records_dir: Path) -> dict[str, dict[str, Any]]:
    """Every variant's summary: from its run folder where there is one (a finished run's record is written or
    refreshed then), else from its record, else an empty `missing` row. Each summary carries its variant."""
    summaries = {}
    for variant in variants:
        run_dir = study_dir / variant.name
        summary = summarize_folder(run_dir, epochs) if run_dir.exists() else load_record(variant.name, records_dir)
        if summary is None:
            summary = summarize_folder(run_dir, epochs)
        elif run_dir.exists() and summary["state"] == "finished":
            save_record(variant.name, summary, records_dir)
        if summary["seed"] is None:
            summary["seed"] = variant.overrides.get("seed", Config().seed)
        summaries[variant.name] = {**summary, "variant": variant}
    return summaries


# ---------------------------------------------------------------- the report
def _row(s: dict[str, Any]) -> str:
    status = {"finished": "finished", "missing": "not started"}.get(
        s["state"], f"**unfinished: {s['epochs_done']}/{s['epochs']} epochs**")
    accs = " | ".join(pct(s["val"].get(e)) for e in REPORT_EPOCHS)
    best = f"{s['best'][0]} ({pct(s['best'][1])})" if s["best"] else "-"
    drops = (", ".join(f"{e} ({lr:.0e})" for e, lr in s["lr_drops"]) or "none") if s["epochs_done"] else "-"
    ips = f"{s['images_per_s']:.0f}" if s["images_per_s"] else "-"
    wall = f"{s['wall_s'] / 60:.1f} min" if s["epochs_done"] else "-"
    precision = (s["precision"] or "-").split(",")[0]
    raw = pct(s["raw_val"].get(s["epochs"]))
    return (f"| {s['variant'].name} | {status} | {s['seed']} | {precision} | {accs} | {best} | "
            f"{pct(s['test_accuracy'])} | {raw} | {drops} | {ips} | {wall} |")


def table_lines(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """The runs' table in markdown: a row per run, from collect()'s summaries."""
    head = " | ".join(f"val @{e}" for e in REPORT_EPOCHS)
    return [f"| variant | status | seed | precision | {head} | best epoch (val) | final test | raw weights "
            f"@{REPORT_EPOCHS[-1]} (with an average) | LR drops at epoch | train img/s (median epoch) | wall time |",
            "|---|---|---|---|" + "---|" * len(REPORT_EPOCHS) + "---|---|---|---|---|---|",
            *(_row(s) for s in summaries.values())]


def write_report(summaries: dict[str, dict[str, Any]], out_dir: Path, data_note: str,
                 commands: dict[str, str]) -> None:
    """RECIPE.md (table, the rule and its verdicts, commands) and recipe-curves.png into out_dir."""
    lines = ["# Recipe study", "",
             f"Written by `benchmarks/study/recipe_study.py` ({dt.datetime.now():%Y-%m-%d %H:%M}). {data_note} "
             "Accuracies in %; LR drops are the first epoch trained at the new lr. Each finished run's numbers are "
             "kept in `benchmarks/study/recipe-runs/` (its `source` says where they were read, its `machines` which "
             "CPUs trained it, null for runs before 2026-12-04: a seed repeats a run only on one CPU type).", "",
             SPEED_NOTE.read_text().rstrip(), "", *table_lines(summaries),
             "", noise_section(summaries), "", holdout_section(summaries), "",
             "## What each variant changes, and its command", ""]
    for name, s in summaries.items():
        lines += [f"- `{name}`: {s['variant'].about}", f"  `{commands[name]}`"]
    files.write_text(out_dir / REPORT, "\n".join(lines) + "\n")
    fig = curves_figure(summaries)
    files.save_figure(fig, out_dir / CURVES, dpi=110)
    _pyplot().close(fig)


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported when a figure is drawn: the shell scripts that only ask a run
    folder's state (benchmarks/gpu/gpu_study.sh's run_state) start without it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_figure(summaries: dict[str, dict[str, Any]]):
    """Val accuracy of every variant on one plot (runs kept with only a few epochs: markers), lr per epoch below."""
    plt = _pyplot()
    fig, (acc, lr) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    for name, s in summaries.items():
        if not s["val"]:
            continue
        epochs = sorted(s["val"])
        sparse = len(epochs) < s["epochs_done"]
        label = name + (" (epochs 10/20/30/40 kept)" if sparse else "")
        line, = acc.plot(epochs, [100 * s["val"][e] for e in epochs], marker="o" if sparse else ".",
                         linestyle=":" if sparse else "-", label=label)
        if s["lr"]:
            lr.plot([e for e, _ in s["lr"]], [v for _, v in s["lr"]], color=line.get_color(), drawstyle="steps-mid")
    acc.set_ylabel("val accuracy (%) = test split")
    acc.grid(alpha=0.3)
    if acc.get_legend_handles_labels()[0]:
        acc.legend(loc="lower right", fontsize=7)
    lr.set_yscale("log")
    lr.set_ylabel("lr")
    lr.set_xlabel("epoch")
    lr.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
