"""Small handlers attached to the trainer's and evaluator's events."""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, global_step_from_engine
from ignite.handlers.tensorboard_logger import TensorboardLogger

from ignite_cifar import files
from ignite_cifar.errors import MachineError
from ignite_cifar.training.schedules import current_lr

log = logging.getLogger("ignite_cifar")


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
            self._read(engine)

    def _read(self, engine: Engine) -> None:
        """On the host, every `every` iterations and at each epoch's last: stop if a loss was not finite."""
        first = int(self._first_bad)
        if first >= 0:
            self.iteration = first
            engine.terminate()


class CheckpointSaver(DiskSaver):
    """ignite's atomic DiskSaver, whose failed writes (torch reports a full disk as a zip writer's position error)
    become a MachineError naming the file and the cause; the temporary file is removed by DiskSaver itself.

    ignite's Checkpoint removes the file it replaces before it writes the new one: a write that then fails (a full
    disk) would leave no checkpoint at all. Here a removal waits until the new file is written. With `prefix`, every
    other `<prefix>_*.pt` goes then too: ignite knows only the files its own process wrote, so a resumed run would
    otherwise keep the checkpoint it resumed from for good."""

    def __init__(self, *args, prefix: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix = prefix
        self._superseded: list[str] = []

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        try:
            super().__call__(checkpoint, filename, metadata)
        except (OSError, RuntimeError) as exc:
            cause = files.write_failure_cause(Path(self.dirname), exc)
            raise MachineError(f"cannot write {Path(self.dirname) / filename}: {cause}") from exc
        older = [p.name for p in files.find_checkpoints(Path(self.dirname).parent, self.prefix)] if self.prefix else []
        for old in {*self._superseded, *older} - {filename}:
            if (Path(self.dirname) / old).exists():
                super().remove(old)
        self._superseded = []

    def remove(self, filename: str) -> None:
        self._superseded.append(filename)


def attach_checkpoints(trainer: Engine, val_evaluator: Engine, to_save: dict[str, Any], run_dir: Path,
                       model: torch.nn.Module) -> tuple[Checkpoint, Checkpoint]:
    """`last_checkpoint_<iteration>.pt` (everything needed to resume); `best_model_*.pt` by val accuracy.

    The `last` handler is returned unattached: attach it to EPOCH_COMPLETED after the handler that evaluates,
    so the saved scheduler state already includes that epoch's val loss.
    """
    folder = run_dir / files.CHECKPOINT_DIR
    last = Checkpoint(to_save, CheckpointSaver(str(folder), require_empty=False, atomic=True, prefix=files.LAST_PREFIX),
                      filename_prefix=files.LAST_PREFIX, n_saved=1,
                      global_step_transform=lambda engine, _: engine.state.iteration)
    best = Checkpoint({"model": model}, CheckpointSaver(str(folder), require_empty=False, atomic=True),
                      filename_prefix=files.BEST_PREFIX, n_saved=1,
                      score_function=lambda engine: float(engine.state.metrics["accuracy"]),
                      score_name="val_accuracy", global_step_transform=global_step_from_engine(trainer))
    val_evaluator.add_event_handler(Events.COMPLETED, best)
    return last, best


def quiet_writer_thread_errors() -> None:
    """When the run folder vanishes or the disk fills, TensorBoard's writer thread dies of an OSError and would print
    its own traceback above the run's one-line report of the same failure (the next checkpoint or record cannot be
    written either): such an error in a writer thread is dropped. Anything else reaches the hook as before."""
    previous = threading.excepthook
    if getattr(previous, "quiets_writer_threads", False):
        return

    def hook(args) -> None:
        if not (issubclass(args.exc_type, OSError) and "Writer" in type(args.thread).__name__):
            previous(args)

    hook.quiets_writer_threads = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def attach_tensorboard(log_dir: Path, trainer: Engine, evaluators: dict[str, Engine], optimizer: torch.optim.Optimizer,
                       log_every: int, config_text: str) -> TensorboardLogger:
    """Tags, each logged once: train/batch_loss every `log_every` iterations (step = iteration); lr/group_0 (the lr
    the epoch trains with), train/{loss,accuracy}, val/{loss,accuracy} (and raw_val/..., with a weight average) per
    epoch (step = epoch)."""
    quiet_writer_thread_errors()
    tb = TensorboardLogger(log_dir=str(log_dir))
    every = Events.ITERATION_COMPLETED(every=log_every)
    tb.attach_output_handler(trainer, event_name=every, tag="train",
                             output_transform=lambda out: {"batch_loss": out["loss"]})
    # the lr each epoch trains with, at the epoch's step, beside the per-epoch curves (the plateau acts per epoch)
    tb.attach_opt_params_handler(trainer, event_name=Events.EPOCH_STARTED, optimizer=optimizer, param_name="lr")
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
        return cls(path, [r for r in files.read_history(path) if r["epoch"] <= up_to_epoch])

    def add(self, record: dict[str, Any]) -> None:
        self.records = [r for r in self.records if r["epoch"] != record["epoch"]] + [record]
        self.write()

    def write(self) -> None:
        files.write_json(self.path, {"epochs": self.records, **self.extra})


def evaluate_all(evaluators: dict[str, Engine], loader) -> dict[str, float]:
    """Run each evaluator on `loader`, in order; {name_loss, name_accuracy, name_seconds} of each."""
    evaluated = {}
    for name, evaluator in evaluators.items():
        began = time.perf_counter()
        evaluator.run(loader)
        v = evaluator.state.metrics
        evaluated.update({f"{name}_loss": float(v["loss"]), f"{name}_accuracy": float(v["accuracy"]),
                          f"{name}_seconds": round(time.perf_counter() - began, 3)})
    return evaluated


def log_record(record: dict[str, Any], max_epochs: int, note: str = "") -> None:
    log.info("epoch %d/%d  train loss %.4f acc %.2f%%  val loss %.4f acc %.2f%%  lr %.3g  %.1fs%s",
             record["epoch"], max_epochs, record["train_loss"], 100 * record["train_accuracy"],
             record["val_loss"], 100 * record["val_accuracy"], record["lr"], record["epoch_seconds"], note)
    if "raw_val_accuracy" in record:
        log.info("         raw weights: val loss %.4f acc %.2f%%  (%.1fs)", record["raw_val_loss"],
                 100 * record["raw_val_accuracy"], record["raw_val_seconds"])
    if not all(math.isfinite(record[k]) for k in ("train_loss", "val_loss")):
        log.warning("non-finite loss in epoch %d", record["epoch"])


def attach_epoch_log(trainer: Engine, evaluators: dict[str, Engine], val_loader, optimizer: torch.optim.Optimizer,
                     history: History | None, train_size: int, batch_size: int,
                     on_record: Callable[[dict[str, Any]], None] | None = None,
                     note: Callable[[dict[str, Any]], str] | None = None) -> None:
    """After each epoch: run each evaluator on val (`val`: the evaluated model; `raw_val`, with a weight average:
    the raw weights), then record/print the epoch (`note(record)` ends its line: the run's time left). On ranks
    other than 0 `history` is None.

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
        evaluated = evaluate_all(evaluators, val_loader)
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
        log_record(record, engine.state.max_epochs, note(record) if note is not None else "")
        if on_record is not None:
            on_record(record)
