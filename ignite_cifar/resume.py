"""`--resume`: find the checkpoint and run folder, read the saved config, load the checkpoint once, check it fits."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from . import files
from .config import Config, make_config, read_yaml
from .errors import CheckpointError, ConfigError
from .recipe import configured_model


def resolve_resume(resume: str) -> tuple[Path, Path]:
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


def saved_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.yaml without its derived section (the fields a user set)."""
    data = read_yaml(str(Path(run_dir) / files.CONFIG_FILE))
    data.pop(files.DERIVED, None)
    return data


def load_resume_checkpoint(ckpt: Path) -> dict[str, Any]:
    """The checkpoint as data, read from disk once however often the launcher asks (the CLI checks it before
    building the config, and the launcher again when it prepares the run)."""
    stat = Path(ckpt).stat()
    return _load_once(str(Path(ckpt).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1)
def _load_once(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    return files.load_checkpoint(path)


def config_for_resume(resume: str, overrides: dict[str, Any]) -> Config:
    """The resumed run's own config, updated by the flags given now (e.g. more --epochs)."""
    ckpt, run_dir = resolve_resume(resume)
    load_resume_checkpoint(ckpt)  # refuse a file that is not a (safe) checkpoint before anything else
    files.check_run_folder(run_dir, "resume")
    return make_config(saved_config(run_dir), overrides, {"resume": resume})


def check_resume_flags(config: Config, run_dir: Path) -> float | None:
    """The lr that replaces the checkpoint's (an --lr other than the run's), or None; refuses another optimizer."""
    saved = saved_config(run_dir)
    saved_optimizer = saved.get("optimizer", "sgd")
    if saved_optimizer != config.optimizer:
        raise ConfigError(f"optimizer: {run_dir} was trained with {saved_optimizer}; its optimizer state cannot "
                          f"continue as {config.optimizer} (leave --optimizer out to resume it)")
    return config.lr if float(saved.get("lr", config.lr)) != config.lr else None


def check_checkpoint_fits(config: Config, num_classes: int, ckpt: Path) -> dict[str, Any]:
    """Load a checkpoint as data and check that it is a resumable one that fits this model."""
    state = load_resume_checkpoint(ckpt)
    missing = [k for k in ("model", "optimizer", "trainer", "scheduler") if k not in state]
    if missing:
        raise CheckpointError(f"{ckpt} cannot be resumed from: it lacks {', '.join(missing)} "
                              f"(use a {files.LAST_PREFIX}_*.pt checkpoint)")
    files.load_model_weights(configured_model(config, num_classes), files.model_state(state, ckpt), ckpt)
    done = int(state["trainer"].get("iteration", 0)) // max(1, int(state["trainer"].get("epoch_length") or 1))
    if done >= config.epochs:
        raise ConfigError(f"epochs: the checkpoint has finished {done} epochs already; "
                          f"pass --epochs larger than {done} to train further")
    return state
