"""Per-run curves and epoch times read back from gpu_study.sh's study.log, for runs whose folders are gone.

gpu_study.sh prefixes each training line with "[recipe] ", so its log alone says how far every run got, also a
run cut off by the time budget (which STUDY-GPU.md lists as unfinished, without figures). This prints, per run
and log, the val accuracy of the evaluated model (the weight average where there is one) at chosen epochs, the
raw weights' at the last epoch, and the epoch times. A run that did not finish its epochs is progress, not a
result: the table says "unfinished" in its row.

    python benchmarks/study/study_log_curves.py CALL1/study.log [CALL2/study.log ...] > CURVES.md
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

EPOCH_LINE = re.compile(r"^\[(?P<run>[^\]]+)\] epoch (?P<epoch>\d+)/(?P<planned>\d+) .*?train loss \S+ acc "
                        r"(?P<train>[\d.]+)%\s+val loss (?P<loss>\S+) acc (?P<val>[\d.]+)%\s+lr (?P<lr>\S+)\s+"
                        r"(?P<s>[\d.]+)s(?:\s+\|.*)?$")  # "| about 2.1 h left" ends lines since 2026-12-08
RAW_LINE = re.compile(r"^\[(?P<run>[^\]]+)\]\s+raw weights: val loss (?P<loss>\S+) acc (?P<raw>[\d.]+)%")
FINAL_LINE = re.compile(r"^\[(?P<run>[^\]]+)\] test accuracy \(final[^)]*\): (?P<test>[\d.]+)%")
AT_EPOCHS = (1, 10, 20, 30)


def read_runs(log: Path) -> dict[str, dict]:
    """run name -> {"epochs": [...], "test": final test % or None}; each epoch as history.json names its fields
    (accuracies as fractions, raw_val_* beside a weight average) plus "planned", the epochs the run planned."""
    runs: dict[str, dict] = {}
    for line in log.read_text(errors="replace").splitlines():
        if m := EPOCH_LINE.match(line):
            run = runs.setdefault(m["run"], {"epochs": [], "test": None})
            run["epochs"].append({"epoch": int(m["epoch"]), "planned": int(m["planned"]),
                                  "train_accuracy": float(m["train"]) / 100, "val_loss": float(m["loss"]),
                                  "val_accuracy": float(m["val"]) / 100, "lr": float(m["lr"]),
                                  "epoch_seconds": float(m["s"])})
        elif (m := RAW_LINE.match(line)) and runs.get(m["run"], {}).get("epochs"):
            runs[m["run"]]["epochs"][-1].update(raw_val_loss=float(m["loss"]), raw_val_accuracy=float(m["raw"]) / 100)
        elif (m := FINAL_LINE.match(line)) and m["run"] in runs:
            runs[m["run"]]["test"] = float(m["test"])
    return runs


def row(log_name: str, name: str, run: dict) -> str:
    epochs = run["epochs"]
    by_epoch = {e["epoch"]: e for e in epochs}
    last, planned = epochs[-1], epochs[-1]["planned"]
    at = " / ".join(f"{100 * by_epoch[n]['val_accuracy']:.2f}" if n in by_epoch else "-" for n in AT_EPOCHS)
    later = [e["epoch_seconds"] for e in epochs[1:]] or [epochs[0]["epoch_seconds"]]
    state = (f"**{run['test']:.2f}%** (final test)" if run["test"] is not None and last["epoch"] == planned
             else f"unfinished: {last['epoch']} of {planned} epochs")
    raw = f"{100 * last['raw_val_accuracy']:.2f}" if "raw_val_accuracy" in last else "-"
    return (f"| {log_name} | {name} | {state} | {at} | {100 * last['val_accuracy']:.2f} ({last['epoch']}) | {raw} | "
            f"{100 * last['train_accuracy']:.2f} | {last['lr']:g} | {epochs[0]['epoch_seconds']:.1f} | "
            f"{statistics.median(later):.1f} |")


def table(logs: list[Path]) -> str:
    lines = ["| log | run | outcome | val @" + " / @".join(map(str, AT_EPOCHS)) + " | val at the last epoch (epoch) "
             "| raw weights' val there | train acc there | lr there | first epoch s | later epochs s (median) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for log in logs:
        for name, run in read_runs(log).items():
            lines.append(row(log.parent.name or str(log), name, run))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("logs", nargs="+", type=Path, help="study.log files of gpu_study.sh")
    args = p.parse_args(argv)
    missing = [str(log) for log in args.logs if not log.is_file()]
    if missing:
        print(f"study_log_curves: no such log: {', '.join(missing)}", file=sys.stderr)
        return 2
    sys.stdout.write(table(args.logs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
