"""Does the captured training step (--compile --compile-mode reduce-overhead) really use the lr the schedules set?

On a GPU, reduce-overhead replays the forward, backward and optimizer step as CUDA graphs, which read the lr from
the memory they read when captured. The trainer keeps each lr in a device tensor changed in place
(ignite_cifar/training/captured_step.py). This check trains the project's model three times from the same weights on the
same batches, in fp32, through the project's trainer, with a linear warmup over the first third of the steps and
then a plateau cut (lr /10) forced halfway:
- captured: the reduce-overhead step, lrs as the trainer keeps them;
- eager: the plain step with float lrs, the reference;
- frozen: the plain step whose lr never changes (what a step that baked its first lr in would do).
It passes when captured ends as close to eager as compilation's rounding allows and far from frozen: the largest
parameter difference captured-eager is below 1/20 of eager-frozen. It also times the captured and the eager step.

    python benchmarks/speed/captured_lr_check.py --json captured_lr.json            # on the GPU
    python benchmarks/speed/captured_lr_check.py --device cpu --width 0.0625 --steps 6 --no-compile   # dry, seconds
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from ignite.engine import Events
from torch import nn

from ignite_cifar.config import Config
from ignite_cifar.model.resnet import configured_model
from ignite_cifar.training.captured_step import REDUCE_OVERHEAD, LrPlacement, optimizer_step
from ignite_cifar.training.engines import Precision, create_trainer
from ignite_cifar.training.optimizer import build_optimizer
from ignite_cifar.training.schedules import Plateau, PlateauScheduler, attach_warmup, current_lr

PASS_RATIO = 20.0  # eager-frozen must be this many times captured-eager


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=60, help="training steps of each arm (warmup: the first third)")
    p.add_argument("--optimizer", default=Config.optimizer, choices=("sgd", "adam", "adamw"))
    p.add_argument("--no-compile", action="store_true", help="dry run: the captured arm runs eagerly too")
    p.add_argument("--json", default=None, help="write the result here")
    return p.parse_args(argv)


class Arm:
    """One training of the model on the fixed batches: its step kind and its lr schedule."""

    def __init__(self, name: str, template: nn.Module, config: Config, device: torch.device, captured: bool,
                 scheduled: bool):
        self.name, self.device, self.captured, self.scheduled = name, device, captured, scheduled
        self.model = copy.deepcopy(template)
        step_model = torch.compile(self.model, mode=REDUCE_OVERHEAD, dynamic=False) if captured else self.model
        self.optimizer = build_optimizer(config, self.model)
        self.placement = LrPlacement(self.optimizer, device, captured)
        self.trainer = create_trainer(step_model, self.optimizer, nn.CrossEntropyLoss(), device, Precision(),
                                      optimizer_step(self.optimizer, captured), captured)
        self.lrs: list[float] = []
        self.seconds = 0.0

    def run(self, batches: list, config: Config) -> None:
        trainer, optimizer = self.trainer, self.optimizer
        steps = len(batches)
        if self.scheduled:
            plateau = PlateauScheduler(optimizer, Plateau(patience=0))
            attach_warmup(trainer, optimizer, config.lr, 1, steps // 3, plateau)  # the cut below steps it directly
            trainer.add_event_handler(Events.ITERATION_COMPLETED(once=steps // 2), lambda _: self.cut(plateau))
        self.placement.attach(trainer)
        trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: self.lrs.append(current_lr(optimizer)))
        sync(self.device)
        start = time.perf_counter()
        trainer.run(batches, max_epochs=1)
        sync(self.device)
        self.seconds = time.perf_counter() - start

    @staticmethod
    def cut(plateau: PlateauScheduler) -> None:
        """Two evaluations without improvement at patience 0: one lr cut, as the evaluator would cause."""
        plateau.scheduler.step(1.0)
        plateau.scheduler.step(2.0)

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().double().flatten() for p in self.model.parameters()])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check(args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    config = dataclasses.replace(Config(), width=args.width, optimizer=args.optimizer,
                                 **({} if args.optimizer != "sgd" else {"lr": 0.01, "momentum": 0.9}))
    torch.manual_seed(0)
    template = configured_model(config, 10).to(device)
    batches = [(torch.randn(args.batch_size, 3, 32, 32, device=device),
                torch.randint(0, 10, (args.batch_size,), device=device)) for _ in range(args.steps)]
    arms = [Arm("captured", template, config, device, captured=not args.no_compile, scheduled=True),
            Arm("eager", template, config, device, captured=False, scheduled=True),
            Arm("frozen", template, config, device, captured=False, scheduled=False)]
    for arm in arms:
        arm.run(batches, config)
    captured, eager, frozen = (arm.flat() for arm in arms)
    off, control = float((captured - eager).abs().max()), float((eager - frozen).abs().max())
    return {"device": str(device), "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
            "compiled": not args.no_compile, "width": args.width, "batch_size": args.batch_size, "steps": args.steps,
            "optimizer": args.optimizer, "lrs": {arm.name: arm.lrs for arm in arms},
            "max_diff_captured_eager": off, "max_diff_eager_frozen": control,
            "passed": off * PASS_RATIO < control and arms[0].lrs == arms[1].lrs,
            "wall_s": {arm.name: round(arm.seconds, 3) for arm in arms}}  # captured: with compiling


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = check(args)
    print(f"captured step on {result['device']} ({'compiled' if result['compiled'] else 'dry: eager'}): "
          f"max |captured - eager| {result['max_diff_captured_eager']:.2e}, max |eager - frozen lr| "
          f"{result['max_diff_eager_frozen']:.2e}: {'PASS' if result['passed'] else 'FAIL'}; lr "
          f"{result['lrs']['eager'][0]:.3g} -> {max(result['lrs']['eager']):.3g} -> {result['lrs']['eager'][-1]:.3g}; "
          f"wall s (captured: with compiling) {result['wall_s']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
