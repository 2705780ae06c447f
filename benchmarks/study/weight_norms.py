"""How large did a run's conv weights grow? The total L2 norm of every conv kernel, from runs' last checkpoints.

With LayerNorm after each conv, a conv's output does not depend on its kernel's scale, so the same optimizer step
turns a kernel twice the size half as far. Weight decay holds the size down; without it the norm grows and the
step shrinks relative to the weights. This reads the trained (raw) weights and, where the run kept one, the weight
average, and a freshly built model of the same architecture and width for the size at initialisation.

    python benchmarks/study/weight_norms.py --runs runs/study/combination-seed3 runs/study/combination-no-weight-decay \
        --markdown benchmarks/study/WEIGHT-NORMS.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from ignite_cifar.files import find_checkpoint, load_checkpoint
from ignite_cifar.model.resnet import build_model


def conv_norm(state: dict[str, torch.Tensor]) -> float:
    """The L2 norm of all conv kernels (the 4-D tensors) of a state dict, taken together."""
    return float(sum(t.float().pow(2).sum() for t in state.values() if t.ndim == 4)) ** 0.5


def initial_conv_norm(config: dict) -> float:
    """The same norm for a freshly built model of the run's architecture, norm and width, seeded with its seed."""
    torch.manual_seed(config.get("seed", 42))
    model = build_model(config.get("model", "resnet18"), norm=config.get("norm", "layer"),
                        width=config.get("width", 1.0))
    return conv_norm(model.state_dict())


def run_row(run_dir: Path) -> dict:
    """One run's figures: its weight decay, the epoch of its last checkpoint and the three norms."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    path = find_checkpoint(run_dir)
    if path is None:
        raise SystemExit(f"weight_norms: {run_dir} has no last checkpoint")
    checkpoint = load_checkpoint(path)
    trainer = checkpoint["trainer"]
    return {"run": run_dir.name, "weight_decay": config.get("weight_decay"),
            "epoch": trainer["iteration"] / trainer["epoch_length"], "initial": initial_conv_norm(config),
            "raw": conv_norm(checkpoint["model"]),
            "average": conv_norm(checkpoint["ema_model"]) if "ema_model" in checkpoint else None}


def markdown(rows: list[dict]) -> str:
    lines = ["| run | weight decay | epoch | conv-weight L2 norm at init | trained (raw) | weight average |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        average = "-" if r["average"] is None else f"{r['average']:.1f}"
        lines.append(f"| {r['run']} | {r['weight_decay']} | {r['epoch']:g} | {r['initial']:.1f} | {r['raw']:.1f} "
                     f"| {average} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="run folders (config.yaml, checkpoints/)")
    p.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = p.parse_args(argv)
    table = markdown([run_row(run) for run in args.runs])
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(f"# Conv-weight norms\n\nWritten by `python benchmarks/study/weight_norms.py --runs "
                                 f"{' '.join(str(r) for r in args.runs)}`.\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
