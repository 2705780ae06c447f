"""When would other ReduceLROnPlateau settings have cut the lr in a finished run? A replay, no training.

A run's history.json holds the val metrics the plateau scheduler saw each epoch: the evaluated model's (the weight
average with --ema-decay) and, beside an average, the raw weights'. Up to the run's first lr cut, the training did
not depend on the plateau settings, so feeding those values to the project's own PlateauScheduler with other
settings says exactly at which epoch each setting would have cut first. After the first recorded cut the run
followed its own lr, so a setting that has not cut by then is reported as "> N" (unknown beyond N); a run that
never cut answers for all its epochs. Epochs of a warmup are skipped, as the trainer skips them.

As a check, the run's own settings are replayed too: they must cut where the run did.

`--logs` reads the runs of gpu_study.sh logs instead (benchmarks/study/study_log_curves.py; settings from
assignment.yaml and the recipe the run is named after), also runs the budget stopped: they answer for their recorded
epochs only.

    python benchmarks/study/plateau_replay.py --runs runs/study/combination-seed2 runs/study/combination-warmup \
        --markdown benchmarks/study/PLATEAU-REPLAY.md
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml
from study_log_curves import read_runs

from ignite_cifar.config import Config, read_yaml
from ignite_cifar.errors import ConfigError
from ignite_cifar.training.schedules import Plateau, PlateauScheduler

THRESHOLDS = {"loss": (1e-4, 0.005, 0.01, 0.02), "accuracy": (0.002, 0.005, 0.01)}  # 1e-4 rel: torch's default
PATIENCES = (1, 2, 3, 4)


@dataclasses.dataclass
class Recorded:
    """What a finished run offers a replay: its val metrics per epoch (up to and including its first cut), the
    epoch whose lr was the first cut one (None: never cut), its warmup and its own plateau settings."""

    name: str
    epochs: list[dict[str, Any]]
    first_cut: int | None
    warmup_epochs: int
    own: Plateau
    own_on: str
    complete: bool = True  # False: stopped before its planned epochs, so "no cut" means none in those recorded


REPO = Path(__file__).resolve().parents[2]
RECIPES = Path(__file__).resolve().parent / "recipes"


def recorded(name: str, epochs: list[dict[str, Any]], config: dict[str, Any], complete: bool = True) -> Recorded:
    cut = next((i for i, r in enumerate(epochs) if r["next_lr"] < r["lr"]), None)
    # a run older than a --plateau-* flag ran with that flag's default (torch's): Config's defaults fill it in
    own = Plateau.of(SimpleNamespace(**{**dataclasses.asdict(Config()), **config}))
    return Recorded(name, epochs[: None if cut is None else cut + 1], None if cut is None else cut + 2,
                    config.get("warmup_epochs", 0), own,
                    config.get("plateau_on", "ema") if config.get("ema_decay") else "raw", complete)


def read_run(run_dir: Path) -> Recorded:
    epochs = json.loads((run_dir / "history.json").read_text())["epochs"]
    return recorded(run_dir.name, epochs, yaml.safe_load((run_dir / "config.yaml").read_text()))


def read_logged_runs(log: Path) -> list[Recorded]:
    """The runs of one gpu_study.sh log, named <log folder>/<recipe>, with assignment.yaml + the recipe's settings."""
    runs = []
    for name, run in read_runs(log).items():
        recipe = RECIPES / f"{name}.yaml"
        if not recipe.is_file():
            raise FileNotFoundError(f"{log}: run {name} names no recipe {recipe.relative_to(REPO)}")
        config = {**read_yaml("assignment"), **read_yaml(str(recipe))}  # as gpu_study.sh's --config assignment --config
        epochs = run["epochs"]
        for this, following in zip(epochs, epochs[1:] + [None], strict=True):
            this["next_lr"] = following["lr"] if following else this["lr"]  # the last one's next lr: not logged
        runs.append(recorded(f"{log.parent.name}/{name}", epochs, config, epochs[-1]["epoch"] == epochs[-1]["planned"]))
    return runs


def read_record(path: Path) -> Recorded:
    """A finished run's kept record (full-width-cpu-runs/*.json): val accuracy per epoch, the average's and the raw
    weights', and its lr; no losses. Its settings: assignment.yaml with its recipe (recipes/<variant>.yaml)."""
    record = json.loads(path.read_text())
    recipe = RECIPES / f"{record['variant'].removesuffix('-seed2')}.yaml"
    config = {**read_yaml("assignment"), **read_yaml(str(recipe))}
    lrs = dict(record["lr"])
    epochs = [{"epoch": int(e), "val_accuracy": acc, "raw_val_accuracy": record["raw_val"][e], "lr": lrs[int(e)],
               "next_lr": lrs.get(int(e) + 1, lrs[int(e)])} for e, acc in sorted(record["val"].items(), key=lambda
                                                                                  kv: int(kv[0]))]
    return recorded(path.stem, epochs, config, record["epochs_done"] == record["epochs"])


def replay(values: list[float], plateau: Plateau, warmup_epochs: int = 0) -> int | None:
    """The first epoch trained at a cut lr when the plateau scheduler sees `values` (one per epoch, from epoch 1),
    or None when it never cuts."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = PlateauScheduler(optimizer, dataclasses.replace(plateau, min_lr=0.0))
    evaluator = SimpleNamespace(state=SimpleNamespace(metrics={}))
    for epoch, value in enumerate(values, start=1):
        if epoch <= warmup_epochs:
            continue
        evaluator.state.metrics[plateau.metric] = value
        scheduler(evaluator)
        if optimizer.param_groups[0]["lr"] < 1.0:
            return epoch + 1
    return None


def metric_key(on: str, metric: str, run: Recorded) -> str | None:
    """history.json's key for the val metric the scheduler would watch: the average's (val_*) or the raw
    weights' (raw_val_* beside an average; val_* without one)."""
    averaged = any(key.startswith("raw_val_") for key in run.epochs[0])
    if on == "raw":
        return f"raw_val_{metric}" if averaged else f"val_{metric}"
    return f"val_{metric}" if averaged else None


def answer(run: Recorded, on: str, plateau: Plateau) -> str:
    key = metric_key(on, plateau.metric, run)
    if key is None:
        return "no average"
    if key not in run.epochs[0]:
        return "not recorded"
    cut = replay([r[key] for r in run.epochs], plateau, run.warmup_epochs)
    if cut is not None:
        return str(cut)
    return f"> {len(run.epochs)}" if run.first_cut is not None or not run.complete else "never"


def settings() -> list[tuple[str, Plateau]]:
    grid = [("ema", Plateau())]
    for on, metric in itertools.product(("ema", "raw"), ("loss", "accuracy")):
        for threshold, patience in itertools.product(THRESHOLDS[metric], PATIENCES):
            mode = "rel" if threshold == 1e-4 else "abs"
            grid.append((on, Plateau(patience=patience, metric=metric, threshold=threshold, threshold_mode=mode)))
    return list(dict.fromkeys(grid))


def describe(on: str, plateau: Plateau) -> str:
    return (f"{on} val {plateau.metric}, {plateau.threshold_mode} {plateau.threshold:g}, patience "
            f"{plateau.patience}")


def table(runs: list[Recorded]) -> list[str]:
    lines = ["| plateau on, threshold, patience | " + " | ".join(r.name for r in runs) + " |",
             "|---|" + "---|" * len(runs),
             "| **recorded** (the run's own settings) | " + " | ".join(
                 f"{recorded_cut(r)} ({describe(r.own_on, r.own)}; replayed: {answer(r, r.own_on, r.own)})"
                 for r in runs) + " |"]
    for on, plateau in settings():
        lines.append(f"| {describe(on, plateau)} | " + " | ".join(answer(r, on, plateau) for r in runs) + " |")
    return lines


def recorded_cut(run: Recorded) -> str:
    """The run's own first cut, said as answer() says a replayed one."""
    if run.first_cut:
        return str(run.first_cut)
    return "never" if run.complete else f"> {len(run.epochs)}"


def own_settings_agree(run: Recorded) -> bool:
    """Replaying the run's own settings gives its recorded cut (not checkable where its metric was not recorded)."""
    replayed = answer(run, run.own_on, run.own)
    return replayed == "not recorded" or replayed == recorded_cut(run)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", default=[], help="finished run folders (history.json, config.yaml)")
    p.add_argument("--logs", nargs="+", default=[], help="gpu_study.sh study.log files")
    p.add_argument("--records", nargs="+", default=[], help="finished runs' kept records (full-width-cpu-runs/*.json)")
    p.add_argument("--markdown", default=None, help="also write the table here")
    args = p.parse_args(argv)
    if not args.runs and not args.logs and not args.records:
        p.error("give --runs, --logs and/or --records")
    try:
        runs = ([read_run(Path(d)) for d in args.runs] + [r for log in args.logs for r in read_logged_runs(Path(log))]
                + [read_record(Path(f)) for f in args.records])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, ConfigError) as err:
        print(f"plateau_replay: {err}", file=sys.stderr)
        return 2
    lines = ["First epoch trained at a cut lr (factor 0.1) if the plateau scheduler had had these settings; "
             "'> N': no cut while the run's own lr held (its first cut came at N + 1) or in the N epochs a run "
             "stopped early recorded, 'never': no cut in the whole run.", "", *table(runs)]
    print("\n".join(lines))
    if args.markdown:
        sources = (("runs", args.runs), ("logs", args.logs), ("records", args.records))
        command = "python benchmarks/study/plateau_replay.py" + "".join(
            f" --{flag} " + " ".join(values) for flag, values in sources if values)
        Path(args.markdown).write_text(f"# Plateau replay\n\nWritten by `{command}`.\n\n" + "\n".join(lines) + "\n")
    bad = [r.name for r in runs if not own_settings_agree(r)]
    if bad:
        print(f"plateau_replay: replaying the run's own settings does not give its recorded cut: {', '.join(bad)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
