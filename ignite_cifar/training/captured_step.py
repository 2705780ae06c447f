"""The training step under `--compile --compile-mode reduce-overhead`: the model's forward and backward and the
optimizer's step are compiled, and on a GPU captured in CUDA graphs and replayed with one launch each.

A captured step reads the lr from the memory it read when it was captured. So in this mode the lr of each param
group lives in one 0-dimensional tensor on the training device, changed only in place:
- torch's ReduceLROnPlateau already writes a tensor lr in place (`fill_`);
- ignite's warmup (PiecewiseLinear), a restored checkpoint and `--lr` on resume put a float (or another tensor)
  into the group: `LrPlacement.settle`, run before every iteration, copies that value into the group's own tensor
  and puts the tensor back, so the next replay uses the new lr without recapture or recompilation.
In every other mode the lrs are plain floats, as the eager optimizers expect; `settle` turns a tensor lr that a
captured run's checkpoint brought in back into a float.
"""

from __future__ import annotations

from typing import Callable

import torch
from ignite.engine import Engine, Events

REDUCE_OVERHEAD = "reduce-overhead"


def captures_step(compile_enabled: bool, compile_mode: str) -> bool:
    """Whether the optimizer step is compiled with the model and the lr must be held in tensors."""
    return compile_enabled and compile_mode == REDUCE_OVERHEAD


class LrPlacement:
    """Keeps each param group's lr where the step reads it: in the group's own device tensor for a captured step,
    else a float. Adam's and AdamW's `capturable` flag follows (on for a captured step on CUDA, where it keeps
    their step counts on the device; off elsewhere, where eager CPU Adam refuses it)."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, captured: bool):
        self.optimizer = optimizer
        self.captured = captured
        self.capturable = captured and device.type == "cuda"
        self.tensors = [torch.tensor(float(group["lr"]), dtype=torch.float32, device=device) if captured else None
                        for group in optimizer.param_groups]
        self.settle()

    def settle(self, _engine: Engine | None = None) -> None:
        for group, held in zip(self.optimizer.param_groups, self.tensors, strict=True):
            if "capturable" in group:
                group["capturable"] = self.capturable
            if held is None:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"] = float(group["lr"])
            elif group["lr"] is not held:
                held.fill_(float(group["lr"]))
                group["lr"] = held

    def attach(self, trainer: Engine) -> "LrPlacement":
        """Before every iteration of a captured step (the warmup writes a float after each one); once at the start
        otherwise (after a restored checkpoint)."""
        trainer.add_event_handler(Events.ITERATION_STARTED if self.captured else Events.STARTED, self.settle)
        return self


def optimizer_step(optimizer: torch.optim.Optimizer, captured: bool) -> Callable[[], None]:
    """What the training step calls after backward: the optimizer's own step, or that step compiled in the
    reduce-overhead mode (its lrs must then be LrPlacement's tensors, or each new lr would recompile it)."""
    if not captured:
        return optimizer.step

    @torch.compile(mode=REDUCE_OVERHEAD, fullgraph=False)
    def compiled_step() -> None:
        optimizer.step()

    return compiled_step
