"""`lr-find`: an LR range test with ignite's FastaiLRFinder on the training setup, written to lr_find.png/.json.

Data, model, optimizer, training loss and trainer come from the builders training uses. The finder then raises
the lr exponentially from start_lr to end_lr over num_iter iterations and stops early once the smoothed loss
diverges. Nothing is checkpointed: the finder keeps its copy of the starting state in a temporary folder that it
deletes when it is done.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from ignite.contrib.handlers import ProgressBar
from ignite.engine import Engine, Events
from ignite.handlers import FastaiLRFinder

from ignite_cifar import files
from ignite_cifar.config import Config, RangeTest
from ignite_cifar.data.datasets import DataSplits, load_data
from ignite_cifar.data.loaders import Dataflow, build_dataflow, shut_down_workers
from ignite_cifar.errors import ConfigError, TrainingStopped, UserError
from ignite_cifar.explain import figures
from ignite_cifar.training import engines
from ignite_cifar.training.engines import Precision
from ignite_cifar.training.handlers import attach_epoch_seeding
from ignite_cifar.training.optimizer import training_criterion
from ignite_cifar.training.process import (
    build_model_and_optimizer,
    check_device,
    derived_settings,
    resolve_precision,
    setup_process,
)

log = logging.getLogger("ignite_cifar")

PNG, JSON = "lr_find.png", "lr_find.json"
RULE = "steepest descent of the smoothed loss"
RULE_DETAIL = ("FastaiLRFinder.lr_suggestion(): the lr at the most negative central difference of the smoothed "
               "loss, looking only at the iterations up to the lowest loss")
SMOOTH_F, DIVERGE_TH = 0.05, 5.0  # FastaiLRFinder's defaults, named here so lr_find.json can record them
# Config fields that cannot change the test: no lr schedule, evaluation, checkpoint or explanation runs.
UNUSED_FIELDS = frozenset({
    "epochs", "lr", "warmup_epochs", "ema_decay", "plateau_factor", "plateau_patience", "min_lr", "test_subset",
    "plateau_metric", "plateau_threshold", "plateau_threshold_mode", "plateau_cooldown", "plateau_on",
    "nproc_per_node", "backend", "log_every", "resume", "n_misclassified", "mistake_order", "gradcam_method",
    "gradcam_layer", "explain_checkpoint", "explain_at_end", "probe_every", "probe_size",
})


def lr_find(config: Config, test: RangeTest, output: str | None = None) -> dict[str, Any]:
    """Run the range test and write lr_find.png and lr_find.json; returns the JSON's content and `run_dir`.
    When the loss gives no suggestion, both files are still written, then a UserError says so."""
    test.validate()
    check_one_process(config)
    check_device(config)
    run_dir = output_folder(config, output)
    data = load_data(config)
    derived = derived_settings(config, data)
    started = time.monotonic()
    finder, setting = run_finder(config, test, data, derived)
    report = make_report(config, test, finder, {**derived, **setting}, time.monotonic() - started)
    write_report(run_dir, report)
    if report["suggested_lr"] is None:
        raise UserError(f"no suggested lr: the smoothed loss did not fall over three iterations before its lowest "
                        f"point; lower --start-lr (wrote {run_dir / PNG} and {JSON})")
    return {**report, "run_dir": str(run_dir)}


def check_one_process(config: Config) -> None:
    if config.nproc_per_node > 1 or os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        raise ConfigError("nproc_per_node: lr-find runs in one process; leave out --nproc-per-node (and torchrun)")
    if config.resume:
        raise ConfigError("resume: lr-find starts from fresh weights; leave out --resume")


def output_folder(config: Config, output: str | None) -> Path:
    """--output as given (a training run's folder, say), else --output-dir/--run-name, else
    --output-dir/lr-find-<timestamp>; checked for writing now, not after the test."""
    if output:
        run_dir = Path(output)
        if (run_dir / JSON).exists():
            raise ConfigError(f"output: {run_dir} holds a {JSON} already; choose another --output")
    elif config.run_name:
        run_dir = Path(config.output_dir) / config.run_name
        if run_dir.exists():
            raise ConfigError(f"run_name: {run_dir} exists already; choose another --run-name")
    else:
        run_dir = files.timestamped(Path(config.output_dir), prefix="lr-find-")
    files.check_writable(run_dir if run_dir.exists() else run_dir.parent)
    return run_dir


def run_finder(config: Config, test: RangeTest, data: DataSplits,
               derived: dict[str, Any]) -> tuple[FastaiLRFinder, dict[str, Any]]:
    """Build what training builds and let FastaiLRFinder sweep it; returns the finder and how it ran."""
    device = setup_process(config)
    precision = resolve_precision(config, device)
    flow = build_dataflow(config, data, derived["mean"], derived["std"], device)
    trainer, to_save = build_trainer(config, test, flow, len(data.classes), device, precision)
    log.info("lr-find: lr %.3g -> %.3g in %d exponential steps | %s width %g on %s (%s) | %d train images",
             test.start_lr, test.end_lr, test.num_iter, config.model, config.width, device, precision.describe(),
             len(data.train))
    finder = FastaiLRFinder()
    try:
        with warnings.catch_warnings():  # "completed without loss diverging": lr_find.json says whether it did
            warnings.filterwarnings("ignore", message="Run completed without loss diverging")
            with finder.attach(trainer, to_save, output_transform=loss_or_inf, num_iter=test.num_iter,
                               start_lr=float(test.start_lr), end_lr=float(test.end_lr), step_mode="exp",
                               smooth_f=SMOOTH_F, diverge_th=DIVERGE_TH) as sweeping:
                sweeping.run(flow.train_loader, max_epochs=math.ceil(test.num_iter / len(flow.train_loader)))
    except KeyboardInterrupt:
        raise TrainingStopped("lr-find interrupted; nothing was written", exit_code=130) from None
    finally:
        shut_down_workers(flow.train_loader)
    return finder, {"device": str(device), "precision": precision.describe(), "data_workers": flow.workers,
                    "torch_threads": torch.get_num_threads()}


def build_trainer(config: Config, test: RangeTest, flow: Dataflow, num_classes: int, device: torch.device,
                  precision: Precision) -> tuple[Engine, dict[str, Any]]:
    """Training's model, optimizer (at start_lr: the finder's first step starts from the optimizer's lr),
    loss and trainer, stopped after num_iter iterations; returns the trainer and what the finder restores."""
    net = build_model_and_optimizer(dataclasses.replace(config, lr=test.start_lr), num_classes, device, precision)
    trainer = engines.create_trainer(net.train_model, net.optimizer, training_criterion(config).to(device), device,
                                     precision)
    attach_epoch_seeding(trainer, flow.sampler, flow.train_dataset)
    # The finder's own stop comes one iteration late (when the iteration count exceeds num_iter).
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=test.num_iter), lambda engine: engine.terminate())
    if sys.stderr.isatty():
        ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {"loss": out["loss"]})
    return trainer, {"model": net.base_model, "optimizer": net.optimizer}


def loss_or_inf(output: dict[str, Any]) -> float:
    """The batch loss for the finder, with NaN as +inf: NaN compares false with everything, so the finder's
    divergence test would never stop on it, while +inf exceeds any multiple of the best loss."""
    loss = float(output["loss"])
    return loss if math.isfinite(loss) else math.inf


def suggestion(finder: FastaiLRFinder) -> float | None:
    try:
        return float(finder.lr_suggestion())
    except RuntimeError:  # the loss was lowest within its first two iterations: no descent to measure
        return None


def make_report(config: Config, test: RangeTest, finder: FastaiLRFinder, derived: dict[str, Any],
                seconds: float) -> dict[str, Any]:
    """lr_find.json: the suggestion and the rule behind it, the lowest loss, the divergence, the whole curve."""
    history = finder.get_results()
    lrs = [float(lr) for lr in history["lr"]]
    losses = [float(loss) if math.isfinite(loss) else None for loss in history["loss"]]
    finite = [i for i, loss in enumerate(losses) if loss is not None]
    lowest = min(finite, key=lambda i: losses[i]) if finite else None
    diverged = lowest is not None and (losses[-1] is None or losses[-1] > DIVERGE_TH * losses[lowest])
    return {
        "suggested_lr": suggestion(finder), "suggestion_rule": f"{RULE}: {RULE_DETAIL}",
        "lowest_loss_lr": None if lowest is None else lrs[lowest],
        "lowest_loss": None if lowest is None else losses[lowest],
        "diverged_at_lr": lrs[-1] if diverged else None,
        "start_lr": test.start_lr, "end_lr": test.end_lr, "num_iter": test.num_iter, "iterations_run": len(lrs),
        "step_mode": "exp", "smooth_f": SMOOTH_F, "diverge_th": DIVERGE_TH, "seconds": round(seconds, 1),
        "lrs": lrs, "losses": losses,
        "meaning": {
            "lrs": "lrs[k] = start_lr * (end_lr / start_lr) ** ((k + 1) / num_iter): the lr FastaiLRFinder logs "
                   "with iteration k + 1's loss (the lr its scheduler sets as that iteration completes)",
            "losses": f"training loss of each iteration, smoothed by FastaiLRFinder (loss = {SMOOTH_F} * batch "
                      f"loss + {1 - SMOOTH_F:g} * previous); null where it was NaN or infinite",
            "diverged_at_lr": f"the last lr, when the test stopped because the smoothed loss exceeded "
                              f"{DIVERGE_TH:g} x its lowest value (null: it ran to end_lr without diverging)",
        },
        "config": {k: v for k, v in config.to_dict().items() if k not in UNUSED_FIELDS},
        "derived": derived,
    }


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    files.write_json(run_dir / JSON, report)
    marks = [(f"suggested ({RULE})", report["suggested_lr"], "tab:red"),
             ("lowest loss", report["lowest_loss_lr"], "tab:green"),
             ("diverged", report["diverged_at_lr"], "tab:gray")]
    c = report["config"]
    title = (f"LR range test: {c['model']} width {c['width']:g}, {c['optimizer']}, batch {c['batch_size']}, "
             f"{report['iterations_run']} of {report['num_iter']} iterations")
    fig = figures.lr_range_test(report["lrs"], report["losses"], [m for m in marks if m[1] is not None], title)
    files.save_figure(fig, run_dir / PNG, dpi=110)
    figures.close(fig)
