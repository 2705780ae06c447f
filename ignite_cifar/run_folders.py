"""A run folder belongs to one run: claimed with a create that fails when it exists (never a look, then a create:
two processes can both see a name free), locked while a process writes in it, its name and path checked first.

The create is a rename of a filled staging folder: on POSIX it fails when the target exists and holds anything, and
the folder appears with its first file in it."""

from __future__ import annotations

import datetime as dt
import errno
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from ignite_cifar.errors import ConfigError, MachineError

try:  # POSIX: a lock the kernel drops when its process ends, however it ends (SIGKILL included)
    import fcntl
except ImportError:  # Windows: runs are claimed, but not locked
    fcntl = None

RESUME_COMMAND = "python -m ignite_cifar train --resume"  # what carries a run in its folder on, whatever stopped it
LOCK_FILE = ".lock"
_UMASK = os.umask(0)
os.umask(_UMASK)
NAME_MAX = 255  # bytes in one file name: Linux, macOS and Windows file systems alike
# Room for the longest path a run writes inside its folder: a best checkpoint
# (checkpoints/best_model_<epoch>_val_accuracy=<acc>.pt) or a TensorBoard events file
# (tb/events.out.tfevents.<time>.<host name, up to 64 bytes>.<pid>.<n>).
LONGEST_INSIDE = 128


def path_max(folder: Path) -> int:
    """The longest path the file system under `folder` (or its nearest existing parent) takes, in bytes."""
    existing = next((p for p in [folder, *folder.parents] if _exists(p)), Path("/"))
    try:
        return os.pathconf(existing, "PC_PATH_MAX")
    except (AttributeError, OSError, ValueError):  # Windows has no pathconf; its classic limit
        return 260


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a path too long to look at
        return False


def check_path_fits(run_dir: Path) -> None:
    """Refuse (one line) a run folder whose path leaves no room for the files a run writes inside it."""
    absolute = Path(os.path.abspath(run_dir))
    limit = path_max(absolute)
    if len(os.fsencode(absolute)) + LONGEST_INSIDE >= limit:
        raise ConfigError(f"output_dir: the run folder's path is {len(os.fsencode(absolute))} bytes long; with the "
                          f"files a run writes inside it that passes this file system's {limit}: choose a shorter "
                          "--output-dir or --run-name")


def claim(out: Path, name: str | None, fill: Callable[[Path], None]) -> Path:
    """Create this run's folder inside `out`, atomically and already holding its first files: `fill(folder)` writes
    them into a hidden staging folder, which is then renamed to `out/name`, refused in one line when that exists
    (another run has it, or had it); without a name to `out/<timestamp>`, moving on to -1, -2, ... past names
    another run claimed first. So a run folder is never seen empty, whenever its run is killed."""
    staging = _staging_folder(out)
    try:
        fill(staging)
        for folder in _candidates(out, name):
            if _rename(staging, folder):
                return folder
            if name:
                raise taken(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # still there when filling or the rename failed
    raise AssertionError("unreachable: the timestamped names never run out")


def taken(folder: Path) -> ConfigError:
    """The refusal of a --run-name whose folder exists: seen before the data is read, or lost to a run that claimed
    it in the meantime."""
    return ConfigError(f"run_name: {folder} exists already; choose another --run-name, or continue that run with "
                       f"--resume {folder}")


def _candidates(out: Path, name: str | None) -> Iterator[Path]:
    if name:
        yield out / name
        return
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    yield out / stamp
    yield from (out / f"{stamp}-{k}" for k in itertools.count(1))


def _staging_folder(out: Path) -> Path:
    try:
        staging = Path(tempfile.mkdtemp(prefix=".claiming-", dir=out))
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the run folder gets what mkdir would give it
        return staging
    except OSError as exc:
        raise MachineError(f"cannot create a run folder in {out}: {exc.strerror}; nothing was written. Run the same "
                           "command again once the cause is gone") from None


def _rename(staging: Path, folder: Path) -> bool:
    """Move the staging folder to `folder`; False when `folder` exists (and holds anything). A name or path the file
    system refuses is the user's to change (exit 2); anything else is the machine's (exit 1)."""
    try:
        os.rename(staging, folder)
        return True
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or isinstance(exc, FileExistsError):
            return False
        if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ):
            raise ConfigError(f"run_name: the file system refuses the folder name {folder.name!r} "
                              f"({exc.strerror}); choose another --run-name or --output-dir") from None
        raise MachineError(f"cannot create the run folder {folder}: {exc.strerror}; nothing was kept. Run the same "
                           "command again once the cause is gone") from None


class RunLock:
    """An exclusive lock on a run folder while one process (the launcher, or torchrun's rank 0) writes in it, so
    that a second `--resume` of a run still going is refused instead of writing into the same files. The kernel
    drops the lock when the process ends, however it ends: a killed run leaves no stale lock."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._handle: IO[str] | None = None

    def acquire(self) -> "RunLock":
        if fcntl is None:
            return self
        try:
            handle = open(self.run_dir / LOCK_FILE, "a+")
        except OSError:  # no room even for an empty file: the run fails at its first write, with its own line
            return self
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"resume: {self.run_dir} is in use by a run that is still going; wait for it "
                                  "to end (or stop it), then resume") from None
            return self  # a file system without locks (some network mounts): go on unlocked
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the lock
            self._handle = None
