"""`train --estimate`: what the configured run would take here, measured before committing to it.

The same data, dataflow, model, optimizer, precision and training step as the run (process.py's and trainer.py's
builders), in as many processes as the run would have; the step runs until the first estimate's window is measured
(estimate.Window), then an evaluation batch is timed. Nothing is written: no run folder, not even --output-dir.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import ignite.distributed as idist
from ignite.engine import Engine, Events
from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException

from ignite_cifar.config import Config
from ignite_cifar.data.datasets import DataSplits, channel_stats, load_data
from ignite_cifar.data.loaders import build_dataflow, shut_down_workers
from ignite_cifar.errors import MachineError, TrainingStopped
from ignite_cifar.training import engines
from ignite_cifar.training.advice import Machine
from ignite_cifar.training.captured_step import LrPlacement
from ignite_cifar.training.estimate import Estimate, Pace, RunEstimator, Window, device_sync, whole_run
from ignite_cifar.training.handlers import attach_epoch_seeding
from ignite_cifar.training.launch import process_group_backend, spawned_processes
from ignite_cifar.training.optimizer import training_criterion
from ignite_cifar.training.process import (
    build_model_and_optimizer,
    check_device,
    check_layer,
    quiet_library_loggers,
    resolve_precision,
    setup_process,
)
from ignite_cifar.training.resume import ResumePlan, check_fits, plan_resume
from ignite_cifar.training.trainer import build_evaluators

log = logging.getLogger("ignite_cifar")


@dataclass
class EstimatePlan:
    """What every estimating process is given: the run's config and data, and where a resumed run starts."""

    config: Config
    data: DataSplits
    mean: Any
    std: Any
    iterations_done: int  # where a resumed run goes on (mid-epoch after a stop); 0 for a new run


def estimate_run(config: Config, resume: ResumePlan | None = None) -> Estimate | None:
    """Measure the configured run's step and evaluation here, log the whole-run estimate (with the advice for a long
    run) and return it (None in spawned processes, whose rank 0 logs it). Writes nothing."""
    quiet_library_loggers()
    check_device(config)
    check_layer(config)  # what the run would refuse, the estimate refuses too
    if config.resume:
        resume = resume or plan_resume(config.resume, config.to_dict())
    if resume is not None and resume.completion_only:
        log.info("estimate: %s has trained all %d epochs; resuming it only writes its test evaluation, figures and "
                 "explanations (nothing was written)", resume.run_dir, config.epochs)
        return None
    data = load_data(config)
    if resume is not None:
        check_fits(resume, len(data.classes))
    mean, std = channel_stats(data.train.images)
    plan = EstimatePlan(config, data, mean, std, resume.iterations_done if resume is not None else 0)
    result: dict[str, Any] = {}
    try:
        with idist.Parallel(backend=process_group_backend(config), **spawned_processes(config)) as parallel:
            parallel.run(estimate_in_process, plan, result)
    except (ProcessExitedException, ProcessRaisedException) as exc:  # spawned: the cause is in its own output
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise MachineError(f"estimate: a training process failed ({first})") from None
    except KeyboardInterrupt:
        raise TrainingStopped("estimate interrupted; nothing was written", exit_code=130) from None
    return result.get("estimate")


def estimate_in_process(local_rank: int, plan: EstimatePlan, result: dict[str, Any]) -> None:
    """One process: build the run's training step, time it past the warm-up, time an evaluation batch; rank 0 logs
    the estimate."""
    config = plan.config
    device = setup_process(config)
    precision = resolve_precision(config, device)
    flow = build_dataflow(config, plan.data, plan.mean, plan.std, device)
    net = build_model_and_optimizer(config, len(plan.data.classes), device, precision)
    trainer = engines.create_trainer(net.train_model, net.optimizer, training_criterion(config).to(device), device,
                                     precision, net.optimizer_step, net.captured)
    _, evaluator, raw_evaluator = build_evaluators(config, net, trainer, device, precision)  # the average's update too
    attach_epoch_seeding(trainer, flow.sampler, flow.train_dataset)
    LrPlacement(net.optimizer, device, net.captured).attach(trainer)
    evaluations = 1 + (raw_evaluator is not None)
    estimator = RunEstimator(config.batch_size, len(flow.val_split), evaluations,
                             Machine.here(device, precision, config.width), report=None,
                             sync=device_sync(device)).attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, _stop_when_measured(estimator))
    try:
        trainer.run(flow.train_loader, max_epochs=config.epochs)
    finally:
        shut_down_workers(flow.train_loader)
    pace = estimator.pace or _whole_pace(estimator, trainer)
    eval_seconds = evaluations * time_evaluation(evaluator, flow.val_loader, len(flow.val_split))
    pace = Pace(pace.train_per_iteration, eval_seconds, True)
    length = trainer.state.epoch_length or 1
    basis = estimator.first.basis if estimator.first else "every step run (the run is shorter than the warm-up)"
    if idist.get_world_size() > 1:
        basis += f", in each of {idist.get_world_size()} processes"
    estimate = whole_run(pace, config.epochs, length, plan.iterations_done, config.batch_size, basis,
                         estimator.machine)
    if idist.get_rank() == 0:
        log.info(estimate.line())
        log.info("nothing was written; the run itself: the same command without --estimate")
        result["estimate"] = estimate


def _stop_when_measured(estimator: RunEstimator):
    """Stop the step once the estimate is measured, on every process at the same iteration (a process that stopped
    alone would leave the others waiting in their gradient all-reduce)."""

    def stop(engine: Engine) -> None:
        done = float(estimator.first is not None)
        if idist.get_world_size() > 1:
            done = float(idist.all_reduce(done, op="MAX"))
        if done:
            engine.terminate()

    return stop


def _whole_pace(estimator: RunEstimator, trainer: Engine) -> Pace:
    """The pace of every step run, when the whole run ended before the warm-up window did (a tiny run)."""
    seconds = estimator.clock() - estimator.began
    return Pace(seconds / max(1, trainer.state.iteration), 0.0, True)


def time_evaluation(evaluator: Engine, loader, images: int, budget: float = Window().min_seconds,
                    clock: Callable[[], float] = time.monotonic) -> float:
    """Seconds one evaluation of `images` (all processes together) takes, from one batch of `loader`, timed again
    once warm unless the first took over `budget` seconds (on a slow CPU a batch of 1000 takes half a minute, and
    the warm-up is then a small part of it)."""
    seconds, timed = _time_one_batch(evaluator, loader, clock)  # its metrics are read on the host: synchronized
    slow = seconds > budget
    if idist.get_world_size() > 1:  # every process must run the same batches: the metrics are all-reduced
        slow = bool(idist.all_reduce(float(slow), op="MAX"))
    if not slow:
        seconds, timed = _time_one_batch(evaluator, loader, clock)
    return seconds * images / idist.get_world_size() / max(1, timed)


def _time_one_batch(evaluator: Engine, loader, clock: Callable[[], float]) -> tuple[float, int]:
    """(seconds, images) of the evaluator's first batch of `loader`, loading included."""
    began = clock()
    evaluator.run(loader, epoch_length=1)
    return clock() - began, len(evaluator.state.batch[1])
