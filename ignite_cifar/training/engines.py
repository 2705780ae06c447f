"""Ignite trainer and evaluator engines (mixed precision where CUDA is present, channels_last when asked for)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from ignite.engine import Engine
from ignite.metrics import Accuracy, Average, Loss
from torch import nn

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 in hardware


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (elsewhere bf16 autocast is emulated and slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether this GPU computes bf16 in hardware: compute capability 8.0 (Ampere) or later. torch's
    `is_bf16_supported()` also says True on 7.x (T4, V100), where bf16 is emulated and fp16 is the fast half."""
    return torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability(device) >= (8, 0)


@dataclass
class Precision:
    """How the step runs: autocast dtype (None = full precision), GradScaler, memory format."""

    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False

    @classmethod
    def resolve(cls, amp: str, channels_last: bool, device: torch.device) -> "Precision":
        """On CUDA, amp auto/on means bf16 where the GPU computes it natively (compute capability >= 8.0), else fp16
        with a GradScaler (T4, V100: their bf16 is emulated). On a CPU, `on` means bf16 autocast (no scaler: bf16
        keeps fp32's exponent range), and so does `auto` where the CPU computes bf16 natively (AVX512-BF16 or AMX):
        there 40 epochs in bf16 ended within the seed noise of fp32 (benchmarks/speed/cpu-bf16/RESULTS.md)."""
        if device.type == "cuda":
            if amp == "off":
                return cls(channels_last=channels_last)
            if cuda_has_native_bf16(device):
                return cls(torch.bfloat16, None, channels_last)
            return cls(torch.float16, torch.amp.GradScaler("cuda"), channels_last)
        if amp == "on" or (amp == "auto" and cpu_has_native_bf16()):
            return cls(torch.bfloat16, None, channels_last)
        return cls(channels_last=channels_last)

    def describe(self) -> str:
        return f"{'fp32' if self.dtype is None else str(self.dtype).replace('torch.', '')}" + (
            ", channels_last" if self.channels_last else "")


def _prepare(batch, device: torch.device, precision: Precision):
    x, y = batch
    fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
    return (x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True))


def create_trainer(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                   device: torch.device, precision: Precision | None = None,
                   optimizer_step: Callable[[], None] | None = None, captured: bool = False) -> Engine:
    """A trainer whose output is {loss, y_pred, y} (tensors; no host sync) with epoch `loss` and `accuracy`.

    `optimizer_step` replaces `optimizer.step` (captured_step.py compiles it); with `captured`, each step first
    tells torch's CUDA graphs that a new iteration begins, so the last one's outputs may be overwritten."""
    precision = precision or Precision()
    step = optimizer_step or optimizer.step

    def train_step(engine: Engine, batch) -> dict:
        if captured:
            torch.compiler.cudagraph_mark_step_begin()
        model.train()
        x, y = _prepare(batch, device, precision)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.dtype is not None):
            y_pred = model(x)
            loss = criterion(y_pred, y)
        if precision.scaler is not None:
            precision.scaler.scale(loss).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            loss.backward()
            step()
        return {"loss": loss.detach(), "y_pred": y_pred.detach(), "y": y}

    trainer = Engine(train_step)
    Average(output_transform=lambda out: out["loss"], device=device).attach(trainer, "loss")
    Accuracy(output_transform=lambda out: (out["y_pred"], out["y"]), device=device).attach(trainer, "accuracy")
    return trainer


def create_evaluator(model: nn.Module, criterion: nn.Module, device: torch.device,
                     precision: Precision | None = None) -> Engine:
    """An evaluator with `loss` and `accuracy` metrics (the confusion matrix is the final evaluation's, explain.py)."""
    precision = precision or Precision()

    @torch.no_grad()
    def eval_step(engine: Engine, batch):
        model.eval()
        x, y = _prepare(batch, device, precision)
        with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.dtype is not None):
            y_pred = model(x)
        return y_pred.float(), y

    evaluator = Engine(eval_step)
    Loss(criterion, device=device).attach(evaluator, "loss")
    Accuracy(device=device).attach(evaluator, "accuracy")
    return evaluator
