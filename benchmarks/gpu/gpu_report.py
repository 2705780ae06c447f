"""RESULTS-GPU.md for one run of gpu_headline.sh: the machine, the step matrix, the recipe's time and accuracy.

With only `--env FILE`: record (and print) the device, driver, torch, CUDA and cuDNN versions into FILE.
With `--out`: read that file, the matrix JSON and the run folder, and write the report. Every figure in the
report is read from those files; nothing is estimated.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

BENCHMARKS = Path(__file__).resolve().parents[1]
# recipe_report and step_matrix are other rooms' scripts
sys.path[:0] = [str(BENCHMARKS / "study"), str(BENCHMARKS / "speed")]
from recipe_report import wall_seconds  # noqa: E402  the wall time over all of a run's processes (restarts on resume)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, help="JSON file of the machine's description (written if no --out)")
    p.add_argument("--matrix", help="step_matrix.py's JSON")
    p.add_argument("--captured", help="captured_lr_check.py's JSON")
    p.add_argument("--run", help="the run folder")
    p.add_argument("--train-rc", type=int, default=0)
    p.add_argument("--train-wall", type=float, default=0.0, help="seconds the training process ran")
    p.add_argument("--train-limit", type=float, default=0.0, help="seconds it was allowed")
    p.add_argument("--command", default="")
    p.add_argument("--dry", default="0")
    p.add_argument("--out", help="where to write RESULTS-GPU.md")
    return p.parse_args(argv)


def describe_machine() -> dict:
    import torch

    env = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "device": "cpu", "driver": None, "gpu_memory_gib": None, "capability": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}")
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return env


def run_summary(run_dir: Path) -> dict:
    """Epochs, accuracies, LR drops and times of a (possibly unfinished) run folder."""
    history_file = run_dir / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else {"epochs": []}
    records = history["epochs"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    summary = {"epochs_done": len(records), "epochs_planned": config.get("epochs"), "records": records,
               "final_test": history.get("final_test"), "derived": config.get("derived", {})}
    if records:
        best = max(records, key=lambda r: r["val_accuracy"])
        later = records[1:] or records
        summary.update(
            best_val=best["val_accuracy"], best_epoch=best["epoch"], last_val=records[-1]["val_accuracy"],
            wall_s=wall_seconds(records), first_epoch_s=records[0]["epoch_seconds"],
            median_epoch_s=statistics.median(r["epoch_seconds"] for r in later),
            median_val_s=statistics.median(r.get("val_seconds") or 0.0 for r in later),
            median_ips=statistics.median(r["train_images_per_s"] for r in later),
            other_s=wall_seconds(records) - sum(r["epoch_seconds"] + (r.get("val_seconds") or 0.0) for r in records),
            lr_drops=[(r["epoch"], r["lr"], r["next_lr"]) for r in records if r["next_lr"] < r["lr"]])
    return summary


def captured_markdown(check: dict) -> list[str]:
    """The captured-step check's verdict, as a section."""
    if not check:
        return ["", "## The captured step's lr", "", "Not measured: captured_lr_check.py left no result."]
    lrs = check["lrs"]["eager"]
    return ["", "## The captured step's lr (benchmarks/speed/captured_lr_check.py)", "",
            f"{'compiled, reduce-overhead' if check['compiled'] else 'DRY: eager'} on {check['device']}, width "
            f"{check['width']}, {check['steps']} steps of batch {check['batch_size']}, {check['optimizer']}, lr "
            f"{lrs[0]:.3g} -> {max(lrs):.3g} (warmup) -> {lrs[-1]:.3g} (a plateau cut): max |captured - eager| "
            f"{check['max_diff_captured_eager']:.2e} against max |eager - frozen lr| "
            f"{check['max_diff_eager_frozen']:.2e}: **{'PASS' if check['passed'] else 'FAIL'}**; wall s (captured "
            f"with compiling) {check['wall_s']}."]


def report(args: argparse.Namespace, env: dict, matrix: dict, run: dict, captured: dict | None = None) -> str:
    d = run["derived"]
    title = "GPU headline run" + (" (DRY RUN on CPU: tiny sizes, not a result)" if args.dry == "1" else "")
    lines = [f"# {title}", "",
             f"- date: {env['date']}",
             f"- device: {env['device']} (compute capability {env['capability']}, {env['gpu_memory_gib']} GiB), "
             f"driver {env['driver']}, {env['cpu_cores']} CPU cores",
             f"- versions: python {env['python']}, torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}",
             f"- command: `{args.command}`",
             f"- data: {d.get('train_images', '?')} training / {d.get('test_images', '?')} test images "
             f"(the CIFAR-10 JPEG export); precision {d.get('precision', '?')}; "
             f"training images augmented on {d.get('augment_on', 'cpu')}; {d.get('data_workers', '?')} DataLoader "
             "workers", ""]
    if args.train_rc != 0:
        lines += [f"**The training process exited with code {args.train_rc} after {args.train_wall:.0f} s "
                  f"(limit {args.train_limit:.0f} s): the run is unfinished; the figures below are what it "
                  f"reached.**", ""]
    lines += ["## The run", "", "| measurement | value |", "|---|---|",
              f"| epochs done / planned | {run['epochs_done']} / {run['epochs_planned']} |"]
    if run["final_test"]:
        lines.append(f"| final test accuracy (the {d.get('test_images', '?')} test images, final model) | "
                     f"**{100 * run['final_test']['test_accuracy']:.2f}%** |")
    if run["epochs_done"]:
        drops = ", ".join(f"epoch {e}: {a:.3g} -> {b:.3g}" for e, a, b in run["lr_drops"]) or "none"
        lines += [
            f"| val accuracy at the last epoch (val = the test split) | {100 * run['last_val']:.2f}% |",
            f"| best val accuracy (epoch) | {100 * run['best_val']:.2f}% ({run['best_epoch']}) |",
            f"| wall time of the {run['epochs_done']} epochs (training, evaluation, checkpoints, logs; "
            f"from the trainer's start) | **{run['wall_s']:.1f} s** |",
            f"| training process wall time (+ start-up, data decoding, explanations) | {args.train_wall:.0f} s |",
            f"| first epoch, training steps only (includes torch.compile, if on) | {run['first_epoch_s']:.1f} s |",
            f"| later epochs, training steps only, median | {run['median_epoch_s']:.2f} s |",
            f"| later epochs, evaluation, median | {run['median_val_s']:.2f} s |",
            f"| training images/s, later epochs, median | {run['median_ips']:.0f} |",
            f"| the rest of the epochs' wall time (checkpoints, curves, logs), all epochs together | "
            f"{run['other_s']:.1f} s |",
            f"| learning-rate drops (ReduceLROnPlateau) | {drops} |"]
        accs = " ".join(f"{100 * r['val_accuracy']:.1f}" for r in run["records"])
        lines += ["", f"Val accuracy by epoch: {accs}"]
    if captured is not None:
        lines += captured_markdown(captured)
    if matrix:
        lines += ["", "## Training-step matrix (benchmarks/speed/step_matrix.py)", "", _matrix_markdown(matrix)]
    return "\n".join(lines) + "\n"


def _matrix_markdown(matrix: dict) -> str:
    from step_matrix import markdown  # imported here: it loads torch, which the machine report does not need

    return markdown(matrix)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.out:
        env = describe_machine()
        Path(args.env).write_text(json.dumps(env, indent=1))
        print(json.dumps(env))
        return
    env = json.loads(Path(args.env).read_text())
    matrix = json.loads(Path(args.matrix).read_text()) if args.matrix and Path(args.matrix).is_file() else {}
    run = run_summary(Path(args.run)) if args.run else {"epochs_done": 0}
    captured = None
    if args.captured:
        captured = json.loads(Path(args.captured).read_text()) if Path(args.captured).is_file() else {}
    text = report(args, env, matrix, run, captured)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
