"""`--resume`, worked out once: where the checkpoint and run folder are, the checkpoint and the saved config read
once each, and what the flags given now change. The CLI and the launcher both use the one ResumePlan it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ignite_cifar import files
from ignite_cifar.config import Config, read_yaml, saved_run_config
from ignite_cifar.errors import CheckpointError, ConfigError
from ignite_cifar.model.resnet import configured_model

RESUMABLE_KEYS = ("model", "optimizer", "trainer", "scheduler")


@dataclass
class ResumePlan:
    """A run to continue, as read from its folder once."""

    checkpoint: Path
    run_dir: Path
    state: dict[str, Any]  # the checkpoint, loaded as data
    config: Config  # the run's saved config, updated by the flags given now
    lr_override: float | None  # --lr given now and other than the run's: it replaces the checkpoint's lr
    saved_derived: dict[str, Any]  # the derived section of the run's config.yaml as its last start wrote it

    @property
    def epochs_done(self) -> int:
        trainer = self.state["trainer"]
        return int(trainer.get("iteration", 0)) // max(1, int(trainer.get("epoch_length") or 1))


def plan_resume(resume: str, given: Mapping[str, Any]) -> ResumePlan:
    """Everything `--resume <resume>` means, with `given` the flags (field: value) the user gave now.

    Refuses, each in one line: a path that is neither a run folder nor a checkpoint, a file that is not a
    (safe) resumable checkpoint, a damaged config.yaml and another optimizer (check_fits does the rest once the
    data is known)."""
    checkpoint, run_dir = locate(resume)
    state = files.load_checkpoint(checkpoint)  # a file that is not a (safe) checkpoint is refused before anything
    missing = [k for k in RESUMABLE_KEYS if not isinstance(state.get(k), dict)]
    if missing:
        raise CheckpointError(f"{checkpoint} cannot be resumed from: it lacks {', '.join(missing)} "
                              f"(use a {files.LAST_PREFIX}_*.pt checkpoint)")
    files.check_run_folder(run_dir, "resume")
    files.read_history(run_dir / files.HISTORY_FILE)  # a damaged history is refused now, not after the run started
    saved, saved_derived = saved_config(run_dir)
    trained, config = saved_run_config(saved), saved_run_config(saved, given, {"resume": resume})
    if trained.optimizer != config.optimizer:
        raise ConfigError(f"optimizer: {run_dir} was trained with {trained.optimizer}; its optimizer state cannot "
                          f"continue as {config.optimizer} (leave --optimizer out to resume it)")
    if trained.decay_norm_bias != config.decay_norm_bias:
        raise ConfigError(f"decay_norm_bias: {run_dir} was trained with decay_norm_bias "
                          f"{trained.decay_norm_bias}; its optimizer's param groups cannot change on resume "
                          "(leave --decay-norm-bias/--no-decay-norm-bias out to resume it)")
    lr_override = config.lr if "lr" in given and trained.lr != config.lr else None
    return ResumePlan(checkpoint, run_dir, state, config, lr_override, saved_derived)


def locate(resume: str) -> tuple[Path, Path]:
    """(checkpoint file, run folder) for `--resume` given a run folder or a checkpoint file."""
    path = Path(resume)
    if path.is_dir():
        ckpt = files.find_checkpoint(path)
        if ckpt is None:
            raise CheckpointError(f"resume: {path} has no {files.CHECKPOINT_DIR}/{files.LAST_PREFIX}_*.pt "
                                  "to resume from")
        return ckpt, path
    if not path.exists():
        raise CheckpointError(f"resume: {path} does not exist; give a run folder or a checkpoint file")
    return path, files.run_dir_of(path)


def saved_config(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's config.yaml split into the fields a user set and its derived section (empty where it has none)."""
    data = read_yaml(str(Path(run_dir) / files.CONFIG_FILE))
    derived = data.pop(files.DERIVED, None)
    return data, derived if isinstance(derived, dict) else {}


def check_fits(plan: ResumePlan, num_classes: int) -> None:
    """The checkpoint's weights fit the configured model for this data, and it has epochs left to train (each
    refused in one line otherwise)."""
    model = configured_model(plan.config, num_classes)
    files.load_model_weights(model, files.model_state(plan.state, plan.checkpoint), plan.checkpoint)
    if plan.epochs_done >= plan.config.epochs:
        raise ConfigError(f"epochs: the checkpoint has finished {plan.epochs_done} epochs already; "
                          f"pass --epochs larger than {plan.epochs_done} to train further")


def private_copy(value: Any) -> Any:
    """The checkpoint's nested dicts and lists with every tensor cloned: spawned processes receive the loaded
    state through shared memory, and an optimizer keeps loaded momentum buffers as they are, so without a copy
    every process would update the same buffers."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: private_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(private_copy(v) for v in value)
    return value
