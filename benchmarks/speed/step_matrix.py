"""Training-step images/s across precision, memory layout, torch.compile and batch size, and the fastest choice.

Each entry trains the project's own step (`engines.create_trainer`, with its loss and accuracy metrics) on
pre-made random batches already on the device, from one shared initial model: `--warmup` untimed steps
(torch.compile compiles here; their wall time is reported as `compile_s` for compiled entries), then `--steps`
timed steps (device synchronized before and after). An entry is *correct* when its loss stays finite and its
first step's logits agree with the fp32 eager model's on the same batch (relative difference under `--tolerance`).

Eager entries run first (they cost seconds); compiled entries follow in `COMPILE_ORDER` while the time budget
allows (a compile takes tens of seconds), and an entry left out is reported as such, never estimated.

The choice: among correct entries at the recipe's batch size, the least `compile_s + epochs x images / ips`,
i.e. what a whole run would spend on steps. Written as JSON (`--json`), Markdown (`--markdown`) and, for a
shell script, the train flags of the choice (`--flags`).

Also measured for the choice (`handlers_ratio`): the step with the trainer's per-iteration handlers that could
sync the host (the NaN guard, a TensorBoard-style `float(loss)` every 10 iterations) against the bare step.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from pathlib import Path

import torch
from ignite.engine import Events
from torch import nn

from ignite_cifar.config import COMPILE_MODES, Config
from ignite_cifar.model.resnet import build_model
from ignite_cifar.training.captured_step import LrPlacement, captures_step, optimizer_step
from ignite_cifar.training.engines import Precision, create_trainer
from ignite_cifar.training.handlers import NonFiniteLossGuard

NUM_CLASSES = 10
# (bf16, channels_last, batch index) in the order compiled entries are tried; batch index 0 is the recipe's.
COMPILE_ORDER = [(True, False, 0), (True, True, 0), (True, False, 1), (False, False, 0), (True, True, 1),
                 (False, True, 0), (False, False, 1), (False, True, 1)]


def parse_args(argv=None) -> argparse.Namespace:
    cfg = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=float, default=cfg.width)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[cfg.batch_size, 512],
                   help="the first is the recipe's batch size, the one the choice is made at")
    p.add_argument("--steps", type=int, default=30, help="timed steps per entry")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    p.add_argument("--compile", choices=("on", "off", "both"), default="both")
    p.add_argument("--compile-mode", default="default",
                   choices=COMPILE_MODES,
                   help="torch.compile mode of the compiled entries (reduce-overhead: CUDA graphs)")
    p.add_argument("--bf16", choices=("on", "off", "both"), default="both")
    p.add_argument("--channels-last", choices=("on", "off", "both"), default="both")
    p.add_argument("--budget-s", type=float, default=120.0, help="stop starting compiled entries after this")
    p.add_argument("--epochs", type=int, default=cfg.epochs, help="for the choice: epochs of the run")
    p.add_argument("--train-images", type=int, default=50_000, help="for the choice: images per epoch")
    p.add_argument("--tolerance", type=float, default=0.05, help="largest relative logit difference vs fp32")
    p.add_argument("--seed", type=int, default=cfg.seed)
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--flags", default=None, help="write the chosen setting as train flags to this file")
    return p.parse_args(argv)


def _switch(value: str) -> list[bool]:
    return {"on": [True], "off": [False], "both": [False, True]}[value]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Matrix:
    """One initial model and fixed random batches per batch size; every entry starts from them."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.cfg = args, Config()
        self.device = torch.device(args.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(args.seed)
        self.template = build_model(self.cfg.model, NUM_CLASSES, self.cfg.norm, args.width).to(self.device)
        g = torch.Generator().manual_seed(args.seed)
        self.batches = {b: [(torch.randn(b, 3, 32, 32, generator=g).to(self.device),
                             torch.randint(0, NUM_CLASSES, (b,), generator=g).to(self.device))
                            for _ in range(4)] for b in args.batch_sizes}
        with torch.no_grad():  # fp32 eager logits of each first batch (GroupNorm: train and eval mode agree)
            self.reference = {b: self.template(batches[0][0]).double() for b, batches in self.batches.items()}

    def entry(self, bf16: bool, channels_last: bool, compiled: bool, batch: int, handlers: bool = False) -> dict:
        args, device = self.args, self.device
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = copy.deepcopy(self.template).to(memory_format=fmt)
        dtype = torch.bfloat16 if bf16 else None
        if compiled:
            torch._dynamo.reset()  # each entry compiles afresh, not into the previous entries' caches and limits
        # as the trainer compiles (plus the mode, where one is asked for)
        mode = None if self.args.compile_mode == "default" else self.args.compile_mode
        step_model = torch.compile(model, dynamic=False, mode=mode) if compiled else model
        optimizer = torch.optim.SGD(model.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum,
                                    weight_decay=self.cfg.weight_decay)
        # reduce-overhead: the trainer's captured step (the optimizer step compiled too, its lr a device tensor)
        captured = captures_step(compiled, self.args.compile_mode)
        LrPlacement(optimizer, device, captured)
        trainer = create_trainer(step_model, optimizer, nn.CrossEntropyLoss(), device,
                                 Precision(dtype=dtype, channels_last=channels_last),
                                 optimizer_step(optimizer, captured), captured)
        if handlers:
            NonFiniteLossGuard(every=10).attach(trainer)
            trainer.add_event_handler(Events.ITERATION_COMPLETED(every=10),
                                      lambda e: float(e.state.output["loss"]))  # what the TensorBoard log does
        first_logits = {}
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=1),
                                  lambda e: first_logits.setdefault("y", e.state.output["y_pred"].double()))
        data = [(x.to(memory_format=fmt), y) for x, y in self.batches[batch]]
        sync(device)
        start = time.perf_counter()
        trainer.run(data, epoch_length=args.warmup, max_epochs=1)
        sync(device)
        warmup_s = time.perf_counter() - start
        start = time.perf_counter()
        trainer.run(data, epoch_length=args.steps, max_epochs=1)
        sync(device)
        seconds = time.perf_counter() - start
        loss = float(trainer.state.output["loss"])
        reference = self.reference[batch]
        logit_error = float((first_logits["y"] - reference).norm() / reference.norm())
        ips = args.steps * batch / seconds
        correct = bool(torch.isfinite(torch.tensor(loss))) and logit_error < args.tolerance
        return {"bf16": bf16, "channels_last": channels_last, "compile": compiled, "batch_size": batch,
                "compile_mode": args.compile_mode,
                "images_per_s": round(ips, 1), "step_ms": round(1000 * seconds / args.steps, 3),
                "compile_s": round(warmup_s, 2) if compiled else 0.0, "warmup_s": round(warmup_s, 2),
                "loss": loss, "logit_rel_error": logit_error, "correct": correct}


def plan(args: argparse.Namespace) -> tuple[list[tuple], list[tuple]]:
    """(eager entries, compiled entries in the order to try) as (bf16, channels_last, batch) tuples."""
    grid = [(b16, cl, bi) for b16, cl, bi in itertools.product(_switch(args.bf16), _switch(args.channels_last),
                                                               range(len(args.batch_sizes)))]
    eager = [(b16, cl, args.batch_sizes[bi]) for b16, cl, bi in grid] if False in _switch(args.compile) else []
    compiled = []
    if True in _switch(args.compile):
        ordered = [e for e in COMPILE_ORDER if e in grid] + [e for e in grid if e not in COMPILE_ORDER]
        compiled = [(b16, cl, args.batch_sizes[bi]) for b16, cl, bi in ordered]
    return eager, compiled


def choose(entries: list[dict], args: argparse.Namespace) -> dict | None:
    """The correct entry at the recipe batch size that spends the least time on a whole run's steps."""
    recipe = [e for e in entries if e["correct"] and e["batch_size"] == args.batch_sizes[0]]
    for e in recipe:
        e["run_steps_s"] = round(e["compile_s"] + args.epochs * args.train_images / e["images_per_s"], 1)
    return min(recipe, key=lambda e: e["run_steps_s"], default=None)


def train_flags(choice: dict) -> str:
    mode = choice.get("compile_mode", "default")
    return " ".join([f"--amp {'on' if choice['bf16'] else 'off'}",
                     "--channels-last" if choice["channels_last"] else "--no-channels-last",
                     f"--compile --compile-mode {mode}" if choice["compile"] else "--no-compile"])


def markdown(result: dict) -> str:
    rows = ["| bf16 | channels_last | compile | batch | images/s | step ms | compile s | logit rel. error | correct |",
            "|---|---|---|---|---|---|---|---|---|"]
    for e in result["entries"]:
        yes = lambda v: "on" if v else "off"  # noqa: E731
        if "error" in e:
            rows.append(f"| {yes(e['bf16'])} | {yes(e['channels_last'])} | {yes(e['compile'])} | {e['batch_size']} | "
                        f"failed: {e['error'].replace('|', '/')} | | | | NO |")
            continue
        rows.append(f"| {yes(e['bf16'])} | {yes(e['channels_last'])} | {yes(e['compile'])} | {e['batch_size']} | "
                    f"{e['images_per_s']:.0f} | {e['step_ms']:.2f} | {e['compile_s']:.1f} | "
                    f"{e['logit_rel_error']:.1e} | {'yes' if e['correct'] else 'NO'} |")
    for b16, cl, batch in result["not_run"]:
        rows.append(f"| {'on' if b16 else 'off'} | {'on' if cl else 'off'} | on | {batch} | not run (time budget) "
                    f"| | | | |")
    choice = result["choice"]
    mode = result.get("compile_mode", "default")
    lines = [f"Device: {result['device']}; width {result['width']}; compile mode {mode}; "
             f"{result['steps']} timed steps after "
             f"{result['warmup']} warm-up steps per entry; matrix wall time {result['wall_s']:.0f} s.", "", *rows, ""]
    if choice:
        lines.append(f"Chosen for the run (least compile + {result['epochs']} epochs of steps at batch "
                     f"{choice['batch_size']}): `{train_flags(choice)}`, {choice['images_per_s']:.0f} images/s, "
                     f"estimated {choice['run_steps_s']:.0f} s of steps.")
        if "handlers_ratio" in result:
            lines.append(f"With the per-iteration handlers (NaN guard, a host read of the loss every 10 steps) "
                         f"the chosen step runs at {result['handlers_ratio']:.3f}x its bare speed.")
    return "\n".join(lines) + "\n"


def measure(matrix: Matrix, bf16: bool, channels_last: bool, compiled: bool, batch: int) -> dict:
    """One entry; a setting that fails (a compiler error, say) is reported as failed, not fatal to the matrix."""
    try:
        entry = matrix.entry(bf16, channels_last, compiled, batch)
    except Exception as exc:  # noqa: BLE001 - any failure of a setting is a result of the matrix
        entry = {"bf16": bf16, "channels_last": channels_last, "compile": compiled, "batch_size": batch,
                 "compile_mode": matrix.args.compile_mode,
                 "images_per_s": 0.0, "step_ms": 0.0, "compile_s": 0.0, "warmup_s": 0.0, "loss": float("nan"),
                 "logit_rel_error": float("nan"), "correct": False,
                 "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:200]}
    print(json.dumps(entry), flush=True)
    return entry


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    matrix = Matrix(args)
    eager, compiled = plan(args)
    entries, not_run, longest_compile = [], [], 0.0
    for b16, cl, batch in eager:
        entries.append(measure(matrix, b16, cl, False, batch))
    for b16, cl, batch in compiled:
        left = args.budget_s - (time.perf_counter() - start)
        if left < max(longest_compile, 1.0):
            not_run.append((b16, cl, batch))
            continue
        entries.append(measure(matrix, b16, cl, True, batch))
        longest_compile = max(longest_compile, entries[-1]["compile_s"])
    result = {"device": torch.cuda.get_device_name(matrix.device) if matrix.device.type == "cuda" else "cpu",
              "width": args.width, "compile_mode": args.compile_mode, "steps": args.steps, "warmup": args.warmup,
              "epochs": args.epochs,
              "entries": entries, "not_run": not_run, "choice": choose(entries, args)}
    if result["choice"]:
        c = result["choice"]
        with_handlers = matrix.entry(c["bf16"], c["channels_last"], c["compile"], c["batch_size"], handlers=True)
        result["handlers_ratio"] = with_handlers["images_per_s"] / c["images_per_s"]
    result["wall_s"] = time.perf_counter() - start
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    result = run(args)
    text = markdown(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.flags:
        if result["choice"] is None:
            raise SystemExit("no correct entry at the recipe batch size: nothing to choose")
        Path(args.flags).write_text(train_flags(result["choice"]) + "\n")


if __name__ == "__main__":
    main()
