"""What a run's numbers depend on besides its config (the machine, library versions, threads, precision: its setup),
recorded in config.yaml's `derived` section for each start of a run. The same seed repeats a CPU run to the digit on
one machine type and thread count, but not across CPUs whose convolution kernels differ (docs/results.md), so a run
that disagrees with another, or one resumed on another machine, can be traced."""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path
from typing import Any

import torch

# the modules whose code touches a run's numbers: the network and its kernels, the loop, the augmentation
LIBRARIES = ("torch", "torchvision", "ignite", "albumentations", "cv2", "numpy")


def library_versions() -> dict[str, str]:
    """Python and each library's own `__version__` (torch's names its build, e.g. 2.14.1+cu130); "not installed"
    where the module is absent."""
    versions = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            versions[name] = str(getattr(importlib.import_module(name), "__version__", "unknown"))
        except ImportError:
            versions[name] = "not installed"
    return versions


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, with its family and model numbers where Linux gives them (VMs often name only the
    vendor: "AMD EPYC"), else what the platform module says."""
    try:
        fields = dict(_cpuinfo_fields(cpuinfo.read_text()))
    except OSError:
        return platform.processor() or platform.machine() or "unknown"
    name = fields.get("model name", platform.processor() or "unknown")
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def _cpuinfo_fields(text: str):
    """The `key: value` pairs of the first processor's block."""
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            yield key.strip(), value.strip()


def cpu_kernels() -> str:
    """The instruction set torch's own CPU kernels dispatch to (AVX2, AVX512, ...); "unknown" on a torch without
    the query."""
    query = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return query() if query else "unknown"


def cpu_bf16() -> str | None:
    """The CPU's bf16 instructions (AVX512-BF16, AMX-BF16), which decide the path of bf16 convolutions: a run
    without them, or with AMX, takes another path for the same seed. None on a torch that cannot tell."""
    query = getattr(torch.cpu, "get_capabilities", None)
    if query is None:
        return None
    present = [name for name in ("avx512_bf16", "amx_bf16") if query().get(name)]
    return ", ".join(present) or "none"


def machine() -> dict[str, str]:
    """The CPU, its kernel instruction set and bf16 instructions, and the GPU if one is seen."""
    described = {"cpu": cpu_name(), "cpu_kernels": cpu_kernels()}
    bf16 = cpu_bf16()
    if bf16 is not None:
        described["cpu_bf16"] = bf16
    if torch.cuda.is_available():
        described["gpu"] = torch.cuda.get_device_name(0)
    return described


# the derived fields a run's numbers depend on beyond its config
SETUP_KEYS = ("machine", "versions", "torch_threads", "precision")


def setup_of(derived: dict[str, Any]) -> dict[str, Any]:
    """The part of a start's derived section that decides its numbers: machine, versions, threads, precision."""
    return {key: derived[key] for key in SETUP_KEYS if key in derived}


def setup_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two starts' setups, one `name: old -> new` each; a field the earlier start did not
    record (runs before 2026-12-04 recorded no machine) counts as unknown, not as a change."""
    changes = []
    for key in SETUP_KEYS:
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += [f"{key}.{name}: {old[name]} -> {new.get(name, 'absent')}" for name in old
                        if old[name] != new.get(name, "absent")]
        elif old is not None and new is not None and old != new:
            changes.append(f"{key}: {old} -> {new}")
    return changes


def starts_record(saved_derived: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier starts of a resumed run, oldest first, each with the epoch it began after and its setup, so a
    run trained on several machines says so (config.yaml's `earlier_starts`)."""
    earlier = list(saved_derived.get("earlier_starts", []))
    if saved_derived:
        earlier.append({"started_after_epoch": saved_derived.get("started_after_epoch", "unknown"),
                        **setup_of(saved_derived)})
    return earlier


def resumed_elsewhere(saved_derived: dict[str, Any], derived: dict[str, Any]) -> str | None:
    """A line for a run resumed on another setup than its last start (None when nothing recorded differs): from
    there it will not repeat an uninterrupted run to the digit, and the user should know before comparing."""
    changes = setup_changes(setup_of(saved_derived), setup_of(derived))
    if not changes:
        return None
    return ("resuming on another setup than the run's last start (" + "; ".join(changes) + "): from here it will "
            "not repeat an uninterrupted run to the digit; config.yaml keeps each start's setup (earlier_starts)")
