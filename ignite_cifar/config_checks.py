"""What a Config's values may be: the names a choice may take, and rules that each raise one ConfigError naming the
first field that breaks them. Config.validate (config.py) runs them all once, at the edge, so the rest of the package
can trust a Config. Torch-free, so that reading and checking a config imports no torch."""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

from ignite_cifar.errors import ConfigError
from ignite_cifar.run_folders import NAME_MAX

# Each tuple of names belongs to the module that gives them their meaning (named beside it); that module builds from
# these names, and tests/test_config.py checks that both agree.
ARCHITECTURES = ("resnet18", "resnet34")  # model/resnet.py: blocks per stage of each
NORMS = ("layer", "group")  # model/resnet.norm_factory
CAM_METHODS = ("gradcam", "gradcam++")  # explain/gradcam.py: how channels are weighted
MISTAKE_ORDERS = ("confident", "first")  # explain/mistakes.find_misclassified

AUTO = "auto"
DEVICE_AUGMENT_LACKS = ("p_shift_scale_rotate", "p_to_gray")  # CPU-pipeline extras device_augment.py lacks
AT_LEAST_ONE = ("epochs", "batch_size", "n_misclassified", "log_every", "nproc_per_node", "probe_size",
                "eval_batch_size")
ABOVE_ZERO = ("lr", "width")
NOT_NEGATIVE = ("train_subset", "test_subset", "crop_padding", "probe_every", "cutout_size", "plateau_patience",
                "warmup_epochs", "min_lr", "momentum", "weight_decay", "rotate_limit", "plateau_threshold",
                "plateau_cooldown")
BELOW_ONE = ("val_split", "label_smoothing", "ema_decay")  # in [0, 1)


def unsupported_extras(config: Any) -> list[str]:
    """The augmentations that are on in `config` and that the device path (device_augment.py) does not implement."""
    return [name for name in DEVICE_AUGMENT_LACKS if getattr(config, name) > 0]


def check_choices(config: Any) -> None:
    """Every field with a fixed set of choices holds one of them."""
    for f in fields(config):
        choices = f.metadata.get("choices")
        value = getattr(config, f.name)
        if choices and value not in choices:
            raise ConfigError(f"{f.name}: {value!r} is not allowed; choose one of {', '.join(choices)}")


def check_ranges(config: Any) -> None:
    """Counts, rates, sizes and probabilities within their ranges."""
    for name in AT_LEAST_ONE:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: must be >= 1, got {getattr(config, name)}")
    for name in ABOVE_ZERO:
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name}: must be > 0, got {getattr(config, name)}")
    if config.num_workers != AUTO and config.num_workers < 0:
        raise ConfigError(f"num_workers: must be >= 0 or auto, got {config.num_workers}")
    if config.torch_threads != AUTO and config.torch_threads < 1:
        raise ConfigError(f"torch_threads: must be >= 1 or auto, got {config.torch_threads}")
    for name in NOT_NEGATIVE:
        if getattr(config, name) < 0:
            raise ConfigError(f"{name}: must be >= 0, got {getattr(config, name)}")
    for name in BELOW_ONE:
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ConfigError(f"{name}: must be in [0, 1), got {getattr(config, name)}")
    if not 0.0 < config.plateau_factor < 1.0:
        raise ConfigError(f"plateau_factor: must be in (0, 1), got {config.plateau_factor}")
    for f in fields(config):
        if f.name.startswith("p_") and not 0.0 <= getattr(config, f.name) <= 1.0:
            raise ConfigError(f"{f.name}: a probability must be in [0, 1], got {getattr(config, f.name)}")
    if config.cutout_size > 32:
        raise ConfigError(f"cutout_size: must be <= 32 (the image side), got {config.cutout_size}")
    if round(64 * config.width) < 1:
        raise ConfigError(f"width: {config.width} leaves no channels; use at least {1 / 64:.4f}")


def check_combinations(config: Any) -> None:
    """Fields that only make sense together."""
    if config.nesterov and (config.optimizer != "sgd" or config.momentum <= 0):
        raise ConfigError("nesterov: needs --optimizer sgd with a --momentum above 0")
    lacking = unsupported_extras(config)
    if config.augment_on == "device" and lacking:
        raise ConfigError(f"augment_on: device does not implement {', '.join(lacking)}; set them to 0 or use "
                          "--augment-on cpu")
    if config.compile_mode != "default" and not config.compile:
        raise ConfigError(f"compile_mode: {config.compile_mode} needs --compile")


# names Windows keeps for devices, with any extension: a run folder so named cannot be copied to Windows
WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                              *(f"LPT{i}" for i in range(1, 10))})


def check_run_name(name: str) -> None:
    """A run name is one folder name, the run folder's inside --output-dir: not empty, no path separator, not '.' or
    '..', not absolute (each of those would put the run folder elsewhere, or nowhere), no longer than a file system
    takes, not a device name Windows reserves."""
    separators = {"/", os.sep, os.altsep} - {None}
    if not name.strip():
        raise ConfigError(f"run_name: {name!r} is empty: give a folder name, or leave --run-name out for a timestamp")
    if name in (".", "..") or any(sep in name for sep in separators) or "\0" in name or os.path.isabs(name):
        raise ConfigError(f"run_name: {name!r} is not a folder name: give one name without '/', other than '.' and "
                          "'..' (the run folder goes inside --output-dir)")
    if len(os.fsencode(name)) > NAME_MAX:
        raise ConfigError(f"run_name: {name[:40]!r}... is {len(os.fsencode(name))} bytes long; file systems take "
                          f"folder names of at most {NAME_MAX}: give a shorter --run-name")
    if name.split(".")[0].strip().upper() in WINDOWS_RESERVED:
        raise ConfigError(f"run_name: {name!r} is a device name Windows reserves, so the run folder could not be "
                          "copied there: give another --run-name")


def check_names(config: Any) -> None:
    """Names that become paths. An empty run_name is the default: a timestamped folder."""
    if config.run_name:
        check_run_name(config.run_name)
