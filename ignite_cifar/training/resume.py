"""`--resume`, worked out once: where the checkpoint and run folder are, the checkpoint and the saved config read
once each, and what the flags given now change. The CLI and the launcher both use the one ResumePlan it returns.

One command carries any stopped run on, whatever stopped it: a run with a checkpoint continues from it; a run that
stopped in its first epoch (no checkpoint yet) starts again from its config.yaml; a run whose training finished but
whose completion step did not writes what is missing without training. Every failure line names this command
(`kept_and_next`); past a damaged checkpoint or history.json, with --set-aside-damaged."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ignite_cifar import files
from ignite_cifar.config import Config, read_yaml, saved_run_config
from ignite_cifar.errors import CheckpointError, ConfigError, DamagedCheckpointError, MachineError
from ignite_cifar.model.resnet import configured_model
from ignite_cifar.run_folders import RESUME_COMMAND

RESUMABLE_KEYS = ("model", "optimizer", "trainer", "scheduler")
log = logging.getLogger("ignite_cifar")


SET_ASIDE_FLAG = "--set-aside-damaged"


@dataclass
class ResumePlan:
    """A run to continue, as read from its folder once: from its newest readable checkpoint, or, where it has none
    (it stopped in its first epoch), again from the start with its saved config."""

    checkpoint: Path | None  # None: the run starts again from the start
    run_dir: Path
    state: dict[str, Any] | None  # the checkpoint, loaded as data
    config: Config  # the run's saved config, updated by the flags given now
    lr_override: float | None  # --lr given now and other than the run's: it replaces the checkpoint's lr
    saved_derived: dict[str, Any]  # the derived section of the run's config.yaml as its last start wrote it
    damaged: tuple[Path, ...] = ()  # damaged newer checkpoints and history.json, set aside when the run starts

    @property
    def iterations_done(self) -> int:
        """The checkpoint's iteration: where the run goes on (0 when it starts again from its config)."""
        return 0 if self.state is None else int(self.state["trainer"].get("iteration", 0))

    @property
    def epochs_done(self) -> int:
        if self.state is None:
            return 0
        return self.iterations_done // max(1, int(self.state["trainer"].get("epoch_length") or 1))

    @property
    def completion_only(self) -> bool:
        """Training is done but the completion step (test evaluation, figures, explanations) is not: resuming writes
        what is missing and trains nothing."""
        return (self.state is not None and self.epochs_done >= self.config.epochs and self.config.explain_at_end
                and not files.run_finished(self.run_dir))


def plan_resume(resume: str, given: Mapping[str, Any], set_aside_damaged: bool = False) -> ResumePlan:
    """Everything `--resume <resume>` means, with `given` the flags (field: value) the user gave now.

    Refuses, each in one line: a path that is neither a run folder nor a checkpoint, a file that is not a
    (safe) resumable checkpoint, a damaged config.yaml and another optimizer (check_fits does the rest once the
    data is known). A damaged newest checkpoint or history.json of a run folder is refused with the command that
    carries the run on past it; with `set_aside_damaged` (that command) they are set aside when the run starts."""
    checkpoint, run_dir, state, damaged = locate(resume, set_aside_damaged)
    if state is not None:
        missing = [k for k in RESUMABLE_KEYS if not isinstance(state.get(k), dict)]
        if missing:
            raise CheckpointError(f"{checkpoint} cannot be resumed from: it lacks {', '.join(missing)} "
                                  f"(use a {files.LAST_PREFIX}_*.pt checkpoint)")
    files.check_run_folder(run_dir, "resume")
    try:  # a damaged history is refused now, not after the run started
        files.read_history(run_dir / files.HISTORY_FILE)
    except CheckpointError as exc:
        if not set_aside_damaged:
            raise CheckpointError(f"{exc}; or set it aside and resume with: {RESUME_COMMAND} {run_dir} "
                                  f"{SET_ASIDE_FLAG}") from None
        damaged += (run_dir / files.HISTORY_FILE,)
    saved, saved_derived = saved_config(run_dir)
    trained, config = saved_run_config(saved), saved_run_config(saved, given, {"resume": resume})
    if state is not None:
        check_same_optimizer(trained, config, run_dir)
    lr_override = config.lr if "lr" in given and trained.lr != config.lr and state is not None else None
    return ResumePlan(checkpoint, run_dir, state, config, lr_override, saved_derived, damaged)


def check_same_optimizer(trained: Config, config: Config, run_dir: Path) -> None:
    """The optimizer state in the checkpoint continues only as the optimizer and param groups it was saved from."""
    if trained.optimizer != config.optimizer:
        raise ConfigError(f"optimizer: {run_dir} was trained with {trained.optimizer}; its optimizer state cannot "
                          f"continue as {config.optimizer} (leave --optimizer out to resume it)")
    if trained.decay_norm_bias != config.decay_norm_bias:
        raise ConfigError(f"decay_norm_bias: {run_dir} was trained with decay_norm_bias "
                          f"{trained.decay_norm_bias}; its optimizer's param groups cannot change on resume "
                          "(leave --decay-norm-bias/--no-decay-norm-bias out to resume it)")


def locate(resume: str, set_aside_damaged: bool = False
           ) -> tuple[Path | None, Path, dict[str, Any] | None, tuple[Path, ...]]:
    """(checkpoint file, run folder, the checkpoint loaded, damaged newer checkpoints) for `--resume` given a run
    folder or a checkpoint file. In a run folder: its newest checkpoint, or none (the checkpoint is None) when the
    run stopped before its first. A damaged newest one is refused with the command that goes on past it; with
    `set_aside_damaged`, the newest that loads, or none when none does."""
    path = Path(resume)
    if not path.is_dir():
        if not path.exists():
            raise CheckpointError(f"resume: {path} does not exist; give a run folder or a checkpoint file")
        return path, files.run_dir_of(path), files.load_checkpoint(path), ()
    damaged: list[Path] = []
    for ckpt in files.find_checkpoints(path):
        try:
            return ckpt, path, files.load_checkpoint(ckpt), tuple(damaged)
        except DamagedCheckpointError as exc:
            if not set_aside_damaged:
                raise DamagedCheckpointError(
                    f"{exc}; set it aside (renamed {ckpt.name}.damaged) and resume from the checkpoint before it, "
                    f"or from the start where there is none, with: {RESUME_COMMAND} {path} {SET_ASIDE_FLAG}"
                ) from None
            damaged.append(ckpt)
    return None, path, None, tuple(damaged)


def set_aside(plan: ResumePlan) -> None:
    """Rename the damaged files `plan_resume` passed over (checkpoints, history.json) to `<name>.damaged`: kept for
    a look, never read again."""
    for path in plan.damaged:
        try:
            path.rename(path.with_name(path.name + ".damaged"))
        except OSError as exc:
            raise MachineError(f"cannot set aside the damaged {path}: {exc.strerror}") from None
        log.warning("set aside the damaged %s as %s.damaged", path, path.name)


def kept_and_next(run_dir: Path, training_done: bool = False, options: str = "") -> str:
    """How a failed run's line ends: the checkpoint it kept, and the one command that carries it on (with `options`
    added): it resumes from that checkpoint, starts the run again from its config.yaml when it stopped in its first
    epoch, or, when training was done (`training_done`), writes only the completion step."""
    kept, command = files.find_checkpoint(run_dir), f"{RESUME_COMMAND} {run_dir}{options}"
    if kept is None:
        return f"Last good checkpoint: none (still in epoch 1). Start it again with: {command}"
    if training_done:
        return f"Training is done and saved in {kept}. Finish the run with: {command}"
    return f"Last good checkpoint: {kept}. Resume with: {command}"


def saved_config(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's config.yaml split into the fields a user set and its derived section (empty where it has none)."""
    data = read_yaml(str(Path(run_dir) / files.CONFIG_FILE))
    derived = data.pop(files.DERIVED, None)
    return data, derived if isinstance(derived, dict) else {}


def check_fits(plan: ResumePlan, num_classes: int) -> None:
    """The checkpoint's weights fit the configured model for this data, and it has epochs left to train (each
    refused in one line otherwise)."""
    if plan.state is None:
        return
    model = configured_model(plan.config, num_classes)
    files.load_model_weights(model, files.model_state(plan.state, plan.checkpoint), plan.checkpoint)
    if plan.epochs_done >= plan.config.epochs and not plan.completion_only:
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
