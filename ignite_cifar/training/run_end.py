"""How a training process ends: when training completes, the test evaluation and the explanations of the final (or
best) model; after the last epoch, a stop for a blown-up loss, the replicas' agreement and the final line; after a
Ctrl-C or SIGTERM, a resumable checkpoint and one line saying how to go on. trainer.py attaches and calls these."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine

from ignite_cifar import files
from ignite_cifar.config import Config
from ignite_cifar.errors import TrainingStopped
from ignite_cifar.explain.explanations import write_explanations
from ignite_cifar.explain.probe import probe_indices
from ignite_cifar.explain.saved_run import load_weights
from ignite_cifar.explain.settings import Destination, ExplainSettings
from ignite_cifar.run_folders import RESUME_COMMAND
from ignite_cifar.training.divergence import chance_level
from ignite_cifar.training.process import LaunchPlan, Network, parameter_checksum
from ignite_cifar.training.resume import kept_and_next
from ignite_cifar.training.run_state import Outputs, Run
from ignite_cifar.training.stopping import StopRequests

log = logging.getLogger("ignite_cifar")


def explanations_skipped(run_dir: Path):
    """The completion handler with --no-explain-at-end: a line saying how to write the explanations later."""

    def say_so(_engine: Engine) -> None:
        log.info("no test evaluation or explanations (--no-explain-at-end); write them with: "
                 "python -m ignite_cifar explain --run %s", run_dir)

    return say_so


def explain_on_completion(plan: LaunchPlan, run: Run, net: Network, outputs: Outputs, device: torch.device,
                           run_dir: Path):
    """The completion handler: evaluate the final (or best) model on the test split, explain its mistakes, record
    the final test in history.json and HParams, and say so, with a warning when the accuracy is at chance level."""
    config, data = plan.config, plan.data

    def explain(engine: Engine) -> None:
        if run.loss_guard.stopped:
            return
        model, source = run.evaluated_model, "final" + (" EMA" if config.ema_decay else "")
        best = files.find_checkpoint(run_dir, files.BEST_PREFIX) if config.explain_checkpoint == "best" else None
        if best is not None:
            model, source = load_weights(copy.deepcopy(run.evaluated_model), best), f"best ({best.name})"
        # the probe scored these weights' probe maps at this step already (probe/*): explain/probe/* only for
        # another model (the best checkpoint) or with the probe off, so no score is logged under two names
        logged = frozenset({"explain/probe/"}) if config.probe_every > 0 and best is None else frozenset()
        summary = write_explanations(model, plan.test_images(), ExplainSettings.of(config),
                                     Destination(run_dir, outputs.tb.writer, engine.state.epoch, logged), device,
                                     source, probe_indices(data.test.labels, config.probe_size, config.seed))
        outputs.hparams.record_completion(summary["test_accuracy"], summary["test_loss"], engine.state.epoch)
        # last: a run whose history holds its final test is finished (files.run_finished); until then --resume
        # writes the completion step again
        outputs.history.extra["final_test"] = {k: summary[k] for k in ("test_loss", "test_accuracy",
                                                                        "per_class_accuracy")}
        outputs.history.write()
        drawn = summary["files"].get("gradcam")
        log.info("test accuracy (%s model): %.2f%% on %d images; %s", source, 100 * summary["test_accuracy"],
                 summary["test_images"], f"{len(summary['mistakes'])} mistakes explained in {drawn}" if drawn
                 else "no mistakes to explain: every test image is classified correctly")
        if chance := chance_level(summary["test_accuracy"], len(data.classes), summary["test_images"]):
            log.warning("%s", chance)

    return explain


def finish(config: Config, run: Run, net: Network, outputs: Outputs, device: torch.device, run_dir: Path,
           result: dict[str, Any]) -> None:
    """After the last epoch: a stop for a NaN or blown-up loss, the replicas' agreement, and the final line."""
    close_tensorboard(outputs)
    if run.loss_guard.stopped:
        raise run.loss_guard.error(run_dir, run.trainer.state.epoch, config)
    rank, world = idist.get_rank(), idist.get_world_size()
    if world > 1:
        # DDP keeps replicas identical by construction; check it, so a broken setup cannot go unnoticed.
        checksums = idist.all_gather(parameter_checksum(net.base_model).to(device)).view(world, -1).cpu()
        if rank == 0:
            outputs.history.extra["distributed"] = {"world_size": world, "backend": idist.backend(),
                                                    "replica_checksums": checksums.tolist()}
            outputs.history.write()
            if not torch.equal(checksums, checksums[:1].expand_as(checksums)):
                log.warning("model replicas differ across processes: %s", checksums.tolist())
    if rank == 0:
        final = outputs.history.records[-1] if outputs.history.records else {}
        result.update({"run_dir": str(run_dir), "val_accuracy": final.get("val_accuracy"),
                       "epochs": len(outputs.history.records)})
        print(f"final val accuracy: {100 * final.get('val_accuracy', float('nan')):.2f}%  run folder: {run_dir}",
              flush=True)


def close_tensorboard(outputs: Outputs) -> None:
    """Close the event writer. Every file of the run is written and the completion step flushed the events, so a
    write that fails now (the disk filled this moment) costs nothing the run needs: a warning, not a failure, which
    would name a command for a run that is finished."""
    if not outputs.tb:
        return
    try:
        outputs.tb.close()
    except OSError as exc:
        log.warning("TensorBoard's event file could not be closed (%s); the run's files are complete",
                    exc.strerror or exc)


def stopped(stops: StopRequests, run: Run, outputs: Outputs, run_dir: Path) -> TrainingStopped:
    """What a Ctrl-C or SIGTERM leaves: a resumable checkpoint of a safe point, and one line saying how to go on."""
    code = 143 if stops.sigterm else 130
    state = run.trainer.state
    if stops.training_done:
        message = (f"interrupted after training finished (epoch {state.epoch}), before the test evaluation and "
                   f"explanations were written. {kept_and_next(run_dir, training_done=True)}")
    elif stops.forced:
        message = (f"stopped at once by a second signal at epoch {state.epoch}, iteration {state.iteration}. "
                   f"{kept_and_next(run_dir)}")
    else:
        run.last_checkpoint(run.trainer)  # a safe point (mid-epoch included): resuming continues from exactly here
        message = (f"interrupted at epoch {state.epoch}, iteration {state.iteration}; saved "
                   f"{files.find_checkpoint(run_dir)}. Resume with: {RESUME_COMMAND} {run_dir}")
    close_tensorboard(outputs)
    return TrainingStopped(message, exit_code=code)
