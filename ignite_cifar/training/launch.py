"""`train(config)`: check everything a user can get wrong, then run one training per process via `idist.Parallel`.

One process, `--nproc-per-node N` spawned ones, or torchrun's: the same per-process function (trainer.py) runs in
each. Spawned processes report how they stopped through a small outcome file, which the launcher turns back into
the usual one-line error or stop; a process that dies without a word (the OOM killer's SIGKILL) is named in one line
too.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import os
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException

from ignite_cifar import files, run_folders
from ignite_cifar.config import Config, dump_yaml
from ignite_cifar.data.datasets import load_data
from ignite_cifar.errors import ConfigError, MachineError, TrainingStopped, UserError
from ignite_cifar.explain.run_result import RunResult, finished_run
from ignite_cifar.training.process import LaunchPlan, check_device, check_layer, derived_settings, quiet_library_loggers
from ignite_cifar.training.resume import ResumePlan, check_fits, kept_and_next, plan_resume, set_aside
from ignite_cifar.training.stopping import StopRequests, launcher_signals
from ignite_cifar.training.trainer import train_process


def train(config: Config, resume: ResumePlan | None = None) -> RunResult | None:
    """Train as configured; returns the run (its folder, history, test evaluation, mistakes and figures: RunResult)
    in rank 0's process, None in the others of a torchrun launch.

    Args:
        config: the run's settings.
        resume: with `config.resume`, the plan the CLI made from the flags the user gave; without it, every
            field of `config` counts as given (an --lr other than the run's replaces its lr, and so on).
    """
    quiet_library_loggers()
    spawn = spawned_processes(config)
    plan = plan_run(config, resume)
    lock = run_folders.RunLock(plan.run_dir).acquire() if claims_run_folder() else None
    try:
        if plan.resume is not None and claims_run_folder():
            set_aside(plan.resume)
        return _run(config, plan, spawn)
    finally:
        if lock is not None:
            lock.release()


def _run(config: Config, plan: LaunchPlan, spawn: dict[str, Any]) -> RunResult | None:
    result: dict[str, Any] = {}
    if not spawn:
        with idist.Parallel(backend=process_group_backend(config)) as parallel:
            parallel.run(train_in_process, plan, result)
        return finished_run(result)
    # Spawned processes cannot hand back a dict or an exception: they report how they stopped in a file.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # "Terminating process ..." on a stop
    fd, plan.outcome_file = tempfile.mkstemp(prefix="ignite-cifar-outcome-", suffix=".json")
    os.close(fd)
    try:
        with launcher_signals(), idist.Parallel(backend=process_group_backend(config), **spawn) as parallel:
            parallel.run(train_in_process, plan, result)
    except ProcessExitedException as exc:  # it died without an exception: nothing it could report
        raise _died(plan, exc) from None
    except ProcessRaisedException:
        reported = _read_outcome(plan.outcome_file)
        if reported is None:
            raise
        raise reported from None
    finally:
        os.unlink(plan.outcome_file)
    result.update(_summary_from_disk(plan))  # what rank 0 wrote
    return finished_run(result)


def train_in_process(local_rank: int, plan: LaunchPlan, result: dict[str, Any]) -> None:
    """One process's training (trainer.py), with its stop signals, outcome report and clean-up around it."""
    stops = StopRequests(idist.get_world_size(), every=10).install()  # Ctrl-C / SIGTERM: stop at a safe point
    try:
        train_process(plan, result, stops)
    except (TrainingStopped, UserError, MachineError) as exc:
        _report_outcome(plan, exc)
        raise
    finally:
        # The engines' handlers and the model refer to each other, so the (DDP-wrapped) model and the
        # communication work its reducer holds would otherwise live on past ignite's destroy_process_group
        # until interpreter shutdown, where freeing them can abort the process ("terminate called without
        # an active exception", seen on a 2-process gloo run). Free them now, while everything is alive,
        # and before the signal handlers go: a second Ctrl-C during this cleanup must not raise inside it.
        gc.collect()
        stops.restore()


# ---------------------------------------------------------------- checks before any process starts
def plan_run(config: Config, resume: ResumePlan | None = None) -> LaunchPlan:
    """Everything that can fail because of the user's input, checked before training starts; then, for a new run,
    its folder claimed (the one process that claims it writes its config.yaml first)."""
    check_device(config)
    check_layer(config)
    if config.resume:
        resume = resume or plan_resume(config.resume, config.to_dict())
        run_dir = resume.run_dir
    else:
        out = Path(config.output_dir)
        run_dir = out / (config.run_name or dt.datetime.now().strftime("%Y%m%d-%H%M%S-99"))
        run_folders.check_path_fits(run_dir)
        files.check_writable(out)
        if config.run_name and claims_run_folder() and run_dir.exists():  # early, before the data is read
            raise run_folders.taken(run_dir)
    data = load_data(config)
    if resume is not None:
        check_fits(resume, len(data.classes))
    derived = derived_settings(config, data)
    if resume is None and claims_run_folder():  # under torchrun, rank 0 claims it and tells the others
        run_dir = start_run_folder(config, derived)
    return LaunchPlan(config, data, run_dir, derived, resume)


def claims_run_folder() -> bool:
    """Whether this process claims the run folder: the launcher, or rank 0 of the processes torchrun started."""
    return "WORLD_SIZE" not in os.environ or os.environ.get("RANK", "0") == "0"


def start_run_folder(config: Config, derived: dict[str, Any]) -> Path:
    """Claim the new run's folder with its config.yaml in it, so that from the first moment `--resume` can start it
    again from its config whatever happens; when even that cannot be written, nothing is left."""
    def write_config(folder: Path) -> None:
        try:
            files.write_text(folder / files.CONFIG_FILE, dump_yaml({**config.to_dict(), files.DERIVED: derived}))
        except MachineError as exc:
            raise MachineError(f"{exc}; nothing was kept. Run the same command again once the cause is gone") from None

    return run_folders.claim(Path(config.output_dir), config.run_name or None, write_config)


def spawned_processes(config: Config) -> dict[str, Any]:
    """`idist.Parallel`'s arguments to spawn `--nproc-per-node` processes here; none for one process or under
    torchrun, which started the processes itself."""
    if config.nproc_per_node <= 1 or "WORLD_SIZE" in os.environ:
        return {}
    return {"nproc_per_node": config.nproc_per_node, "master_port": master_port()}


def process_group_backend(config: Config) -> str | None:
    """The backend `idist.Parallel` starts the processes with: none for one process, else the configured one, where
    `auto` is nccl on GPUs and gloo on CPUs."""
    if config.nproc_per_node <= 1 and "WORLD_SIZE" not in os.environ:
        return None
    if config.backend != "auto":
        return config.backend
    return "nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo"


def master_port() -> int:
    """MASTER_PORT when set, else a free port: two spawned runs on one machine must not both take ignite's 2222."""
    if os.environ.get("MASTER_PORT"):
        value = os.environ["MASTER_PORT"]
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ConfigError(f"MASTER_PORT={value!r} is not a port number (1-65535); unset it to pick a free one")
        return int(value)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- how spawned processes stopped
def _report_outcome(plan: LaunchPlan, exc: Exception) -> None:
    """A spawned process's user error or stop, for the launcher (rank 0's wins; others only fill a gap)."""
    path = Path(plan.outcome_file or "")
    if not plan.outcome_file or (idist.get_rank() != 0 and path.stat().st_size):
        return
    kind = {TrainingStopped: "stopped", MachineError: "machine"}.get(type(exc), "user")
    files.write_text(path, json.dumps({"kind": kind, "message": str(exc), "exit_code": getattr(exc, "exit_code", 2)}))


def _read_outcome(path: str) -> Exception | None:
    try:
        data = json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None
    if not data:
        return None
    if data["kind"] == "stopped":
        return TrainingStopped(data["message"], exit_code=int(data["exit_code"]))
    if data["kind"] == "machine":
        return MachineError(data["message"])
    return UserError(data["message"])


def _died(plan: LaunchPlan, exc: ProcessExitedException) -> MachineError:
    """A spawned process that died of a signal (SIGKILL: the kernel's OOM killer, say) or exited with a code and no
    exception, in one line: which one, how, and where the run goes on from. torch's join has stopped the others."""
    n = plan.config.nproc_per_node
    if exc.exit_code < 0:
        signum = -exc.exit_code
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = "an unknown signal"
        how = f"was killed by signal {signum} ({name}{', possibly out of memory' if signum == signal.SIGKILL else ''})"
    else:
        how = f"exited with code {exc.exit_code} without an error"
    return MachineError(f"training process {exc.error_index} of {n} {how}; the other{'s were' if n > 2 else ' was'} "
                        f"stopped. {kept_and_next(plan.run_dir)}")


def _summary_from_disk(plan: LaunchPlan) -> dict[str, Any]:
    history = json.loads((plan.run_dir / files.HISTORY_FILE).read_text())
    last = history["epochs"][-1] if history["epochs"] else {}
    return {"run_dir": str(plan.run_dir), "val_accuracy": last.get("val_accuracy"), "epochs": len(history["epochs"])}
