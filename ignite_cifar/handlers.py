"""Small handlers attached to the trainer's and evaluator's events."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, PiecewiseLinear, global_step_from_engine
from ignite.handlers.tensorboard_logger import TensorboardLogger
from torch.optim.lr_scheduler import ReduceLROnPlateau

from . import files
from .errors import MachineError

log = logging.getLogger("ignite_cifar")


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


HYPERPARAMETERS = ("factor", "patience", "min_lrs", "default_min_lr", "threshold", "threshold_mode", "cooldown", "eps")


@dataclass(frozen=True)
class Plateau:
    """ReduceLROnPlateau's settings: the `--plateau-*` flags and `--min-lr` (the defaults are torch's and the
    mission's: val loss, relative threshold 1e-4, no cooldown)."""

    factor: float = 0.1
    patience: int = 2
    min_lr: float = 1e-5
    metric: str = "loss"
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0

    @classmethod
    def of(cls, config: Any) -> "Plateau":
        return cls(config.plateau_factor, config.plateau_patience, config.min_lr, config.plateau_metric,
                   config.plateau_threshold, config.plateau_threshold_mode, config.plateau_cooldown)

    @property
    def mode(self) -> str:
        return "max" if self.metric == "accuracy" else "min"


class PlateauScheduler:
    """torch's ReduceLROnPlateau stepped on a val metric each time the evaluator it is attached to completes.

    Written here rather than ignite's ReduceLROnPlateauScheduler because that one's state_dict carries a
    bound method, which cannot be saved as plain data (see files.load_checkpoint).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, plateau: Plateau):
        self.optimizer = optimizer
        self.metric_name = plateau.metric
        self.scheduler = ReduceLROnPlateau(optimizer, mode=plateau.mode, factor=plateau.factor,
                                           patience=plateau.patience, min_lr=plateau.min_lr,
                                           threshold=plateau.threshold, threshold_mode=plateau.threshold_mode,
                                           cooldown=plateau.cooldown)
        self.paused: Callable[[], bool] = lambda: False  # a warmup holds it still until it is over

    def __call__(self, evaluator: Engine) -> None:
        if self.paused():
            return
        before = current_lr(self.optimizer)
        self.scheduler.step(float(evaluator.state.metrics[self.metric_name]))
        after = current_lr(self.optimizer)
        if after < before:
            log.info("val %s did not improve for %d evaluations: lr %.3g -> %.3g",
                     self.metric_name, self.scheduler.patience + 1, before, after)

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The counters (best value, evaluations without improvement, ...) come from the checkpoint; factor,
        patience, min lr, threshold and cooldown stay as configured, so flags given with --resume take effect. A
        resumed run that watches another metric now (--plateau-metric) starts counting afresh."""
        configured = {k: getattr(self.scheduler, k) for k in HYPERPARAMETERS if hasattr(self.scheduler, k)}
        mode = self.scheduler.mode
        self.scheduler.load_state_dict(state)
        for key, value in configured.items():
            setattr(self.scheduler, key, value)
        self.scheduler.mode = mode
        self.scheduler._init_is_better(mode=mode, threshold=self.scheduler.threshold,
                                       threshold_mode=self.scheduler.threshold_mode)
        if state.get("mode", mode) != mode:
            self.scheduler._reset()
            log.info("the plateau scheduler now watches val %s: its counters start afresh", self.metric_name)


def attach_plateau_scheduler(evaluator: Engine, optimizer: torch.optim.Optimizer, plateau: Plateau) -> PlateauScheduler:
    scheduler = PlateauScheduler(optimizer, plateau)
    evaluator.add_event_handler(Events.COMPLETED, scheduler)
    return scheduler


WARMUP_START = 0.1  # the warmup starts at this fraction of the lr


def attach_warmup(trainer: Engine, optimizer: torch.optim.Optimizer, lr: float, epochs: int, epoch_length: int,
                  plateau: PlateauScheduler) -> PiecewiseLinear:
    """Linear warmup of the lr, per iteration, from lr/10 to lr over `epochs` epochs (ignite's PiecewiseLinear;
    save it with the checkpoint so a resumed run continues it). The plateau scheduler does not step until the
    warmup is over, and after it only the plateau scheduler changes the lr."""
    steps = epochs * epoch_length
    start = lr * WARMUP_START
    for group in optimizer.param_groups:  # the first iteration's lr; a resumed run's checkpoint replaces it
        group["lr"] = start
    # Iteration i runs at start + (i - 1) * step. The scheduler sets the next iteration's lr when one completes
    # (so an epoch's recorded lr, read when it starts, is its first iteration's), and steps + 1 runs at lr.
    step = (lr - start) / steps
    warmup = PiecewiseLinear(optimizer, "lr", milestones_values=[(0, start + step), (max(steps - 1, 1), lr)])
    trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=lambda _, i: i <= steps), warmup)
    plateau.paused = lambda: trainer.state.epoch <= epochs
    return warmup


class RNGState:
    """The torch generators' states as tensors, so a checkpoint restores them as plain data."""

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def attach_epoch_seeding(trainer: Engine, *targets: Any) -> None:
    """Before each epoch, tell samplers and datasets which epoch it is (0-based): order and augmentation follow."""

    def set_epoch(engine: Engine) -> None:
        for target in targets:
            target.set_epoch(engine.state.epoch - 1)

    trainer.add_event_handler(Events.EPOCH_STARTED, set_epoch)


class NonFiniteLossGuard:
    """Stops training when the loss becomes NaN or infinite, without a host sync every iteration.

    Each iteration only updates, on the loss's device, the first iteration whose loss was not finite. The host
    reads it every `every` iterations (when the TensorBoard batch loss syncs anyway) and at the last iteration
    of each epoch, so a bad epoch is never evaluated or checkpointed. `iteration` then says where it happened.
    """

    def __init__(self, every: int):
        self.every = max(1, every)
        self.iteration: int | None = None  # the first iteration with a non-finite loss, once seen
        self._first_bad: torch.Tensor | None = None

    def attach(self, trainer: Engine) -> "NonFiniteLossGuard":
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._check)
        return self

    def _check(self, engine: Engine) -> None:
        loss, i = engine.state.output["loss"], engine.state.iteration
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.int64, device=loss.device)
        bad = ~torch.isfinite(loss).all() & (self._first_bad < 0)
        self._first_bad = torch.where(bad, i, self._first_bad)
        length = engine.state.epoch_length or 0
        if i % self.every == 0 or (length and i % length == 0):
            first = int(self._first_bad)
            if first >= 0:
                self.iteration = first
                engine.terminate()


class CheckpointSaver(DiskSaver):
    """ignite's atomic DiskSaver, whose failed writes (torch reports a full disk as a zip writer's position error)
    become a MachineError naming the file and the cause; the temporary file is removed by DiskSaver itself."""

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        try:
            super().__call__(checkpoint, filename, metadata)
        except (OSError, RuntimeError) as exc:
            cause = files.write_failure_cause(Path(self.dirname), exc)
            raise MachineError(f"cannot write {Path(self.dirname) / filename}: {cause}") from exc


def attach_checkpoints(trainer: Engine, val_evaluator: Engine, to_save: dict[str, Any], run_dir: Path,
                       model: torch.nn.Module) -> tuple[Checkpoint, Checkpoint]:
    """`last_checkpoint_<iteration>.pt` (everything needed to resume); `best_model_*.pt` by val accuracy.

    The `last` handler is returned unattached: attach it to EPOCH_COMPLETED after the handler that evaluates,
    so the saved scheduler state already includes that epoch's val loss.
    """
    folder = run_dir / files.CHECKPOINT_DIR
    last = Checkpoint(to_save, CheckpointSaver(str(folder), require_empty=False, atomic=True),
                      filename_prefix=files.LAST_PREFIX, n_saved=1,
                      global_step_transform=lambda engine, _: engine.state.iteration)
    best = Checkpoint({"model": model}, CheckpointSaver(str(folder), require_empty=False, atomic=True),
                      filename_prefix=files.BEST_PREFIX, n_saved=1,
                      score_function=lambda engine: float(engine.state.metrics["accuracy"]),
                      score_name="val_accuracy", global_step_transform=global_step_from_engine(trainer))
    val_evaluator.add_event_handler(Events.COMPLETED, best)
    return last, best


def attach_tensorboard(log_dir: Path, trainer: Engine, evaluators: dict[str, Engine], optimizer: torch.optim.Optimizer,
                       log_every: int, config_text: str) -> TensorboardLogger:
    """Tags: train/batch_loss and lr/group_0 every `log_every` iterations (step = iteration); train/{loss,accuracy},
    val/{loss,accuracy} (and raw_val/..., with a weight average) and epoch/lr/group_0 per epoch (step = epoch)."""
    tb = TensorboardLogger(log_dir=str(log_dir))
    every = Events.ITERATION_COMPLETED(every=log_every)
    tb.attach_output_handler(trainer, event_name=every, tag="train",
                             output_transform=lambda out: {"batch_loss": out["loss"]})
    tb.attach_opt_params_handler(trainer, event_name=every, optimizer=optimizer, param_name="lr")
    # the lr each epoch trained with, at the epoch's step, to sit beside the per-epoch curves: epoch/lr/group_0
    tb.attach_opt_params_handler(trainer, event_name=Events.EPOCH_STARTED, optimizer=optimizer, param_name="lr",
                                 tag="epoch")
    tb.attach_output_handler(trainer, event_name=Events.EPOCH_COMPLETED, tag="train",
                             metric_names=["loss", "accuracy"], global_step_transform=global_step_from_engine(trainer))
    for name, evaluator in evaluators.items():
        tb.attach_output_handler(evaluator, event_name=Events.COMPLETED, tag=name, metric_names=["loss", "accuracy"],
                                 global_step_transform=global_step_from_engine(trainer))
    tb.writer.add_text("config", "```\n" + config_text + "\n```", global_step=0)
    trainer.add_event_handler(Events.COMPLETED | Events.TERMINATE, lambda _: tb.writer.flush())
    return tb


class History:
    """Per-epoch records (train/val loss and accuracy, lr, epoch seconds) kept in history.json."""

    def __init__(self, path: Path, records: Iterable[dict[str, Any]] = ()):
        self.path = path
        self.records = list(records)
        self.extra: dict[str, Any] = {}

    @classmethod
    def resume(cls, path: Path, up_to_epoch: int) -> "History":
        """Continue a run's history, dropping epochs past the checkpoint we resume from."""
        records = []
        if path.is_file():
            records = [r for r in json.loads(path.read_text()).get("epochs", []) if r["epoch"] <= up_to_epoch]
        return cls(path, records)

    def add(self, record: dict[str, Any]) -> None:
        self.records = [r for r in self.records if r["epoch"] != record["epoch"]] + [record]
        self.write()

    def write(self) -> None:
        files.write_json(self.path, {"epochs": self.records, **self.extra})


def attach_epoch_log(trainer: Engine, evaluators: dict[str, Engine], val_loader, optimizer: torch.optim.Optimizer,
                     history: History | None, train_size: int, batch_size: int,
                     on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
    """After each epoch: run each evaluator on val (`val`: the evaluated model; `raw_val`, with a weight average:
    the raw weights), then record/print the epoch. On ranks other than 0 `history` is None.

    Images/s count the images this process trained in the epoch: after a mid-epoch resume, the first epoch's
    skipped (full) batches are not counted."""
    epoch_start: dict[str, float] = {}  # the lr and the iteration each epoch started with
    started = {"at": time.perf_counter()}

    @trainer.on(Events.STARTED)
    def remember_start(engine: Engine) -> None:
        started["at"] = time.perf_counter()

    @trainer.on(Events.EPOCH_STARTED)
    def remember_lr(engine: Engine) -> None:
        epoch_start["lr"] = current_lr(optimizer)
        epoch_start["iteration"] = engine.state.iteration

    @trainer.on(Events.EPOCH_COMPLETED)
    def evaluate_and_record(engine: Engine) -> None:
        evaluated = {}
        for name, evaluator in evaluators.items():  # `val` first: the plateau may step on `raw_val`, after it
            began = time.perf_counter()
            evaluator.run(val_loader)
            v = evaluator.state.metrics
            evaluated.update({f"{name}_loss": float(v["loss"]), f"{name}_accuracy": float(v["accuracy"]),
                              f"{name}_seconds": round(time.perf_counter() - began, 3)})
        if history is None:
            return
        seconds = engine.state.times[Events.EPOCH_COMPLETED.name]
        m = engine.state.metrics
        skipped_batches = (engine.state.epoch_length or 0) - (engine.state.iteration - epoch_start["iteration"])
        images = train_size - max(0, skipped_batches) * batch_size
        record = {
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "train_loss": float(m["loss"]), "train_accuracy": float(m["accuracy"]),
            **evaluated,
            "lr": epoch_start["lr"], "next_lr": current_lr(optimizer),
            "epoch_seconds": round(float(seconds), 3),
            "train_images_per_s": round(images / seconds, 1) if seconds > 0 else None,
            "wall_seconds": round(time.perf_counter() - started["at"], 3),  # since this process began training
        }
        history.add(record)
        log.info("epoch %d/%d  train loss %.4f acc %.2f%%  val loss %.4f acc %.2f%%  lr %.3g  %.1fs",
                 record["epoch"], engine.state.max_epochs, record["train_loss"], 100 * record["train_accuracy"],
                 record["val_loss"], 100 * record["val_accuracy"], record["lr"], seconds)
        if "raw_val_accuracy" in record:
            log.info("         raw weights: val loss %.4f acc %.2f%%  (%.1fs)", record["raw_val_loss"],
                     100 * record["raw_val_accuracy"], record["raw_val_seconds"])
        if not all(math.isfinite(record[k]) for k in ("train_loss", "val_loss")):
            log.warning("non-finite loss in epoch %d", record["epoch"])
        if on_record is not None:
            on_record(record)
