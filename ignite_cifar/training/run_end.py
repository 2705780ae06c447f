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
from ignite_cifar.training.divergence import chance_level
from ignite_cifar.training.process import LaunchPlan, Network, parameter_checksum
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
        outputs.history.extra["final_test"] = {k: summary[k] for k in ("test_loss", "test_accuracy",
                                                                        "per_class_accuracy")}
        outputs.history.write()
        outputs.hparams.record_completion(summary["test_accuracy"], summary["test_loss"], engine.state.epoch)
        log.info("test accuracy (%s model): %.2f%% on %d images; %d mistakes explained in %s",
                 source, 100 * summary["test_accuracy"], summary["test_images"], len(summary["mistakes"]),
                 run_dir / "gradcam.png")
        if chance := chance_level(summary["test_accuracy"], len(data.classes), summary["test_images"]):
            log.warning("%s", chance)

    return explain


def finish(config: Config, run: Run, net: Network, outputs: Outputs, device: torch.device, run_dir: Path,
           result: dict[str, Any]) -> None:
    """After the last epoch: a stop for a NaN or blown-up loss, the replicas' agreement, and the final line."""
    if outputs.tb:
        outputs.tb.close()
    if run.loss_guard.stopped:
        raise run.loss_guard.error(run_dir, run.trainer.state.epoch)
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


def stopped(stops: StopRequests, run: Run, outputs: Outputs, run_dir: Path) -> TrainingStopped:
    """What a Ctrl-C or SIGTERM leaves: a resumable checkpoint of a safe point, and one line saying how to go on."""
    code = 143 if stops.sigterm else 130
    state = run.trainer.state
    resume = f"Resume with: python -m ignite_cifar train --resume {run_dir}"
    if stops.training_done:
        message = (f"interrupted after training finished (epoch {state.epoch}, saved in "
                   f"{files.find_checkpoint(run_dir)}), before the explanations were written. Write them with: "
                   f"python -m ignite_cifar explain --run {run_dir}")
    elif stops.forced:
        message = (f"stopped at once by a second signal at epoch {state.epoch}, iteration {state.iteration}; kept "
                   f"the last checkpoint, {files.find_checkpoint(run_dir) or 'none (still in epoch 1)'}. {resume}")
    else:
        run.last_checkpoint(run.trainer)  # a safe point (mid-epoch included): resuming continues from exactly here
        message = (f"interrupted at epoch {state.epoch}, iteration {state.iteration}; saved "
                   f"{files.find_checkpoint(run_dir)}. {resume}")
    if outputs.tb:
        outputs.tb.close()
    return TrainingStopped(message, exit_code=code)
