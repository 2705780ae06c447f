"""Run-folder files: atomic writes, checkpoints loaded as data (never as code), new folders checked and named."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ignite_cifar.errors import CheckpointError, ConfigError, DamagedCheckpointError, MachineError

# A run folder: config.yaml (with a `derived` section: what the run computed, not what the user set),
# history.json, checkpoints/, figures, tb/.
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"
DERIVED = "derived"
CHECKPOINT_DIR = "checkpoints"
LAST_PREFIX = "last"
_UMASK = os.umask(0)
os.umask(_UMASK)
BEST_PREFIX = "best"

if TYPE_CHECKING:
    import torch


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it over `path`.

    A crash mid-write leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise MachineError(f"cannot write {path}: {write_failure_cause(path.parent, exc)}") from exc
        raise


def write_failure_cause(folder: Path, exc: BaseException) -> str:
    """Why a write into `folder` failed, in words: the OS's reason, or (torch's zip writer reports only that its
    position is off) what the folder and the process limits say."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if not Path(folder).is_dir():
        return f"{folder} no longer exists"
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            return f"the process may write files of at most {limit} bytes (ulimit -f)"
    except (ImportError, ValueError, OSError):
        pass
    stats = os.statvfs(folder)
    if stats.f_bavail * stats.f_frsize < 64 * 2**20:
        return "the disk is (nearly) full"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def write_text(path: str | os.PathLike, text: str) -> None:
    def _write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)
    atomic_write(path, _write)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def _write(tmp: str) -> None:
        Path(tmp).write_bytes(data)

    atomic_write(path, _write)


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def save_figure(fig, path: str | os.PathLike, **kwargs) -> None:
    ext = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=ext, **kwargs))


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The epoch records of a run's history.json ([] when there is none); a damaged file is refused in one line that
    says what to do, before anything of the run is touched."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text()).get("epochs")
        if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("epoch"), int)
                                                     for r in records):
            raise ValueError("its 'epochs' is not a list of records with an integer 'epoch'")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        reason = "not a JSON object" if isinstance(exc, AttributeError) else str(exc).splitlines()[0][:120]
        raise CheckpointError(f"{path} is damaged ({reason}); move it aside (e.g. to {path.name}.damaged) to resume "
                              "without the earlier epochs' records: the checkpoint holds everything training needs"
                              ) from None
    return records


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint as a dict of tensors and plain values; anything else is refused, and nothing in it runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours, or cut short
        raise DamagedCheckpointError(f"{path} is not a PyTorch checkpoint (not a torch.save archive)")
    import torch  # here, not at the top: the scripts that only read a run folder's state stay torch-free

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path} is not a safe checkpoint: it holds objects other than tensors and plain "
                              f"values{what}, so it was not loaded and nothing in it ran") from None
    except Exception as exc:  # torch.load raises many kinds on a damaged archive
        raise DamagedCheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a checkpoint of this project "
                              f"(found {type(data).__name__}, expected a dict)")
    return data


def model_state(checkpoint: dict[str, Any], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights a run evaluates, from a full training checkpoint (its weight average when it kept one, else its
    model) or from a model-only one."""
    import torch

    state = checkpoint.get("ema_model", checkpoint.get("model", checkpoint))
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no model weights (expected a 'model' entry of tensors)")
    return state


def load_model_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load weights, or say which names and shapes differ (another architecture, width or class count)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape(s) differ, e.g. {'; '.join(shapes[:2])}")
        if missing:
            parts.append(f"{len(missing)} weight(s) missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weight(s), e.g. {unexpected[0]}")
        raise CheckpointError(f"{path} does not fit this model (another architecture, width or class count?): "
                              + "; ".join(parts))
    model.load_state_dict(state)


def _step(path: Path) -> int:
    match = re.search(r"_(\d+)(?:_[^/]*)?\.pt$", path.name)
    return int(match.group(1)) if match else -1


def find_checkpoints(run_dir: str | os.PathLike, prefix: str = LAST_PREFIX) -> list[Path]:
    """The `prefix_*.pt` files in a run's checkpoints folder, newest (highest step) first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    return sorted(folder.glob(f"{prefix}_*.pt"), key=_step, reverse=True) if folder.is_dir() else []


def find_checkpoint(run_dir: str | os.PathLike, prefix: str = LAST_PREFIX) -> Path | None:
    """The newest `prefix_*.pt` in a run's checkpoints folder (highest step), or None."""
    found = find_checkpoints(run_dir, prefix)
    return found[0] if found else None


def run_finished(run_dir: str | os.PathLike) -> bool:
    """Whether a run's completion step is done: its history.json holds the final test evaluation, which the
    completion handler writes last, after every figure and file."""
    try:
        return "final_test" in json.loads((Path(run_dir) / HISTORY_FILE).read_text())
    except (OSError, ValueError, TypeError):
        return False


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (RUN/checkpoints/x.pt -> RUN; a loose file -> its folder)."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent


def check_run_folder(run_dir: Path, flag: str) -> None:
    """Refuse a folder without the config.yaml every run folder of this project has (`flag` names the option)."""
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        raise CheckpointError(f"{flag}: {run_dir} has no {CONFIG_FILE}; is it a run folder of ignite-cifar?")


def check_writable(folder: Path) -> None:
    """Refuse (one line) an output folder that cannot be created or written into, before anything runs."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot write into {folder} ({exc.strerror}); "
                          "choose another --output-dir") from None


def timestamped(out: Path, prefix: str = "") -> Path:
    """A new folder name under `out`: prefix + the time, with -1, -2, ... when that exists already."""
    stamp = prefix + dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, k = out / stamp, 1
    while run_dir.exists():
        run_dir, k = out / f"{stamp}-{k}", k + 1
    return run_dir
