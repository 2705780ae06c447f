"""Wires one training run: data -> loaders -> model -> engines -> handlers -> run folder.

`train(config)` validates everything a user can get wrong in the launching process, then runs `training`
in each process through `idist.Parallel` (one process, `--nproc-per-node N` spawned ones, or torchrun's).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import gc
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ignite
import ignite.distributed as idist
import torch
from ignite.contrib.handlers import ProgressBar
from ignite.engine import Events
from ignite.handlers import Checkpoint
from ignite.utils import manual_seed, setup_logger
from torch import nn
from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException
from torch.utils.data.distributed import DistributedSampler

from . import figures, files
from .augment import AugmentedDataset, build_test_transform, build_train_transform, describe, eval_dataset
from .config import Config, dump_yaml, make_config, read_yaml, resolve_num_workers
from .data import DataSplits, channel_stats, load_data
from .engines import Precision, create_evaluator, create_trainer
from .errors import CheckpointError, ConfigError, TrainingStopped, UserError
from .explain import write_explanations
from .gradcam import UnknownLayerError, resolve_layer
from .handlers import (
    History,
    NonFiniteLossGuard,
    RNGState,
    StopRequests,
    attach_checkpoints,
    attach_epoch_log,
    attach_epoch_seeding,
    attach_plateau_scheduler,
    attach_tensorboard,
    attach_warmup,
    current_lr,
)
from .probe import GradCAMProbe
from .recipe import build_optimizer, configured_model, optimizer_settings, training_criterion
from .tensorboard_views import HParamsLog, add_layout

log = logging.getLogger("ignite_cifar")

# ignite's launcher and auto_* helpers log every call at INFO; our own epoch lines say what matters.
for _name in ("auto_dataloader", "auto_model", "auto_optim"):
    setup_logger(f"ignite.distributed.auto.{_name}", level=logging.WARNING)
setup_logger("ignite.distributed.launcher.Parallel", level=logging.WARNING)

CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"
DERIVED = "derived"  # section of config.yaml that holds what the run computed, not what the user set


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process: the order depends only on seed and epoch) that can skip
    the batches an interrupted epoch already trained on, once, when a run resumes mid-epoch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


@dataclass
class Prepared:
    """What the launcher checked and resolved before any process starts training."""

    config: Config
    data: DataSplits
    run_dir: Path
    checkpoint: Path | None = None
    checkpoint_state: dict[str, Any] | None = None  # loaded (as data) and checked once, in the launcher
    derived: dict[str, Any] = field(default_factory=dict)
    lr_override: float | None = None  # --lr given with --resume, different from the run's: replaces the saved lr
    outcome_file: str | None = None  # spawned processes write how they stopped here, for the launcher


# ---------------------------------------------------------------- launcher side
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
    return path, run_dir_of(path)


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (RUN/checkpoints/x.pt -> RUN; a loose file -> its folder)."""
    return checkpoint.parent.parent if checkpoint.parent.name == files.CHECKPOINT_DIR else checkpoint.parent


def saved_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.yaml without its derived section (the fields a user set)."""
    data = read_yaml(str(Path(run_dir) / CONFIG_FILE))
    data.pop(DERIVED, None)
    return data


def config_for_resume(resume: str, overrides: dict[str, Any]) -> Config:
    """The resumed run's own config, updated by the flags given now (e.g. more --epochs)."""
    ckpt, run_dir = resolve_resume(resume)
    files.load_checkpoint(ckpt)  # refuse a file that is not a (safe) checkpoint before anything else
    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"resume: {run_dir} has no {CONFIG_FILE}; is it a run folder of ignite-cifar?")
    return make_config(saved_config(run_dir), overrides, {"resume": resume})


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot write into {folder} ({exc.strerror}); "
                          "choose another --output-dir") from None


def _check_layer(config: Config) -> None:
    probe = configured_model(config, 10, width=min(config.width, 0.125))
    try:
        resolve_layer(probe, config.gradcam_layer)
    except UnknownLayerError as exc:
        raise ConfigError(f"gradcam_layer: {exc}") from None


def check_checkpoint_fits(config: Config, num_classes: int, ckpt: Path) -> dict[str, Any]:
    """Load a checkpoint as data and check that it is a resumable one that fits this model."""
    state = files.load_checkpoint(ckpt)
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


def prepare(config: Config) -> Prepared:
    """Everything that can fail because of the user's input, checked before training starts."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA device is available; use --device cpu or auto")
    if config.backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("backend: nccl needs CUDA GPUs; use --backend gloo on CPU")
    _check_layer(config)
    checkpoint = None
    lr_override = None
    if config.resume:
        checkpoint, run_dir = resolve_resume(config.resume)
        if float(saved_config(run_dir).get("lr", config.lr)) != config.lr:
            lr_override = config.lr
        saved_optimizer = saved_config(run_dir).get("optimizer", "sgd")
        if saved_optimizer != config.optimizer:
            raise ConfigError(f"optimizer: {run_dir} was trained with {saved_optimizer}; its optimizer state cannot "
                              f"continue as {config.optimizer} (leave --optimizer out to resume it)")
    else:
        out = Path(config.output_dir)
        _check_writable(out)
        run_dir = out / config.run_name if config.run_name else None
        if run_dir is not None and run_dir.exists():
            raise ConfigError(f"run_name: {run_dir} exists already; choose another --run-name, or continue it "
                              f"with --resume {run_dir}")
    data = load_data(config)
    state = check_checkpoint_fits(config, len(data.classes), checkpoint) if checkpoint is not None else None
    mean, std = channel_stats(data.train.images)
    derived = {
        "mean": mean, "std": std, "classes": list(data.classes),
        "train_images": len(data.train), "val_images": len(data.val or data.test), "test_images": len(data.test),
        "val_source": "held-out train" if data.val is not None else "test split",
        "skipped_images": data.skipped_images,
        "train_transform": describe(build_train_transform(config, mean, std)),
        "test_transform": describe(build_test_transform(mean, std)),
        "versions": {"torch": str(torch.__version__), "ignite": str(ignite.__version__),
                     "python": sys.version.split()[0]},
    }
    if run_dir is None:  # under torchrun every process picks one; training() keeps rank 0's
        run_dir = _timestamped(Path(config.output_dir))
    return Prepared(config, data, run_dir, checkpoint, state, derived, lr_override)


def _timestamped(out: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, k = out / stamp, 1
    while run_dir.exists():
        run_dir, k = out / f"{stamp}-{k}", k + 1
    return run_dir


def _backend(config: Config) -> str | None:
    if config.nproc_per_node <= 1 and "WORLD_SIZE" not in os.environ:
        return None
    if config.backend != "auto":
        return config.backend
    return "nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo"


def train(config: Config) -> dict[str, Any]:
    """Train as configured; returns rank 0's summary (final val accuracy, run folder, ...)."""
    nproc = config.nproc_per_node if config.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ else None
    spawn = {"nproc_per_node": nproc, "master_port": _master_port()} if nproc else {}
    prepared = prepare(config)
    result: dict[str, Any] = {}
    if not nproc:
        with idist.Parallel(backend=_backend(config)) as parallel:
            parallel.run(training, prepared, result)
        return result
    # Spawned processes cannot hand back a dict or an exception: they report how they stopped in a file.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # "Terminating process ..." on a stop
    fd, prepared.outcome_file = tempfile.mkstemp(prefix="ignite-cifar-outcome-", suffix=".json")
    os.close(fd)
    try:
        with _launcher_signals(), idist.Parallel(backend=_backend(config), **spawn) as parallel:
            parallel.run(training, prepared, result)
    except (ProcessRaisedException, ProcessExitedException):
        reported = _read_outcome(prepared.outcome_file)
        if reported is None:
            raise
        raise reported from None
    finally:
        os.unlink(prepared.outcome_file)
    result.update(_summary_from_disk(prepared))  # what rank 0 wrote
    return result


@contextlib.contextmanager
def _launcher_signals():
    """While spawned processes train, the launcher leaves Ctrl-C to them (a terminal sends it to all of them)
    and passes a SIGTERM meant for it on, so they stop at a safe point and it reports how they stopped."""
    def forward(signum, frame):
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):  # it may have exited meanwhile
                os.kill(child.pid, signum)

    previous: dict[int, Any] = {}
    try:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: signals stay as they are
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _report_outcome(prepared: Prepared, exc: Exception) -> None:
    """A spawned process's user error or stop, for the launcher (rank 0's wins; others only fill a gap)."""
    path = Path(prepared.outcome_file or "")
    if not prepared.outcome_file or (idist.get_rank() != 0 and path.stat().st_size):
        return
    kind = "stopped" if isinstance(exc, TrainingStopped) else "user"
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
    return UserError(data["message"])


def _master_port() -> int:
    """MASTER_PORT when set, else a free port: two spawned runs on one machine must not both take ignite's 2222."""
    if os.environ.get("MASTER_PORT"):
        value = os.environ["MASTER_PORT"]
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ConfigError(f"MASTER_PORT={value!r} is not a port number (1-65535); unset it to pick a free one")
        return int(value)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _summary_from_disk(prepared: Prepared) -> dict[str, Any]:
    history = json.loads((prepared.run_dir / HISTORY_FILE).read_text())
    last = history["epochs"][-1] if history["epochs"] else {}
    return {"run_dir": str(prepared.run_dir), "val_accuracy": last.get("val_accuracy"),
            "epochs": len(history["epochs"])}


# ---------------------------------------------------------------- per process
def _device(config: Config) -> torch.device:
    if config.device == "cpu":
        return torch.device("cpu")
    return idist.device()


def _make_run_dir(prepared: Prepared) -> Path:
    """Every process uses rank 0's run folder (under torchrun each process prepared its own name)."""
    run_dir = prepared.run_dir
    if idist.get_world_size() > 1:
        run_dir = Path(idist.broadcast(str(run_dir), src=0, safe_mode=True))
    if idist.get_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def training(local_rank: int, prepared: Prepared, result: dict[str, Any]) -> None:
    """One process's training: the same code on 1 CPU, N CPUs with gloo or N GPUs with nccl."""
    stops = StopRequests(idist.get_world_size(), every=10).install()  # Ctrl-C / SIGTERM: stop at a safe point
    try:
        _training(prepared, result, stops)
    except (TrainingStopped, UserError) as exc:
        _report_outcome(prepared, exc)
        raise
    finally:
        # The engines' handlers and the model refer to each other, so the (DDP-wrapped) model and the
        # communication work its reducer holds would otherwise live on past ignite's destroy_process_group
        # until interpreter shutdown, where freeing them can abort the process ("terminate called without
        # an active exception", seen on a 2-process gloo run). Free them now, while everything is alive,
        # and before the signal handlers go: a second Ctrl-C during this cleanup must not raise inside it.
        gc.collect()
        stops.restore()


def _training(prepared: Prepared, result: dict[str, Any], stops: StopRequests) -> None:
    config, data = prepared.config, prepared.data
    rank, world = idist.get_rank(), idist.get_world_size()
    device = _device(config)
    if device.type == "cpu" and idist.get_nproc_per_node() > 1:
        # N processes x all cores each would oversubscribe the CPU many times over.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // idist.get_nproc_per_node()))
    manual_seed(config.seed)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # ignite logs "Engine run is terminating due to exception" for every stop; the CLI reports each in one line
    logging.getLogger("ignite.engine.engine.Engine").setLevel(logging.CRITICAL)
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    run_dir = _make_run_dir(prepared)
    mean, std = prepared.derived["mean"], prepared.derived["std"]
    precision = Precision.resolve(config.amp, config.channels_last, device)

    # data
    train_ds = AugmentedDataset(data.train.images, data.train.labels, build_train_transform(config, mean, std),
                                config.seed)
    sampler = ResumableSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    pin = device.type == "cuda"
    workers = resolve_num_workers(config.num_workers, idist.get_nproc_per_node())
    # Persistent workers: no start-up pause at every epoch (AugmentedDataset shares its epoch with them).
    train_loader = idist.auto_dataloader(train_ds, batch_size=config.batch_size, sampler=sampler,
                                         num_workers=workers, pin_memory=pin, drop_last=False,
                                         persistent_workers=workers > 0,
                                         worker_init_fn=_ignore_stop_signals if workers else None)
    val_split = data.val if data.val is not None else data.test
    val_loader = idist.auto_dataloader(eval_dataset(val_split.images, val_split.labels, mean, std),
                                       batch_size=max(config.batch_size, 256), shuffle=False, num_workers=0,
                                       pin_memory=pin)

    # model, optimizer, engines
    base_model = configured_model(config, len(data.classes))
    if precision.channels_last:
        base_model = base_model.to(memory_format=torch.channels_last)
    model = idist.auto_model(base_model)
    base_model = model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 32x32 inputs: let cuDNN pick its fastest convolutions
    # Only the training step is compiled. Evaluation stays eager: compiling it would add graphs (eval mode, its
    # own batch sizes) whose compile time outweighs what they save on 10,000 images an epoch.
    # dynamic=False: the epoch's last, smaller batch gets its own static graph instead of turning every step
    # into a dynamic-shape one.
    train_model = torch.compile(model, dynamic=False) if config.compile else model
    optimizer = idist.auto_optim(build_optimizer(config, model.parameters()))
    trainer = create_trainer(train_model, optimizer, training_criterion(config).to(device), device, precision)
    val_evaluator = create_evaluator(model, nn.CrossEntropyLoss().to(device), device, precision)

    # handlers
    attach_epoch_seeding(trainer, sampler, train_ds)
    nan_guard = NonFiniteLossGuard(every=config.log_every).attach(trainer)
    plateau = attach_plateau_scheduler(val_evaluator, optimizer, config.plateau_factor, config.plateau_patience,
                                       config.min_lr)
    to_save: dict[str, Any] = {"model": base_model, "optimizer": optimizer, "scheduler": plateau,
                               "trainer": trainer, "rng": RNGState()}
    if config.warmup_epochs:
        to_save["warmup"] = attach_warmup(trainer, optimizer, config.lr, config.warmup_epochs, len(train_loader),
                                          plateau)
    if precision.scaler is not None:
        to_save["scaler"] = precision.scaler
    last_ckpt, best_ckpt = attach_checkpoints(trainer, val_evaluator, to_save, run_dir, base_model)

    start_epoch = 0
    if prepared.checkpoint_state is not None:
        # Spawned processes received these tensors through shared memory, and the optimizer keeps loaded
        # momentum buffers as they are: without a private copy every process would update the same buffers.
        state = _private_copy(prepared.checkpoint_state)
        Checkpoint.load_objects(to_load={k: v for k, v in to_save.items() if k in state}, checkpoint=state)
        epoch_length = trainer.state.epoch_length or len(train_loader)
        start_epoch = trainer.state.iteration // epoch_length
        # A mid-epoch checkpoint (written on interrupt) resumes on the batches that epoch had not reached yet.
        sampler.skip = (trainer.state.iteration % epoch_length) * (train_loader.batch_size or 1)
        for group in optimizer.param_groups:  # as configured now, which is the saved config plus today's flags
            group.update(optimizer_settings(config))
        if prepared.lr_override is not None:
            saved_lr = current_lr(optimizer)
            for group in optimizer.param_groups:
                group["lr"] = prepared.lr_override
            log.info("lr %.3g from --lr replaces the checkpoint's %.3g", prepared.lr_override, saved_lr)

    history = None
    tb = None
    hparams_log = None
    if rank == 0:
        config_text = dump_yaml({**config.to_dict(), DERIVED: {**prepared.derived, "world_size": world,
                                                                "device": str(device),
                                                                "precision": precision.describe(),
                                                                "data_workers": workers}})
        files.write_text(run_dir / CONFIG_FILE, config_text)
        history = History.resume(run_dir / HISTORY_FILE, start_epoch)
        tb = attach_tensorboard(run_dir / "tb", trainer, val_evaluator, optimizer, config.log_every, config_text)
        hparams_log = HParamsLog(tb.writer, config)
        add_layout(tb.writer)
        if sys.stderr.isatty():  # a bar redrawn 400 times an epoch is noise in a log file
            ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {"loss": out["loss"]})
        log.info("run folder: %s | %s x%d on %s (%s) | %d train / %d val images | %s", run_dir, config.model,
                 world, device, precision.describe(), len(data.train), len(val_split),
                 f"resuming after epoch {start_epoch}" if prepared.checkpoint else "from scratch")

    def after_record(_record) -> None:
        fig = figures.curves(history.records)
        files.save_figure(fig, run_dir / "curves.png", dpi=110)
        figures.close(fig)
        hparams_log.record_epochs(history.records)

    attach_epoch_log(trainer, val_evaluator, val_loader, optimizer, history, len(data.train), config.batch_size,
                     on_record=after_record if rank == 0 else None)
    if rank == 0 and config.probe_every > 0:  # after val: the figure shows the weights the epoch's metrics saw
        GradCAMProbe(base_model, data.test, data.classes, mean, std, device, config.probe_size, config.seed,
                     config.gradcam_layer, config.gradcam_method).attach(trainer, tb.writer, config.probe_every)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, last_ckpt)  # after val: scheduler state is complete

    if rank == 0:
        @trainer.on(Events.COMPLETED)
        def explain_on_completion(engine) -> None:
            if nan_guard.iteration is not None:
                return
            model_to_explain, source = base_model, "final"
            if config.explain_checkpoint == "best":
                best = files.find_checkpoint(run_dir, files.BEST_PREFIX)
                if best is not None:
                    model_to_explain = copy.deepcopy(base_model)
                    state = files.model_state(files.load_checkpoint(best), best)
                    files.load_model_weights(model_to_explain, state, best)
                    source = f"best ({best.name})"
            summary = write_explanations(
                model_to_explain, data.test, data.classes, mean, std, run_dir, device, n=config.n_misclassified,
                order=config.mistake_order, method=config.gradcam_method, layer=config.gradcam_layer,
                tb_writer=tb.writer if tb else None, step=engine.state.epoch, source=source)
            history.extra["final_test"] = {k: summary[k] for k in ("test_loss", "test_accuracy", "per_class_accuracy")}
            history.write()
            hparams_log.record_completion(summary["test_accuracy"], summary["test_loss"], engine.state.epoch)
            log.info("test accuracy (%s model): %.2f%% on %d images; %d mistakes explained in %s",
                     source, 100 * summary["test_accuracy"], summary["test_images"], len(summary["mistakes"]),
                     run_dir / "gradcam.png")

    stops.attach(trainer)  # last: its checks run after every other handler
    try:
        trainer.run(train_loader, max_epochs=config.epochs)
    except KeyboardInterrupt:
        stops.stopping = True  # also when it came from elsewhere (a plain KeyboardInterrupt in a library call)
        raise _stopped(stops, trainer, last_ckpt, tb, run_dir) from None
    finally:
        _shut_down_workers(train_loader)
    if tb:
        tb.close()
    bad = nan_guard.iteration
    if bad is not None:
        kept = files.find_checkpoint(run_dir)
        raise TrainingStopped(f"the loss became NaN or infinite at iteration {bad} (epoch {trainer.state.epoch}); "
                              f"training stopped. Last good checkpoint: {kept or 'none (it happened in epoch 1)'}. "
                              "Try a smaller --lr.", exit_code=1)
    if world > 1:
        # DDP keeps replicas identical by construction; check it, so a broken setup cannot go unnoticed.
        checksums = idist.all_gather(parameter_checksum(base_model).to(device)).view(world, -1).cpu()
        if rank == 0:
            history.extra["distributed"] = {"world_size": world, "backend": idist.backend(),
                                            "replica_checksums": checksums.tolist()}
            history.write()
            if not torch.equal(checksums, checksums[:1].expand_as(checksums)):
                log.warning("model replicas differ across processes: %s", checksums.tolist())
    if rank == 0:
        final = history.records[-1] if history.records else {}
        result.update({"run_dir": str(run_dir), "val_accuracy": final.get("val_accuracy"),
                       "epochs": len(history.records)})
        print(f"final val accuracy: {100 * final.get('val_accuracy', float('nan')):.2f}%  run folder: {run_dir}",
              flush=True)


def _private_copy(value: Any) -> Any:
    """The checkpoint's nested dicts and lists with every tensor cloned."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _private_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_private_copy(v) for v in value)
    return value


def _shut_down_workers(loader) -> None:
    """End a loader's persistent workers now. Left to interpreter exit, multiprocessing would stop them with a
    SIGTERM, which they ignore (see _ignore_stop_signals), and wait for them forever."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C and SIGTERM to the main process, which stops at a safe point and shuts
    them down; a worker that died of the signal first would make that last iteration fail."""
    for name in StopRequests.SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def _stopped(stops: StopRequests, trainer, last_ckpt, tb, run_dir: Path) -> TrainingStopped:
    """What a Ctrl-C or SIGTERM leaves: a resumable checkpoint of a safe point, and one line saying how to go on."""
    code = 143 if stops.sigterm else 130
    state = trainer.state
    if stops.training_done:
        message = (f"interrupted after training finished (epoch {state.epoch}, saved in "
                   f"{files.find_checkpoint(run_dir)}), before the explanations were written. Write them with: "
                   f"python -m ignite_cifar explain --run {run_dir}")
    elif stops.forced:
        message = (f"stopped at once by a second signal at epoch {state.epoch}, iteration {state.iteration}; kept "
                   f"the last checkpoint, {files.find_checkpoint(run_dir) or 'none (still in epoch 1)'}. "
                   f"Resume with: python -m ignite_cifar train --resume {run_dir}")
    else:
        last_ckpt(trainer)  # a safe point (mid-epoch included): resuming continues from exactly here
        message = (f"interrupted at epoch {state.epoch}, iteration {state.iteration}; saved "
                   f"{files.find_checkpoint(run_dir)}. Resume with: python -m ignite_cifar train --resume {run_dir}")
    if tb:
        tb.close()
    return TrainingStopped(message, exit_code=code)


def parameter_checksum(model: nn.Module) -> torch.Tensor:
    """(sum, sum of squares, weighted sum) of all parameters in float64: equal replicas give equal triples."""
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
    return torch.stack([flat.sum(), (flat * flat).sum(), (flat * weights).sum()])


# ---------------------------------------------------------------- saved runs
def load_run(run: str | None = None, checkpoint: str | None = None, which: str = "final"):
    """(config, derived, model on CPU, checkpoint path) of a saved run, from its folder or a checkpoint in it."""
    if checkpoint:
        ckpt = Path(checkpoint)
        run_dir = run_dir_of(ckpt)
    else:
        run_dir = Path(run or "")
        if not run_dir.is_dir():
            raise UserError(f"run: {run_dir} is not a run folder")
        prefix = files.BEST_PREFIX if which == "best" else files.LAST_PREFIX
        ckpt = files.find_checkpoint(run_dir, prefix)
        if ckpt is None:
            raise CheckpointError(f"run: {run_dir} has no {files.CHECKPOINT_DIR}/{prefix}_*.pt")
    state = files.model_state(files.load_checkpoint(ckpt), ckpt)
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"run: {run_dir} has no {CONFIG_FILE}; is it a run folder of ignite-cifar?")
    raw = read_yaml(str(run_dir / CONFIG_FILE))
    derived = raw.pop(DERIVED, None) or {}
    if not all(k in derived for k in ("classes", "mean", "std")):
        raise UserError(f"run: {run_dir / CONFIG_FILE} lacks the derived classes/mean/std a finished run writes")
    config = make_config(raw)
    model = configured_model(config, len(derived["classes"]))
    files.load_model_weights(model, state, ckpt)
    return config, derived, model, ckpt, run_dir


def _local_device(device: str) -> torch.device:
    return torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def explain_saved_run(run: str | None, checkpoint: str | None, n: int, order: str, method: str,
                      layer: str, which: str = "final", device: str = "auto") -> dict[str, Any]:
    """Regenerate a run's explanations (misclassified/gradcam/confusion) without training."""
    config, derived, model, ckpt, run_dir = load_run(run, checkpoint, which)
    resolve_layer(model, layer)  # an unknown name is a UserError that lists the valid ones
    dev = _local_device(device)
    data = load_data(config)
    return write_explanations(model.to(dev), data.test, derived["classes"], derived["mean"], derived["std"], run_dir,
                              dev, n=n, order=order, method=method, layer=layer, source=f"{ckpt.name}")


def evaluate_saved_run(run: str | None, checkpoint: str | None, which: str = "final", device: str = "auto"):
    """Test loss, accuracy and per-class accuracy of a saved run's model."""
    from .explain import evaluate_split, evaluation_summary

    config, derived, model, ckpt, _ = load_run(run, checkpoint, which)
    dev = _local_device(device)
    data = load_data(config)
    summary = evaluation_summary(evaluate_split(model.to(dev), data.test, derived["mean"], derived["std"], dev),
                                 derived["classes"])
    summary["checkpoint"] = str(ckpt)
    return summary
