"""The CPU thread budget through the whole CLI: training images/s for each torch thread setting, alternated, on the
machine as it is and beside N busy-looping processes (a machine shared with other work).

Each entry is one `python -m ignite_cifar train` process (width 0.25, `--channels-last`, the JPEG folder, 2 epochs
of --train-subset images; the figure is the second epoch's training images/s from history.json, the first being
warm-up) with `--torch-threads` set to the entry's value. The table goes to --out (markdown).

    python benchmarks/speed/thread_budget.py --data-dir DIR [--threads 2 1 auto] [--busy 0 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ignite_cifar.training.environment import cpu_name

REPO = Path(__file__).resolve().parents[2]
BUSY_LOOP = "while True: pass"


def one_run(data_dir: str, threads: str, train_subset: int, out_dir: Path, name: str) -> tuple[float, float]:
    """(second epoch's training images/s, the process's wall seconds) for one CLI run."""
    cmd = [sys.executable, "-m", "ignite_cifar", "train", "--dataset", "folder", "--data-dir", data_dir,
           "--width", "0.25", "--channels-last", "--epochs", "2", "--train-subset", str(train_subset),
           "--test-subset", "500", "--n-misclassified", "2", "--probe-every", "0", "--torch-threads", threads,
           "--output-dir", str(out_dir), "--run-name", name]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    wall = time.perf_counter() - start
    history = json.loads((out_dir / name / "history.json").read_text())
    return history["epochs"][-1]["train_images_per_s"], wall


def measure(args: argparse.Namespace, busy: int, folder: Path) -> dict[str, list[tuple[float, float]]]:
    """Every thread setting, alternated `repeats` times, with `busy` looping processes running beside."""
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    results: dict[str, list[tuple[float, float]]] = {t: [] for t in args.threads}
    try:
        for repeat in range(args.repeats):
            for threads in args.threads:
                results[threads].append(one_run(args.data_dir, threads, args.train_subset, folder,
                                                f"busy{busy}-t{threads}-{repeat}"))
                print(f"busy {busy}, --torch-threads {threads}: {results[threads][-1][0]:.0f} images/s, "
                      f"{results[threads][-1][1]:.1f} s", flush=True)
    finally:
        for spinner in spinners:
            spinner.kill()
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="the JPEG image folder (DIR/train, DIR/test)")
    p.add_argument("--threads", nargs="+", default=["2", "1", "auto"], help="--torch-threads values to compare")
    p.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="busy-looping processes beside the run")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--out", default=str(Path(__file__).with_name("THREAD-BUDGET.md")))
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for busy in args.busy:
            for threads, runs in measure(args, busy, Path(folder)).items():
                speeds = ", ".join(f"{s:.0f}" for s, _ in runs)
                walls = ", ".join(f"{w:.1f}" for _, w in runs)
                rows.append(f"| {busy} | {threads} | **{statistics.median(s for s, _ in runs):.0f}** ({speeds}) | "
                            f"{walls} |")
    text = (f"# The CPU thread budget through the whole CLI\n\n"
            f"`python benchmarks/speed/thread_budget.py --data-dir DIR --threads {' '.join(args.threads)} --busy "
            f"{' '.join(map(str, args.busy))} --repeats {args.repeats} --train-subset {args.train_subset}` on "
            f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, "
            f"{time.strftime('%Y-%m-%d %H:%M')}: width 0.25, `--channels-last`, the default precision and "
            "DataLoader workers, the JPEG folder; the second epoch's training images/s (median, then each run "
            "in the order they ran, settings alternated) and each process's wall seconds. `busy` = processes "
            "looping in Python beside the run.\n\n"
            "| busy | --torch-threads | training images/s | process wall s |\n|---|---|---|---|\n" + "\n".join(rows)
            + "\n")
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
