"""What would make a long run faster on the machine at hand, from what the project knows: a narrower model, bf16 where
the hardware computes it, a GPU. The machine is described by a small value, so that tests can describe machines they
do not have."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ignite_cifar.data.loaders import usable_cores
from ignite_cifar.training.engines import Precision, cpu_has_native_bf16

LONG_RUN_SECONDS = 2 * 3600  # below this a run is left alone: the advice is for runs one would not wait for
NARROW_WIDTH = 0.25  # the width the recipe study trained on a CPU (docs/results.md)


@dataclass(frozen=True)
class Machine:
    """Where and how a run trains: what the advice is chosen from."""

    device: str  # "cpu" or "cuda"
    cpu_bf16: bool  # the CPU computes bf16 natively (AVX512-BF16 or AMX), so --amp auto picks bf16 there
    cores: int  # that this process may run on
    width: float
    precision: str  # "fp32", "bf16" or "float16" (Precision.describe without the memory format)

    @classmethod
    def here(cls, device: torch.device, precision: Precision, width: float) -> "Machine":
        """This machine, as the run about to train on it sees it."""
        dtype = "fp32" if precision.dtype is None else str(precision.dtype).replace("torch.", "")
        return cls(device.type, cpu_has_native_bf16(), usable_cores(), width, dtype)

    def describe(self) -> str:
        if self.device == "cpu":
            return f"{self.precision} on a {self.cores}-core CPU" + (" with native bf16" if self.cpu_bf16 else "")
        return f"{self.precision} on a GPU"


def faster_options(machine: Machine, run_seconds: float) -> list[str]:
    """What would make this run faster here, best first; nothing when it takes under LONG_RUN_SECONDS."""
    if run_seconds < LONG_RUN_SECONDS:
        return []
    options = []
    if machine.width > NARROW_WIDTH:
        ratio = (machine.width / NARROW_WIDTH) ** 2  # convolution multiply-adds grow with the square of the width
        options.append(f"--width {NARROW_WIDTH:g} (about {ratio:.0f}x fewer multiply-adds)")
    if machine.precision == "fp32":
        if machine.device == "cuda":
            options.append("--amp auto (bf16 or fp16 autocast on the GPU)")
        elif machine.cpu_bf16:
            options.append("--amp auto (bf16: this CPU computes it natively)")
    if machine.device == "cpu":
        options.append("a GPU (--device cuda)")
    return options


def advice_text(machine: Machine, run_seconds: float) -> str:
    """`faster: a; b` for a long run, '' for a quick one (or where nothing known applies)."""
    options = faster_options(machine, run_seconds)
    return f"faster: {'; '.join(options)}" if options else ""
