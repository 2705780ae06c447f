"""The one typed run configuration: defaults are the measured best recipe (configs/assignment.yaml pins the
assignment's original), validated once at the edge."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from ignite_cifar.config_checks import (
    ARCHITECTURES,
    AUTO,
    CAM_METHODS,
    MISTAKE_ORDERS,
    NORMS,
    check_choices,
    check_combinations,
    check_names,
    check_ranges,
    check_run_name,
)
from ignite_cifar.errors import ConfigError

# Choices whose meaning lives in a module (architectures, norms, CAM methods, mistake orders) come from
# config_checks.py beside their rules; the rest are defined here.
DATASETS = ("cifar10", "folder", "synthetic")
EXPLAIN_CHECKPOINTS = ("final", "best")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "gloo", "nccl")
OPTIMIZERS = ("sgd", "adam", "adamw")
PLATEAU_METRICS = ("loss", "accuracy")  # val loss is lowered, val accuracy raised
THRESHOLD_MODES = ("rel", "abs")  # torch ReduceLROnPlateau's
PLATEAU_ON = ("raw", "ema")
AUGMENT_ON = ("auto", "cpu", "device")
COMPILE_MODES = ("default", "reduce-overhead")  # torch.compile's; captured_step.py says what the second changes
SHIPPED_CONFIGS = ("assignment", "smoke")  # the defaults are the Config fields below: the one copy of the recipe
FORMER_CONFIG_NAMES = {"mission": "assignment"}  # still read, so that older commands and run folders keep working
MAX_AUTO_WORKERS = 12  # enough to feed a GPU at well over 10,000 images/s (about 5,000 each on a slow core)


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Config:
    """Every setting of a run. Field names are the CLI flags (`lr` is `--lr`)."""

    # data
    dataset: str = _f("cifar10", "cifar10 (torchvision, downloaded), folder (DIR/train, DIR/test) or synthetic",
                      DATASETS)
    data_dir: str = _f("./data", "where the data set lives (or is downloaded to)")
    train_subset: int = _f(0, "class-stratified subset of the training split (0 = all)")
    test_subset: int = _f(0, "class-stratified subset of the test split (0 = all)")
    val_split: float = _f(0.0, "fraction of train held out as val; 0 = the test split is val")
    skip_bad_images: bool = _f(False, "skip unreadable images in a folder data set instead of stopping")
    num_workers: int | str = _f("auto", "DataLoader worker processes for the node (ignite splits them among the "
                                "processes); auto = one core per process kept free, the rest as workers, at most "
                                f"{MAX_AUTO_WORKERS} per process; on a CPU device one per process")
    torch_threads: int | str = _f("auto", "intra-op threads of each training process on a CPU; auto = the cores "
                                  "each process has less the DataLoader workers it feeds from (at least 1; all of "
                                  "them on the device-augmentation path); ignored on CUDA")
    # augmentation (train only; a probability of 0 turns a transform off)
    crop_padding: int = _f(4, "pixels padded on each side before the random 32x32 crop")
    p_crop: float = _f(1.0, "probability of pad + random crop")
    rotate_limit: float = _f(5.0, "largest rotation in degrees (both directions)")
    p_rotate: float = _f(0.5, "probability of a rotation")
    cutout_size: int = _f(16, "side of the one square cut out, in pixels")
    p_cutout: float = _f(0.5, "probability of the cutout")
    p_hflip: float = _f(0.0, "probability of a horizontal flip (off in the recipe)")
    p_shift_scale_rotate: float = _f(0.0, "probability of an affine shift/scale/rotate (off in the recipe)")
    p_to_gray: float = _f(0.0, "probability of converting to gray (off in the recipe)")
    augment_on: str = _f("auto", "where the training images are augmented: cpu (albumentations in DataLoader "
                                 "workers), device (batched tensor ops on the training device, the uint8 split "
                                 "held there; lacks p_shift_scale_rotate and p_to_gray) or auto (device on CUDA, "
                                 "cpu otherwise)", AUGMENT_ON)
    # model
    model: str = _f("resnet18", "network architecture", ARCHITECTURES)
    norm: str = _f("layer", "normalization: layer = GroupNorm(1, C) over (C, H, W)", NORMS)
    width: float = _f(1.0, "channel multiplier; 1.0 = 64 base channels")
    zero_init_residual: bool = _f(False, "start each residual block's last norm weight at 0 (every block starts as "
                                         "the identity)")
    weight_standardization: bool = _f(True, "standardize each convolution kernel to mean 0 and variance 1 at every "
                                            "forward (Qiao et al. 2019); the norm layers stay as --norm says "
                                            "(--no-weight-standardization: plain convolutions, as in the assignment)")
    # optimization
    epochs: int = _f(40, "training epochs")
    batch_size: int = _f(128, "global batch size (split across processes)")
    optimizer: str = _f("adam", "sgd (with --momentum), adam (torch Adam: --weight-decay is an L2 term in its "
                                "gradient) or adamw (torch AdamW: decoupled weight decay)", OPTIMIZERS)
    lr: float = _f(1e-3, "initial learning rate")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(False, "SGD with Nesterov momentum")
    decay_norm_bias: bool = _f(True, "weight decay on norm weights and all biases too (--no-decay-norm-bias: only on "
                                     "convolution and linear weights)")
    weight_decay: float = _f(1e-4, "weight decay (L2)")
    label_smoothing: float = _f(0.0, "label smoothing of the training loss only (val loss stays plain cross-entropy)")
    warmup_epochs: int = _f(0, "linear warmup of the lr per iteration from lr/10 to lr over this many epochs; "
                               "the plateau scheduler starts after it (0 = none)")
    ema_decay: float = _f(0.999, "keep an exponential moving average of the weights, this much of the old average kept "
                               "per step (e.g. 0.999), and evaluate, checkpoint and explain it instead of the raw "
                               "weights (0 = off)")
    plateau_factor: float = _f(0.1, "ReduceLROnPlateau: multiply the lr by this when the val metric stalls")
    plateau_patience: int = _f(2, "ReduceLROnPlateau: epochs without improvement before reducing")
    plateau_metric: str = _f("loss", "ReduceLROnPlateau: the val metric it watches (loss: lower is better; accuracy: "
                                     "higher is better)", PLATEAU_METRICS)
    plateau_threshold: float = _f(1e-4, "ReduceLROnPlateau: the least change that counts as an improvement")
    plateau_threshold_mode: str = _f("rel", "ReduceLROnPlateau: the threshold relative to the best value (rel) or in "
                                            "the metric's own units (abs, e.g. 0.01 on loss, 0.002 on accuracy)",
                                     THRESHOLD_MODES)
    plateau_cooldown: int = _f(0, "ReduceLROnPlateau: epochs to wait after a cut before counting again")
    plateau_on: str = _f("ema", "with --ema-decay: the plateau scheduler steps on the raw weights' val metric (raw, "
                                "evaluated beside the average each epoch) or on the average's (ema)", PLATEAU_ON)
    min_lr: float = _f(1e-5, "ReduceLROnPlateau: lower bound of the lr")
    # runtime
    seed: int = _f(42, "seed for weights, data order, subsets and augmentation")
    device: str = _f("auto", "auto (cuda when present), cpu or cuda", DEVICES)
    amp: str = _f("auto", "mixed precision: auto (bf16 from compute capability 8.0, fp16 below, on CUDA; bf16 on a CPU "
                          "that computes it natively, else fp32), on (bf16 on any CPU), off (fp32)",
                  ("auto", "on", "off"))
    channels_last: bool = _f(False, "channels_last (NHWC) memory format for the model and its inputs; whether it "
                                    "is faster depends on the device and the width (docs/results.md)")
    compile: bool = _f(False, "torch.compile the model")
    compile_mode: str = _f("default", "with --compile: torch.compile's mode; reduce-overhead also compiles the "
                                      "optimizer step and, on a GPU, replays both as CUDA graphs (the lr lives in a "
                                      "device tensor that the schedules change in place)", COMPILE_MODES)
    eval_batch_size: int = _f(1000, "evaluation batch size (split across processes; no gradients are kept, so it "
                                    "can be larger than the training batch)")
    nproc_per_node: int = _f(1, "processes to spawn for data-parallel training")
    backend: str = _f("auto", "distributed backend: auto (nccl on GPUs, gloo on CPU), gloo, nccl", BACKENDS)
    log_every: int = _f(10, "log the training loss to TensorBoard every N iterations")
    # outputs
    output_dir: str = _f("runs", "folder that holds one sub-folder per run")
    run_name: str = _f("", "name of this run's folder (default: a timestamp)")
    resume: str = _f("", "checkpoint file or run folder to continue from")
    # explanation when training completes
    n_misclassified: int = _f(20, "misclassified test images to show (and explain)")
    mistake_order: str = _f("confident", "which mistakes: confident (highest p first) or first (dataset order)",
                            MISTAKE_ORDERS)
    gradcam_method: str = _f("gradcam", "CAM method", CAM_METHODS)
    gradcam_layer: str = _f("layer4", "module whose activations GradCAM explains")
    explain_checkpoint: str = _f("final", "model explained when training completes: final or best", EXPLAIN_CHECKPOINTS)
    explain_at_end: bool = _f(True, "when training completes, evaluate that model on the test split (final_test "
                                    "in history.json) and explain its mistakes; off: `python -m ignite_cifar "
                                    "explain --run DIR` writes them later")
    # watching GradCAM form during training (TensorBoard image probe/gradcam)
    probe_every: int = _f(5, "explain the probe images every N epochs and at the last (0 = off)")
    probe_size: int = _f(8, "probe images: a class-stratified subset of the test split, fixed by the seed")

    def validate(self) -> "Config":
        """Raise ConfigError naming the first field whose value is not allowed (config_checks.py has the rules)."""
        check_choices(self)
        check_ranges(self)
        check_combinations(self)
        check_names(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RangeTest:
    """What `lr-find` sweeps (its own flags, beside the Config): start_lr up to end_lr in num_iter exponential
    steps."""

    start_lr: float = 1e-5
    end_lr: float = 1.0
    num_iter: int = 200

    def validate(self) -> "RangeTest":
        if not self.start_lr > 0:
            raise ConfigError(f"start_lr: must be > 0, got {self.start_lr}")
        if not self.start_lr < self.end_lr:
            raise ConfigError(f"start_lr: must be below end_lr ({self.end_lr}), got {self.start_lr}")
        if self.num_iter < 3:
            raise ConfigError(f"num_iter: must be >= 3 (a suggestion needs three losses), got {self.num_iter}")
        return self


_TYPES = {f.name: typing.get_type_hints(Config)[f.name] for f in fields(Config)}
_CHOICES = {f.name: f.metadata.get("choices") for f in fields(Config)}


def field_names() -> list[str]:
    return [f.name for f in fields(Config)]


def coerce(name: str, value: Any) -> Any:
    """Convert a YAML or CLI value to the field's type, or raise ConfigError naming the field."""
    if name not in _TYPES:
        raise ConfigError(f"unknown field {name!r}; known fields: {', '.join(field_names())}")
    kind = _TYPES[name]
    if kind == (int | str):  # a count, or "auto"
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        kind = int
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if value is None:
        return ""
    choices = _CHOICES.get(name) or ()
    if isinstance(value, bool) and "on" in choices and "off" in choices:
        return "on" if value else "off"  # YAML 1.1 reads a bare on/off as a bool
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return str(value)


def shipped_config_path(name: str) -> Path:
    return Path(str(resources.files("ignite_cifar") / "configs" / f"{name}.yaml"))


def read_yaml(path_or_name: str) -> dict[str, Any]:
    """Read a config file (a path, or the name of a shipped config) into a plain dict of fields."""
    path = Path(path_or_name)
    name = FORMER_CONFIG_NAMES.get(path_or_name, path_or_name)
    if not path.exists() and name in SHIPPED_CONFIGS:
        path = shipped_config_path(name)
    if not path.is_file():
        raise ConfigError(f"config: no such file {path_or_name!r}; give a YAML path or one of "
                          f"{', '.join(SHIPPED_CONFIGS)}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        start = exc.context_mark
        # An unclosed bracket or quote is only noticed lines later: also say where it was opened.
        opened = (f" ({exc.context} started at line {start.line + 1}, column {start.column + 1})"
                  if start and exc.context and mark and start.line != mark.line else "")
        raise ConfigError(f"config: {path} is not valid YAML{where}: {exc.problem or exc.context}{opened}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def make_config(*layers: Mapping[str, Any]) -> Config:
    """Defaults, updated by each mapping in turn (e.g. YAML file, then CLI flags), then validated."""
    values: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            values[name.replace("-", "_")] = coerce(name.replace("-", "_"), value)
    return Config(**values).validate()


def saved_run_config(saved: Mapping[str, Any], *later: Mapping[str, Any]) -> Config:
    """The config of a run read back from its config.yaml (`saved`, the fields without the derived section), then
    updated by `later` (e.g. the flags given now). A field missing from `saved` was added to ignite-cifar after the
    run was trained, and the run had the original recipe's behaviour for it, which the assignment config pins field by
    field; today's default may differ (a run saved before weight standardization existed is rebuilt without it)."""
    saved = dict(saved)
    if isinstance(saved.get("run_name"), str) and saved["run_name"]:
        try:
            check_run_name(saved["run_name"])
        except ConfigError:  # saved before run names were checked (its folder is known now): the name is history
            del saved["run_name"]
    return make_config(read_yaml("assignment"), saved, *later)


def dump_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False)
