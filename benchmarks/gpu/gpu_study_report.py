"""STUDY-GPU.md for one run of gpu_study.sh: one row per recipe, read from its run folder and its exit status.

A run counts as a result only when its process exited 0, it recorded every planned epoch and the final test
evaluation: anything else (cut off by the time budget, failed, never started) is listed as unfinished, with how
far it got, and no accuracy. Every figure is read from the run folders (benchmarks/gpu_report.run_summary). A run
whose settings leave the assignment's rules (a horizontal flip, say: ignite_cifar.configs) says so in its
row: it is reported, never a candidate for the default.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_report import run_summary  # noqa: E402

from ignite_cifar.configs import outside_rules  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, help="gpu_report.py --env's JSON (the machine)")
    p.add_argument("--status", required=True, help="one line per recipe: name, exit code, wall s, limit s")
    p.add_argument("--runs", required=True, help="the folder holding one run folder per recipe")
    p.add_argument("--command", default="", help="the training command, recipe left out")
    p.add_argument("--budget", type=float, default=0.0)
    p.add_argument("--lanes", type=int, default=1, help="how many recipes trained at once on the one GPU")
    p.add_argument("--dry", default="0")
    p.add_argument("--out", required=True)
    p.add_argument("--json", help="also write the rows as JSON here")
    return p.parse_args(argv)


def read_status(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            name, rc, wall, limit = line.split()
            rows.append({"name": name, "rc": int(rc), "process_wall_s": float(wall), "limit_s": float(limit)})
    return rows


def study_rows(status: list[dict], runs: Path) -> list[dict]:
    rows = []
    for entry in status:
        run_dir = runs / entry["name"]
        summary = run_summary(run_dir) if run_dir.is_dir() else {"epochs_done": 0, "derived": {}}
        config = {}
        if (run_dir / "config.yaml").is_file():
            import yaml

            config = yaml.safe_load((run_dir / "config.yaml").read_text())
        planned = summary.get("epochs_planned")
        finished = (entry["rc"] == 0 and summary["epochs_done"] > 0 and summary["epochs_done"] == planned
                    and summary.get("final_test") is not None)
        row = {**entry, "finished": finished, "seed": config.get("seed"), "epochs_done": summary["epochs_done"],
               "epochs_planned": planned, "outside_rules": outside_rules(config), "last_val": summary.get("last_val")}
        if finished:
            row.update(test_accuracy=summary["final_test"]["test_accuracy"], best_val=summary["best_val"],
                       best_epoch=summary["best_epoch"], lr_cuts=[e for e, _, _ in summary["lr_drops"]],
                       wall_s=summary["wall_s"], median_ips=summary["median_ips"],
                       augment_on=summary["derived"].get("augment_on"), precision=summary["derived"].get("precision"))
        rows.append(row)
    return rows


def _why(row: dict) -> str:
    if row["rc"] == -1:
        return "not started: the time budget was spent"
    if row["rc"] in (124, 137, 143):
        return f"cut off by the time budget after {row['process_wall_s']:.0f} s (limit {row['limit_s']:.0f} s)"
    if row["rc"] != 0:
        return f"failed (exit code {row['rc']})"
    return "ended without its final evaluation"


def _progress(row: dict) -> str:
    """How far an unfinished run's val accuracy got: progress toward a result, said as such."""
    if not row["epochs_done"] or row.get("last_val") is None:
        return ""
    return f" (val {100 * row['last_val']:.2f}% at epoch {row['epochs_done']}: progress, not a result)"


def _rules(row: dict) -> str:
    return "**no**: " + "; ".join(row["outside_rules"]) if row["outside_rules"] else "yes"


def _schedule(lanes: int) -> str:
    if lanes == 1:
        return "the recipes ran back to back in the order listed, one process each, sharing one compile cache"
    return (f"up to {lanes} recipes trained at once on the one GPU (recipe i in lane i mod {lanes}, each lane back to "
            "back), one process each, sharing one compile cache: their wall times and images/s are those of a "
            "shared GPU, not of one run alone")


def report(args: argparse.Namespace, env: dict, rows: list[dict]) -> str:
    dry = args.dry == "1"
    title = "GPU study" + (" (DRY RUN on CPU: tiny sizes, not a result)" if dry else "")
    planned = next((r["epochs_planned"] for r in rows if r["epochs_planned"]), "?")
    lines = [f"# {title}", "",
             f"- date: {env['date']}",
             f"- device: {env['device']} (compute capability {env['capability']}, {env['gpu_memory_gib']} GiB), "
             f"driver {env['driver']}, {env['cpu_cores']} CPU cores",
             f"- versions: python {env['python']}, torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}",
             f"- command, for each recipe R: `{args.command}`",
             f"- time budget of the whole study: {args.budget:.0f} s; {_schedule(args.lanes)}", "",
             f"| variant | seed | test accuracy at epoch {planned} | best val accuracy (epoch) | LR cuts after epoch "
             "| wall time of the epochs | process wall time (this call) | training images/s (median) "
             "| under the assignment's rules |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["finished"]:
            cuts = ", ".join(str(e) for e in r["lr_cuts"]) or "none"
            lines.append(f"| {r['name']} | {r['seed']} | **{100 * r['test_accuracy']:.2f}%** | "
                         f"{100 * r['best_val']:.2f}% ({r['best_epoch']}) | {cuts} | {r['wall_s']:.1f} s | "
                         f"{r['process_wall_s']:.0f} s | {r['median_ips']:.0f} | {_rules(r)} |")
    unfinished = [r for r in rows if not r["finished"]]
    if unfinished:
        lines += ["", "## Unfinished (not results)", ""]
        lines += [f"- {r['name']}: {_why(r)}; {r['epochs_done']} of {r['epochs_planned'] or planned} epochs recorded"
                  + _progress(r) for r in unfinished]
    finished = [r for r in rows if r["finished"]]
    if finished:
        first = finished[0]
        lines += ["", f"Data path: augmentation on {first.get('augment_on')}; precision {first.get('precision')}. "
                      "Test accuracy: the final model on the whole test split; val = the test split."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    env = json.loads(Path(args.env).read_text())
    rows = study_rows(read_status(Path(args.status)), Path(args.runs))
    text = report(args, env, rows)
    Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
