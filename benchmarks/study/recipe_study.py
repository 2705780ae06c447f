"""The recipe study: one 40-epoch width-0.25 run per variant in benchmarks/study/recipes/, resumable, in RECIPE.md.

Each variant is a YAML file of overrides on the assignment recipe (`--config assignment`), its first lines a comment
saying what it changes.
Every run is an ordinary run folder `STUDY_DIR/<variant>` made by the project's own CLI in a subprocess, one at a
time, its output appended to `STUDY_DIR/<variant>.log`. Run the study again and it skips finished runs (all
epochs in history.json and a final test), resumes unfinished ones from their checkpoint (`--resume`), and starts
missing ones; a folder without a checkpoint (killed in its first epoch) is moved aside to `STUDY_DIR/aborted/`
and started again. Ctrl-C or SIGTERM stops the current run at a safe point (the CLI's own handling) and the study
with it. After each run, and with --report-only, it writes benchmarks/study/RECIPE.md and
benchmarks/study/recipe-curves.png, and keeps each finished run's numbers in benchmarks/study/recipe-runs/ so that a
variant whose folder is gone keeps its row (recipe_report.py; in --dry mode all of it goes into the study folder, so
a test never touches committed files).

    python benchmarks/study/recipe_study.py --data-dir /tmp/cifar10-jpeg [--study-dir DIR] [--only adam assignment]

The run folders go to ~/.cache/ignite-cifar/study unless --study-dir (or IGNITE_CIFAR_RUNS_HOME) says otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from recipe_report import RECORDS, REPORT, collect, read_history, run_state, write_report
from recipe_rule import BASELINE, recipe_of

from ignite_cifar.config import make_config
from ignite_cifar.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
# Long runs live outside the repository, so that a fresh clone or a deleted work tree keeps them (runs/ in the
# work tree goes with it). IGNITE_CIFAR_RUNS_HOME moves them.
RUNS_HOME = Path(os.environ.get("IGNITE_CIFAR_RUNS_HOME") or Path.home() / ".cache" / "ignite-cifar")

RECIPES = Path(__file__).resolve().parent / "recipes"
EPOCHS = 40
# the study's setting: every variant is a change to the assignment recipe (--config assignment, the default when the
# study began), width 0.25 (16 base channels), batch 128, 40 epochs, all 50,000 / 10,000 images;
# channels_last, eager: the fastest measured setting without a compile per run (RECIPE-SPEED.md).
STUDY_FLAGS = {"config": "assignment", "width": 0.25, "batch_size": 128, "epochs": EPOCHS, "dataset": "folder",
               "channels_last": True}
DRY_FLAGS = {"config": "assignment", "width": 0.0625, "batch_size": 128, "epochs": 2, "dataset": "synthetic",
             "train_subset": 256, "test_subset": 100, "num_workers": 0, "n_misclassified": 4, "probe_every": 0,
             "amp": "off"}
COMBINATION = "combination"  # the winners together: it runs last


class StudyError(Exception):
    """A mistake in how the study was called: one line, exit 2."""


@dataclass
class Variant:
    """One recipe of the study: its name, what it changes, and its overrides of the default config."""

    name: str
    about: str
    overrides: dict[str, Any] = field(default_factory=dict)


def _run_order(path: Path) -> tuple[int, str]:
    rank = 0 if recipe_of(path.stem) == BASELINE else 2 if path.stem == COMBINATION else 1
    return rank, path.stem


def header_comment(text: str) -> str:
    """The comment lines a variant's YAML starts with, joined into one sentence."""
    lines = itertools.takewhile(lambda line: line.startswith("#"), text.splitlines())
    return " ".join(line.lstrip("# ").strip() for line in lines)


def load_variants(only: list[str] | None = None) -> list[Variant]:
    """The variants in benchmarks/study/recipes/ in run order (_run_order), each checked as a config."""
    variants = []
    for path in sorted(RECIPES.glob("*.yaml"), key=_run_order):
        text = path.read_text()
        about = header_comment(text)
        overrides = yaml.safe_load(text) or {}
        try:
            make_config(overrides)
        except ConfigError as exc:
            raise StudyError(f"{path.name}: {exc}") from None
        variants.append(Variant(path.stem, about, overrides))
    if only:
        unknown = sorted(set(only) - {v.name for v in variants})
        if unknown:
            raise StudyError(f"--only: no variant named {', '.join(unknown)}; "
                             f"known: {', '.join(v.name for v in variants)}")
        variants = [v for v in variants if v.name in only]
    return variants


def _flag(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, str(value)]


def train_command(variant: Variant, study_dir: Path, setting: dict[str, Any]) -> list[str]:
    """The CLI call that starts a variant's run: default config < the study's setting < the variant's overrides."""
    cmd = [sys.executable, "-m", "ignite_cifar", "train"]
    for name, value in {**setting, **variant.overrides}.items():
        cmd += _flag(name, value)
    return cmd + ["--run-name", variant.name, "--output-dir", str(study_dir)]


def resume_command(run_dir: Path, epochs: int) -> list[str]:
    """The CLI call that continues an unfinished run from its last checkpoint (its config.yaml has the rest)."""
    return [sys.executable, "-m", "ignite_cifar", "train", "--resume", str(run_dir), "--epochs", str(epochs)]


def shown(cmd: list[str]) -> str:
    """A command as a report shows it, copy-and-paste ready: a `~/` path is left unquoted so the shell expands it."""
    def quoted(arg: str) -> str:
        return arg if arg.startswith("~/") and shlex.quote(arg[2:]) == arg[2:] else shlex.quote(arg)
    return " ".join(quoted(arg) for arg in ["python"] + cmd[1:])


def shown_dir(path: Path) -> str:
    """A folder as a committed report names it: under the home folder as ~/..., so no machine's user shows."""
    path = path.expanduser().resolve()
    home = Path.home().resolve()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def move_aside(run_dir: Path) -> Path:
    """Keep an aborted run folder out of the way (STUDY_DIR/aborted/<name>-<time>) instead of deleting it."""
    target = run_dir.parent / "aborted" / f"{run_dir.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(target))
    return target


def run_logged(cmd: list[str], log_path: Path) -> int:
    """Run one CLI call with its output appended to log_path; a SIGTERM or Ctrl-C sent to the study is passed on
    to it (the CLI stops at a safe point and leaves a checkpoint) and the study waits for it.

    Returns the CLI's exit code, or 128 + the signal's number when the study received one: the study stops then,
    however the CLI ended (a CLI still starting up dies of the signal, exit -15, instead of stopping cleanly)."""
    received: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum, frame):
        received.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    # the handlers come first: a signal while the CLI is being started still reaches it and stops the study
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with log_path.open("a") as log:
            log.write(f"\n==> {dt.datetime.now():%Y-%m-%d %H:%M:%S} {shown(cmd)}\n")
            log.flush()
            child = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            if received:
                child.send_signal(received[0])
            code = child.wait()
        return 128 + received[0] if received else code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def step(variant: Variant, study_dir: Path, setting: dict[str, Any], kept: Path | None = None) -> tuple[str, int]:
    """Bring one variant's run one call closer to finished; returns (what was done, exit code). A run whose folder
    is gone but whose record is in `kept` (a finished run's numbers, committed) is not trained again."""
    run_dir = study_dir / variant.name
    log_path = study_dir / f"{variant.name}.log"
    state = run_state(run_dir, int(setting["epochs"]))
    if state == "finished":
        return "skipped (finished)", 0
    if state == "missing" and kept is not None and (kept / f"{variant.name}.json").is_file():
        return f"skipped (finished; its record is kept in {kept.name}/)", 0
    if state == "explain":  # killed while writing the explanations: write them, the final test included
        code = run_logged([sys.executable, "-m", "ignite_cifar", "explain", "--run", str(run_dir)], log_path)
        return "explained (training had finished)", code
    if state == "unfinished":
        done = len(read_history(run_dir)["epochs"])
        return f"resumed after epoch {done}", run_logged(resume_command(run_dir, int(setting["epochs"])), log_path)
    note = ""
    if state == "aborted":
        note = f" (moved the folder without a checkpoint to {move_aside(run_dir)})"
    return f"started{note}", run_logged(train_command(variant, study_dir, setting), log_path)


# ---------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="the image folder (DIR/train/<class>, DIR/test/<class>) of the JPEG export")
    p.add_argument("--study-dir", default=str(RUNS_HOME / "study"),
                   help="where the run folders and their logs go (default: %(default)s, outside the repository)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these variants (file names without .yaml)")
    p.add_argument("--dry", action="store_true", help="synthetic data, width 0.125, 2 epochs, small subsets; "
                                                     "the report goes into the study folder")
    p.add_argument("--report-only", action="store_true", help="write the report from what is there; train nothing")
    return p.parse_args(argv)


def setting_for(args: argparse.Namespace) -> dict[str, Any]:
    """The flags every run of this study gets (before the variant's overrides)."""
    if args.dry:
        return dict(DRY_FLAGS)
    if args.report_only and not args.data_dir:
        return {**STUDY_FLAGS, "data_dir": "DIR"}
    data = Path(args.data_dir or "")
    if not args.data_dir or not (data / "train").is_dir() or not (data / "test").is_dir():
        raise StudyError(f"--data-dir: {args.data_dir or '(not given)'} is not an image folder with train/ and test/; "
                         "extract ../shared/data/cifar10-jpeg.tar.gz and give its cifar10-jpeg folder")
    return {**STUDY_FLAGS, "data_dir": str(data.resolve())}


def report(variants: list[Variant], study_dir: Path, setting: dict[str, Any], out_dir: Path, note: str) -> None:
    """RECIPE.md and its figure into out_dir, finished runs' records into out_dir/recipe-runs (RECORDS). The
    commands show `--data-dir DIR`, whatever folder this machine used: the report is committed, the folder is not."""
    summaries = collect(variants, study_dir, int(setting["epochs"]), out_dir / RECORDS.name)
    shown_setting = {**setting, "data_dir": "DIR"} if "data_dir" in setting else setting
    write_report(summaries, out_dir, note,
                 {v.name: shown(train_command(v, Path(shown_dir(study_dir)), shown_setting)) for v in variants})


def run_each(variants: list[Variant], study_dir: Path, setting: dict[str, Any], after_each: Callable[[], Any],
             kept: Path | None = None) -> int:
    """Bring each variant one call closer to finished (step), in order, calling after_each (a report) after each.
    Returns the first non-zero exit code, or 0; a run stopped by Ctrl-C or SIGTERM stops the loop with its code."""
    code = 0
    for variant in variants:
        study_dir.mkdir(parents=True, exist_ok=True)
        done, rc = step(variant, study_dir, setting, kept)
        print(f"{variant.name}: {done}" + (f" -> exit {rc}" if rc else ""), flush=True)
        after_each()
        if rc in (130, 143):  # stopped at a safe point: the study stops with it
            print(f"study stopped; run the same command again to resume {variant.name}", flush=True)
            return rc
        code = code or rc
    return code


def study(args: argparse.Namespace) -> int:
    """Run (or only report) the study; returns the exit code."""
    variants = load_variants(args.only)
    setting = setting_for(args)
    study_dir = Path(args.study_dir)
    out_dir = study_dir if args.dry else Path(__file__).resolve().parent
    note = ("Dry run: synthetic data, tiny subsets." if args.dry else
            f"Width 0.25, batch 128, {EPOCHS} epochs, all 50,000 training images of the JPEG export, "
            "val = its 10,000 test images unless a recipe holds some training images out (`val_split`); one run at "
            f"a time on the machine named below. Run folders: `{shown_dir(study_dir)}`.")
    report_all = load_variants()  # the report shows every variant, also those not run this time
    code = run_each([] if args.report_only else variants, study_dir, setting,
                    lambda: report(report_all, study_dir, setting, out_dir, note), kept=out_dir / RECORDS.name)
    report(report_all, study_dir, setting, out_dir, note)
    print(f"report: {out_dir / REPORT}", flush=True)
    return code


def exit_code(script: str, work: Callable[[], int]) -> int:
    """work()'s exit code, or 2 after one line on stderr when it raised a StudyError (how the script was called)."""
    try:
        return work()
    except StudyError as exc:
        print(f"{script}: error: {exc}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    return exit_code("recipe_study", lambda: study(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
