"""One process's training, in the order it happens: builders that return objects, then one run, then the end.

The same code on 1 CPU, N CPUs with gloo or N GPUs with nccl (launch.py starts it in each process).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from torch import nn

from ignite_cifar import files
from ignite_cifar.config import Config, dump_yaml
from ignite_cifar.data.loaders import Dataflow, build_dataflow, shut_down_workers
from ignite_cifar.errors import MachineError
from ignite_cifar.explain import figures
from ignite_cifar.explain.probe import GradCAMProbe
from ignite_cifar.explain.settings import ExplainSettings
from ignite_cifar.training import engines
from ignite_cifar.training.advice import Machine
from ignite_cifar.training.averaging import attach_weight_average
from ignite_cifar.training.captured_step import LrPlacement
from ignite_cifar.training.divergence import LossGuard
from ignite_cifar.training.engines import Precision
from ignite_cifar.training.environment import resumed_elsewhere, starts_record
from ignite_cifar.training.estimate import RunEstimator, device_sync
from ignite_cifar.training.handlers import (
    History,
    RNGState,
    attach_checkpoints,
    attach_epoch_log,
    attach_epoch_seeding,
    attach_tensorboard,
)
from ignite_cifar.training.optimizer import optimizer_settings, training_criterion
from ignite_cifar.training.process import (
    LaunchPlan,
    Network,
    build_model_and_optimizer,
    resolve_precision,
    setup_process,
    shared_run_dir,
)
from ignite_cifar.training.progress import attach_progress_bar
from ignite_cifar.training.resume import kept_and_next, private_copy
from ignite_cifar.training.run_end import explain_on_completion, explanations_skipped, finish, stopped
from ignite_cifar.training.run_state import Outputs, Run
from ignite_cifar.training.schedules import Plateau, attach_plateau_scheduler, attach_warmup, current_lr
from ignite_cifar.training.stopping import StopRequests
from ignite_cifar.training.tensorboard_views import HParamsLog, add_layout

log = logging.getLogger("ignite_cifar")


def train_process(plan: LaunchPlan, result: dict[str, Any], stops: StopRequests) -> None:
    """Set up, then build, restore, attach, run and finish (run_training). A write the machine refuses at any step
    ends in one line naming the checkpoint kept and the one command that carries the run on."""
    device = setup_process(plan.config)
    run_dir = shared_run_dir(plan)
    try:
        run_training(plan, result, stops, device, run_dir)
    except MachineError as exc:
        raise MachineError(f"{exc}; {stopped_where(stops)}. {kept_and_next(run_dir, stops.training_done)}") from exc
    except OSError as exc:  # a write outside files.py's own, such as TensorBoard's event writer's
        raise MachineError(f"cannot write {exc.filename or run_dir / 'tb'}: {exc.strerror or exc}; "
                           f"{stopped_where(stops)}. {kept_and_next(run_dir, stops.training_done)}") from exc


def stopped_where(stops: StopRequests) -> str:
    return "the completion step stopped" if stops.training_done else "training stopped"


def run_training(plan: LaunchPlan, result: dict[str, Any], stops: StopRequests, device: torch.device,
                 run_dir: Path) -> None:
    """Build, restore, attach, run, finish: each step one function below."""
    config = plan.config
    precision = resolve_precision(config, device)
    flow = build_dataflow(config, plan.data, plan.derived["mean"], plan.derived["std"], device)
    net = build_model_and_optimizer(config, len(plan.data.classes), device, precision)
    run = build_engines(config, net, flow, device, precision, run_dir)
    start_epoch = restore(plan, run, flow, net.optimizer)
    outputs = attach_outputs(plan, run, net, flow, device, precision, run_dir, start_epoch)
    stops.attach(run.trainer)  # last: its checks run after every other handler
    try:
        if plan.resume is not None and plan.resume.completion_only:
            complete(run.trainer, stops)
        else:
            run.trainer.run(flow.train_loader, max_epochs=config.epochs)
    except KeyboardInterrupt:
        stops.stopping = True  # also when it came from elsewhere (a plain KeyboardInterrupt in a library call)
        raise stopped(stops, run, outputs, run_dir) from None
    finally:
        shut_down_workers(flow.train_loader)
    finish(config, run, net, outputs, device, run_dir, result)


def complete(trainer: Engine, stops: StopRequests) -> None:
    """A resumed run whose training is done and whose completion step is not: that step alone, with the handlers
    the end of its last epoch would have run (the trainer's state is the restored one)."""
    stops.training_done = True
    trainer.fire_event(Events.COMPLETED)


def build_engines(config: Config, net: Network, flow: Dataflow, device: torch.device, precision: Precision,
                  run_dir: Path) -> Run:
    """Trainer and evaluator with the handlers that shape training and what a checkpoint holds."""
    trainer = engines.create_trainer(net.train_model, net.optimizer, training_criterion(config).to(device), device,
                                     precision, net.optimizer_step, net.captured)
    evaluated_model, evaluator, raw_evaluator = build_evaluators(config, net, trainer, device, precision)
    attach_epoch_seeding(trainer, flow.sampler, flow.train_dataset)
    loss_guard = LossGuard(every=config.log_every).attach(trainer)
    watched = raw_evaluator if raw_evaluator is not None and config.plateau_on == "raw" else evaluator
    plateau = attach_plateau_scheduler(watched, net.optimizer, Plateau.of(config))
    to_save: dict[str, Any] = {"model": net.base_model, "optimizer": net.optimizer, "scheduler": plateau,
                               "trainer": trainer, "rng": RNGState()}
    if config.ema_decay:
        to_save["ema_model"] = evaluated_model
    if config.warmup_epochs:
        to_save["warmup"] = attach_warmup(trainer, net.optimizer, config.lr, config.warmup_epochs,
                                          len(flow.train_loader), plateau)
    if precision.scaler is not None:
        to_save["scaler"] = precision.scaler
    LrPlacement(net.optimizer, device, net.captured).attach(trainer)  # after the warmup, which writes float lrs
    last, _best = attach_checkpoints(trainer, evaluator, to_save, run_dir, evaluated_model)
    return Run(trainer, evaluator, evaluated_model, raw_evaluator, loss_guard, to_save, last)


def build_evaluators(config: Config, net: Network, trainer: Engine, device: torch.device,
                     precision: Precision) -> tuple[nn.Module, Engine, Engine | None]:
    """(the model that is evaluated, checkpointed as best and explained; its evaluator; the raw weights' evaluator
    or None). With --ema-decay the first is the weight average, and the raw weights are evaluated beside it."""
    criterion = nn.CrossEntropyLoss().to(device)
    if not config.ema_decay:
        return net.base_model, engines.create_evaluator(net.model, criterion, device, precision), None
    average = attach_weight_average(trainer, net.model, config.ema_decay)
    return (average, engines.create_evaluator(average, criterion, device, precision),
            engines.create_evaluator(net.model, criterion, device, precision))


def restore(plan: LaunchPlan, run: Run, flow: Dataflow, optimizer: torch.optim.Optimizer) -> int:
    """Load the resumed checkpoint into everything it saved; returns the epochs already done (0 for a new run)."""
    if plan.resume is None or plan.resume.state is None:  # a new run, or one started again from its config
        return 0
    config, trainer = plan.config, run.trainer
    state = private_copy(plan.resume.state)
    Checkpoint.load_objects(to_load={k: v for k, v in run.to_save.items() if k in state}, checkpoint=state)
    if "ema_model" in run.to_save and "ema_model" not in state:  # --ema-decay given to a run without one
        run.evaluated_model.load_state_dict(run.to_save["model"].state_dict())
        log.info("the weight average starts from the resumed weights")
    epoch_length = trainer.state.epoch_length or len(flow.train_loader)
    # A mid-epoch checkpoint (written on interrupt) resumes on the batches that epoch had not reached yet.
    flow.sampler.skip = (trainer.state.iteration % epoch_length) * (flow.train_loader.batch_size or 1)
    for group in optimizer.param_groups:  # as configured now, which is the saved config plus today's flags
        group.update(optimizer_settings(config, group))
    if plan.resume.lr_override is not None:
        saved_lr = current_lr(optimizer)
        for group in optimizer.param_groups:
            group["lr"] = plan.resume.lr_override
        log.info("lr %.3g from --lr replaces the checkpoint's %.3g", plan.resume.lr_override, saved_lr)
    return trainer.state.iteration // epoch_length


def start_derived(plan: LaunchPlan, device: torch.device, precision: Precision, flow: Dataflow,
                  start_epoch: int) -> dict[str, Any]:
    """config.yaml's derived section for this start: what the launcher derived, the process's device, precision,
    threads and data path, and for a resumed run its earlier starts (with a warning when the setup changed)."""
    derived = {**plan.derived, "world_size": idist.get_world_size(), "device": str(device),
               "precision": precision.describe(), "data_workers": flow.workers,
               "torch_threads": torch.get_num_threads(), "augment_on": flow.augment_on,
               "started_after_epoch": start_epoch}
    if plan.resume:
        derived["earlier_starts"] = starts_record(plan.resume.saved_derived)
        warning = resumed_elsewhere(plan.resume.saved_derived, derived)
        if warning:
            log.warning(warning)
    return derived


def attach_outputs(plan: LaunchPlan, run: Run, net: Network, flow: Dataflow, device: torch.device,
                   precision: Precision, run_dir: Path, start_epoch: int) -> Outputs:
    """Logs, records and explanations, attached in the order they must run:

    1. TensorBoard's per-iteration and per-epoch scalars (rank 0);
    2. at each epoch's end, the val evaluation and the epoch's record (every rank evaluates; metrics are reduced);
    3. the GradCAM probe, after the evaluation, so it shows the weights the epoch's val metrics saw;
    4. the last checkpoint, after the evaluation, so the plateau scheduler's saved state includes this epoch;
    5. when training completes, the explanations of the final (or best) model (with --no-explain-at-end, a line
       saying how to write them later).
    """
    config, rank, trainer = plan.config, idist.get_rank(), run.trainer
    outputs = Outputs()
    estimator = None
    if rank == 0:
        estimator = RunEstimator(config.batch_size, len(flow.val_split), len(evaluators(run)),
                                 Machine.here(device, precision, config.width), sync=device_sync(device)
                                 ).attach(trainer)
        derived = start_derived(plan, device, precision, flow, start_epoch)
        config_text = dump_yaml({**config.to_dict(), files.DERIVED: derived})
        files.write_text(run_dir / files.CONFIG_FILE, config_text)
        outputs.history = History.resume(run_dir / files.HISTORY_FILE, start_epoch)
        outputs.tb = attach_tensorboard(run_dir / "tb", trainer, evaluators(run), net.optimizer, config.log_every,
                                        config_text)
        outputs.hparams = HParamsLog(outputs.tb.writer, config)
        add_layout(outputs.tb.writer)
        attach_progress_bar(trainer)
        log.info("run folder: %s | %s%s width %g, %d process(es) on %s (%s) | %d train / %d val images | %s%s",
                 run_dir, config.model, " (standardized convolutions)" if config.weight_standardization else "",
                 config.width, idist.get_world_size(), device, precision.describe(),
                 len(plan.data.train), len(flow.val_split),
                 how_it_starts(plan, start_epoch),
                 f" | evaluating the weight average (EMA decay {config.ema_decay})" if config.ema_decay else "")
    attach_epoch_log(trainer, evaluators(run), flow.val_loader, net.optimizer, outputs.history, len(plan.data.train),
                     config.batch_size, on_record=_after_record(outputs, run_dir) if rank == 0 else None,
                     note=estimator.epoch_note if estimator is not None else None)
    if rank == 0 and config.probe_every > 0:
        GradCAMProbe(run.evaluated_model, plan.test_images(), ExplainSettings.of(config), device,
                     config.probe_size, config.seed).attach(trainer, outputs.tb.writer, config.probe_every)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, run.last_checkpoint)
    if rank == 0:
        trainer.add_event_handler(Events.COMPLETED, explain_on_completion(plan, run, net, outputs, device, run_dir)
                                  if config.explain_at_end else explanations_skipped(run_dir))
    return outputs


def how_it_starts(plan: LaunchPlan, start_epoch: int) -> str:
    if plan.resume is None:
        return "from scratch"
    if plan.resume.state is None:
        return "starting again from its config.yaml (it stopped before its first checkpoint)"
    if plan.resume.completion_only:
        return f"training done ({start_epoch} epochs): writing the test evaluation and explanations"
    return f"resuming after epoch {start_epoch}"


def evaluators(run: Run) -> dict[str, Engine]:
    """The evaluators of each epoch by record name: `val` (the evaluated model) and, with a weight average, `raw_val`
    (the raw weights) after it."""
    return {"val": run.evaluator, **({"raw_val": run.raw_evaluator} if run.raw_evaluator is not None else {})}


def _after_record(outputs: Outputs, run_dir: Path):
    def redraw(_record) -> None:
        fig = figures.curves(outputs.history.records)
        files.save_figure(fig, run_dir / "curves.png", dpi=110)
        figures.close(fig)
        outputs.hparams.record_epochs(outputs.history.records)

    return redraw
