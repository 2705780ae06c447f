"""What a run's numbers depend on besides its config: the library versions and the machine, recorded in
config.yaml's `derived` section. The same seed repeats a CPU run to the digit on one machine type, but not across
machines whose CPUs take other kernel paths (docs/results.md), so a run that disagrees with another can be traced."""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

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


def machine() -> dict[str, str]:
    """The CPU, the instruction set torch's CPU kernels dispatch to (AVX2, AVX512, ...), and the GPU if one is seen."""
    described = {"cpu": cpu_name(), "cpu_kernels": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        described["gpu"] = torch.cuda.get_device_name(0)
    return described
