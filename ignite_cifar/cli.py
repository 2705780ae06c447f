"""Argument parsing only: argv -> Config or subcommand options -> launch / lr_find / saved_run; errors: one line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from ignite_cifar.config import (
    DEVICES,
    EXPLAIN_CHECKPOINTS,
    SHIPPED_CONFIGS,
    Config,
    RangeTest,
    make_config,
    read_yaml,
)
from ignite_cifar.config_checks import CAM_METHODS, MISTAKE_ORDERS, check_run_name
from ignite_cifar.errors import ConfigError, MachineError, TrainingStopped, UserError

CONFIG_HELP = (f"YAML file, or a shipped config: {', '.join(SHIPPED_CONFIGS)}; give it again to layer another on "
               "top (later files win, e.g. --config assignment --config my-change.yaml)")

PROG = "ignite-cifar"
NEXT_COMMAND = " with: python -m ignite_cifar "  # how a line names the command that carries a run on


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        help_text += f" [default: {f.default!r}]"
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            metavar = "{" + ",".join(choices) + "}" if choices else f.name.upper()  # --help shows the choices
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=metavar, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Train a LayerNorm ResNet on CIFAR-10 with PyTorch Ignite, "
                                            "then explain its mistakes with GradCAM.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train (the default recipe unless told otherwise; --config assignment: the "
                                         "assignment's)")
    train.add_argument("--config", action="append", default=None, help=CONFIG_HELP)
    train.add_argument("--debug", action="store_true", help="show tracebacks")
    train.add_argument("--set-aside-damaged", action="store_true",
                       help="with --resume: rename a damaged newest checkpoint or history.json to <name>.damaged and "
                            "go on from the checkpoint before it (or from the start where there is none)")
    train.add_argument("--estimate", action="store_true",
                       help="measure the configured step for a few seconds, print the whole run's estimated time "
                            "(and what would be faster here), write nothing and exit")
    _add_config_flags(train)

    _add_lr_find(sub)

    _add_saved_run_commands(sub)
    return parser


def _add_saved_run_commands(sub) -> None:
    """`explain` and `evaluate` of a saved run, with train's flag names (the short ones are aliases)."""
    defaults = Config()  # explain/evaluate default to what training uses
    for name, help_text in (("explain", "re-draw misclassified.png / gradcam.png of a saved run"),
                            ("evaluate", "print test loss, accuracy and per-class accuracy of a saved run")):
        p = sub.add_parser(name, help=help_text)
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--run", help="run folder")
        src.add_argument("--checkpoint", help="checkpoint file (in a run's checkpoints/ folder)")
        p.add_argument("--explain-checkpoint", "--which", dest="explain_checkpoint", choices=EXPLAIN_CHECKPOINTS,
                       default=defaults.explain_checkpoint,
                       help="with --run: the last checkpoint (final) or the best one")
        p.add_argument("--device", choices=DEVICES, default=defaults.device)
        p.add_argument("--debug", action="store_true", help="show tracebacks")
        if name == "explain":
            p.add_argument("--n-misclassified", "--n", dest="n_misclassified", type=int,
                           default=defaults.n_misclassified, help="misclassified images to show")
            p.add_argument("--mistake-order", "--order", dest="mistake_order", choices=MISTAKE_ORDERS,
                           default=defaults.mistake_order)
            p.add_argument("--gradcam-method", "--method", dest="gradcam_method", choices=CAM_METHODS,
                           default=defaults.gradcam_method)
            p.add_argument("--gradcam-layer", "--layer", dest="gradcam_layer", default=defaults.gradcam_layer,
                           help="module GradCAM explains (dotted name)")
            p.add_argument("--images", nargs="+", metavar="FILE", default=None,
                           help="explain these image files instead (any size and mode, resized to 32x32): top-3 "
                                "classes, the map and its faithfulness, into own_images.png/.json")
            p.add_argument("--output", default=None, help="with --images: folder to write into [default: the run's]")


def _add_lr_find(sub) -> None:
    test = RangeTest()
    p = sub.add_parser("lr-find", help="LR range test (ignite's FastaiLRFinder) on the training setup: writes "
                                       "lr_find.png and lr_find.json with a suggested lr")
    p.add_argument("--start-lr", type=float, default=test.start_lr, help=f"first lr [default: {test.start_lr:g}]")
    p.add_argument("--end-lr", type=float, default=test.end_lr, help=f"last lr [default: {test.end_lr:g}]")
    p.add_argument("--num-iter", type=int, default=test.num_iter,
                   help=f"iterations from start to end lr, in exponential steps [default: {test.num_iter}]")
    p.add_argument("--output", default=None, help="folder to write into (a training run's, say) [default: "
                                                  "--output-dir/--run-name, or --output-dir/lr-find-<timestamp>]")
    p.add_argument("--config", action="append", default=None, help=CONFIG_HELP)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_config_flags(p)


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields the user gave on the command line (field: value as typed), and only those."""
    given = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    if given.get("run_name") == "":  # --run-name "$UNSET": refused (in a YAML, '' is the default, a timestamp)
        check_run_name("")
    return given


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults < each --config file in turn < flags."""
    return make_config(*(read_yaml(name) for name in args.config or []), given_flags(args))


def _train(args: argparse.Namespace) -> None:
    """`train`; with --resume, the resumed run's config.yaml replaces the defaults and --config, and the flags
    given now update it (resume.py works out what they change)."""
    given = given_flags(args)
    if args.set_aside_damaged and not given.get("resume"):
        raise ConfigError("set_aside_damaged: goes with --resume RUN_FOLDER (it sets aside that run's damaged files)")
    if args.estimate:
        _estimate(args, given)
        return
    if given.get("resume"):
        from ignite_cifar.training.resume_run import resume

        resume(given.pop("resume"), set_aside_damaged=args.set_aside_damaged, **given)
    else:
        config = config_from_args(args)  # a bad value is refused here, before torch is imported (about 5 s)
        from ignite_cifar.training.launch import train

        train(config)


def _estimate(args: argparse.Namespace, given: dict[str, Any]) -> None:
    """`train --estimate`: the whole run's time, measured here for the run these flags would start; writes nothing."""
    resume = None
    if given.get("resume"):
        from ignite_cifar.training.resume import plan_resume

        resume = plan_resume(given["resume"], given, args.set_aside_damaged)  # sets nothing aside: that is the run's
        config = resume.config
    else:
        config = config_from_args(args)  # refused before torch is imported, as for the run
    from ignite_cifar.training.estimate_run import estimate_run

    estimate_run(config, resume)


def _lr_find(args: argparse.Namespace) -> None:
    from ignite_cifar.training.lr_find import PNG, RULE, lr_find

    found = lr_find(config_from_args(args), RangeTest(args.start_lr, args.end_lr, args.num_iter), args.output)
    print(f"suggested lr: {found['suggested_lr']:.3g} ({RULE}); wrote {Path(found['run_dir']) / PNG}")


def _explain(args: argparse.Namespace) -> None:
    from ignite_cifar.explain.saved_run import explain_own_images, explain_saved_run
    from ignite_cifar.explain.settings import ExplainSettings

    settings = ExplainSettings.of(args)
    if args.images:
        entries, out_dir = explain_own_images(args.run, args.checkpoint, args.images, settings,
                                              args.explain_checkpoint, args.device, args.output)
        for e in entries:
            top = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in e["top"])
            print(f"{e['image']}: {top} | deletion AUC {e['deletion_auc/map']:.3f} (random regions "
                  f"{e['deletion_auc/random_regions']:.3f}), insertion AUC {e['insertion_auc/map']:.3f} "
                  f"(random regions {e['insertion_auc/random_regions']:.3f})"
                  + ("; the map is constant: it orders no pixel, its sanity check is undefined" if e["constant_map"]
                     else ""))
        print(f"wrote {out_dir / 'own_images.png'}, {out_dir / 'own_images.json'}")
        return
    if settings.n_misclassified < 1:
        raise UserError(f"n_misclassified: must be >= 1, got {settings.n_misclassified}")
    summary = explain_saved_run(args.run, args.checkpoint, settings, args.explain_checkpoint, args.device)
    print(f"{len(summary['mistakes'])} misclassified images explained; wrote " + ", ".join(summary["files"].values()))


def _evaluate(args: argparse.Namespace) -> None:
    from ignite_cifar.explain.saved_run import evaluate_saved_run

    s = evaluate_saved_run(args.run, args.checkpoint, args.explain_checkpoint, args.device)
    print(f"checkpoint: {s['checkpoint']}")
    print(f"test loss {s['test_loss']:.4f}  accuracy {100 * s['test_accuracy']:.2f}% ({s['test_images']} images)")
    per_class = {k: round(100 * v, 2) for k, v in s["per_class_accuracy"].items()}
    print("per-class accuracy: " + json.dumps(per_class))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("ignite_cifar").setLevel(logging.INFO)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    if hasattr(signal, "SIGXFSZ"):  # past a file-size limit, a write fails (one clear line) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        if args.command == "train":
            _train(args)
        elif args.command == "lr-find":
            _lr_find(args)
        elif args.command == "explain":
            _explain(args)
        else:
            _evaluate(args)
    except UserError as exc:
        if args.debug:
            raise
        for line in str(exc).splitlines() or [""]:  # one line per problem (e.g. per unreadable image)
            print(f"{PROG}: error: {line}", file=sys.stderr)
        return 2
    except MachineError as exc:
        if args.debug:
            raise
        # a line that ends in the command to run next keeps it last, so it can be copied (or followed) as it is
        hint = "" if NEXT_COMMAND in str(exc) else " (--debug shows the traceback)"
        print(f"{PROG}: error: {exc}{hint}", file=sys.stderr)
        return exc.exit_code
    except TrainingStopped as exc:
        from ignite_cifar.signals import ignore_stop_signals

        ignore_stop_signals()  # the stop is done and saved; a repeated Ctrl-C must not add a traceback
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
