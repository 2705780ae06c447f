"""Recipe options on tiny synthetic runs: the optimizer, label smoothing, zero-init, the lr warmup (also across a
resume), and the precision and memory layout a run trains in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ignite.engine import Events

from ignite_cifar import cli, files
from ignite_cifar.explain import saved_run
from ignite_cifar.training import engines
from ignite_cifar.training.launch import train

from .helpers import tiny_config

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "iteration")


def _metrics(run_dir: Path) -> list[dict]:
    history = json.loads((Path(run_dir) / "history.json").read_text())
    return [{k: r[k] for k in ("epoch",) + METRICS} for r in history["epochs"]]


def _last_state(run_dir) -> dict:
    return files.load_checkpoint(files.find_checkpoint(Path(run_dir)))


def test_adam_is_adam_in_the_checkpoint_and_resumes_as_adam(tmp_path):
    first = train(tiny_config(tmp_path, run_name="adam", epochs=1, optimizer="adam", lr=1e-3, weight_decay=1e-4,
                              explain_at_end=False))
    state = _last_state(first["run_dir"])["optimizer"]
    group = state["param_groups"][0]
    assert group["betas"] == (0.9, 0.999) and group["lr"] == 1e-3 and group["weight_decay"] == 1e-4
    assert "momentum" not in group
    assert all({"exp_avg", "exp_avg_sq", "step"} <= set(s) for s in state["state"].values())
    assert cli.main(["train", "--resume", first["run_dir"], "--epochs", "2"]) == 0
    resumed = _last_state(first["run_dir"])["optimizer"]
    assert "momentum" not in resumed["param_groups"][0] and "exp_avg" in resumed["state"][0]
    # Adam's step counter continued from the checkpoint: two epochs of 6 iterations each
    assert float(resumed["state"][0]["step"]) == 2 * float(state["state"][0]["step"]) == 12


def test_the_mission_recipe_trains_with_sgd(smoke_run):  # tiny_config is the assignment recipe
    group = _last_state(smoke_run[0])["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0.9 and "betas" not in group


def test_the_default_recipe_trains_adam_on_standardized_convolutions_and_steps_the_plateau_on_the_average(tmp_path,
                                                                                                         caplog):
    from ignite_cifar.config import Config

    defaults = {name: getattr(Config(), name) for name in ("optimizer", "lr", "weight_decay", "ema_decay",
                                                           "plateau_on", "weight_standardization")}
    with caplog.at_level("INFO", logger="ignite_cifar"):
        result = train(tiny_config(tmp_path, run_name="default-recipe", epochs=1, explain_at_end=False,
                                    **defaults))
    assert "resnet18 (standardized convolutions) width" in caplog.text  # the start line names it
    state = _last_state(result["run_dir"])
    group = state["optimizer"]["param_groups"][0]
    assert group["betas"] == (0.9, 0.999) and group["lr"] == 1e-3 and group["weight_decay"] == 1e-4
    history = json.loads((Path(result["run_dir"]) / "history.json").read_text())["epochs"]
    assert history[0]["raw_val_loss"] != history[0]["val_loss"]  # the average is evaluated, the raw weights too
    saved = yaml.safe_load((Path(result["run_dir"]) / "config.yaml").read_text())
    assert saved["plateau_on"] == "ema" and saved["weight_standardization"] is True


def test_label_smoothing_changes_the_training_loss_but_not_the_val_loss(tmp_path):
    # lr so small that both runs keep (almost exactly) the same weights: only the loss function differs
    runs = {ls: train(tiny_config(tmp_path, run_name=f"ls{ls}", epochs=1, lr=1e-9, label_smoothing=ls))
            for ls in (0.0, 0.5)}
    plain, smoothed = (_metrics(runs[ls]["run_dir"])[0] for ls in (0.0, 0.5))
    assert smoothed["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-6)
    assert smoothed["val_accuracy"] == plain["val_accuracy"]
    assert abs(smoothed["train_loss"] - plain["train_loss"]) > 1e-3
    # the final test loss is the plain cross-entropy too
    finals = [json.loads((Path(runs[ls]["run_dir"]) / "history.json").read_text())["final_test"]["test_loss"]
              for ls in (0.0, 0.5)]
    assert finals[1] == pytest.approx(finals[0], rel=1e-6)


def test_zero_init_residual_reaches_the_trained_model(tmp_path):
    result = train(tiny_config(tmp_path, run_name="zero", epochs=1, lr=1e-9, zero_init_residual=True,
                                explain_at_end=False))
    weights = {k: v for k, v in _last_state(result["run_dir"])["model"].items() if k.endswith("norm2.weight")}
    assert len(weights) == 8 and all(v.abs().max() < 1e-6 for v in weights.values())


def test_warmup_is_linear_per_iteration_and_holds_the_plateau_scheduler_until_it_is_over():
    from ignite.engine import Engine

    from ignite_cifar.training.schedules import Plateau, PlateauScheduler, attach_warmup

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    trainer = Engine(lambda engine, batch: None)
    plateau = PlateauScheduler(optimizer, Plateau(factor=0.5, patience=0, min_lr=0.0))
    never_improves = type("Evaluator", (), {"state": type("State", (), {"metrics": {"loss": 1.0}})()})()
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: plateau(never_improves))
    attach_warmup(trainer, optimizer, lr=0.4, epochs=2, epoch_length=4, plateau=plateau)
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: seen.append(optimizer.param_groups[0]["lr"]))
    trainer.run(range(4), max_epochs=5)
    # 8 warmup iterations from 0.04 towards 0.4, then 0.4; the plateau's first step is after epoch 3 (it sets
    # the best loss), its first cut after epoch 4: only epoch 5 runs at 0.2
    assert seen == pytest.approx([0.04 + 0.36 * i / 8 for i in range(8)] + [0.4] * 8 + [0.2] * 4, rel=1e-9)


def test_warmup_survives_resume(tmp_path):
    straight = train(tiny_config(tmp_path, run_name="warm", epochs=3, warmup_epochs=2, explain_at_end=False))
    records = _metrics(straight["run_dir"])
    assert [r["lr"] for r in records] == pytest.approx([0.002, 0.002 + 0.018 * 6 / 12, 0.02], rel=1e-9)
    half = train(tiny_config(tmp_path, run_name="warm-halves", epochs=1, warmup_epochs=2,
                             explain_at_end=False))
    assert _last_state(half["run_dir"])["warmup"]["event_index"] == 6  # one epoch of 6 iterations
    assert cli.main(["train", "--resume", half["run_dir"], "--epochs", "3"]) == 0
    assert _metrics(half["run_dir"]) == records


def test_channels_last_applies_on_cpu_and_the_saved_model_evaluates_alike(tmp_path):
    # width 0.125: at 0.0625, torch 2.14.1 on an AVX2-only CPU corrupts the heap in the channels_last backward of
    # layer2's shortcut (Conv2d 4->8, 1x1, stride 2) and the test process dies
    result = train(tiny_config(tmp_path, run_name="nhwc", epochs=1, channels_last=True, device="cpu", width=0.125,
                               explain_at_end=False))
    run_dir = Path(result["run_dir"])
    derived = yaml.safe_load((run_dir / "config.yaml").read_text())["derived"]
    assert derived["precision"] == "fp32, channels_last"
    # the checkpoint loads into a fresh (contiguous) model and gives the accuracy the last epoch recorded
    evaluated = saved_run.evaluate_saved_run(str(run_dir), None, device="cpu")
    assert evaluated["test_accuracy"] == pytest.approx(_metrics(run_dir)[-1]["val_accuracy"], abs=1e-9)


def test_amp_on_trains_in_bf16_on_cpu_and_auto_where_the_cpu_has_it(tmp_path, monkeypatch):
    from ignite_cifar.training.engines import Precision

    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(engines, "cpu_has_native_bf16", lambda native=native: native)
        assert Precision.resolve("auto", False, cpu).dtype == (torch.bfloat16 if native else None)
        assert Precision.resolve("on", False, cpu).dtype == torch.bfloat16
        assert Precision.resolve("off", False, cpu).dtype is None
    seen = []
    real = engines.create_trainer

    def recording(model, *args, **kwargs):  # what dtype the convolutions compute in inside the training step
        model.conv1.register_forward_hook(lambda m, i, out: seen.append(out.dtype) if m.training else None)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(engines, "create_trainer", recording)
    result = train(tiny_config(tmp_path, run_name="bf16", amp="on", epochs=1, probe_every=0,
                               explain_at_end=False))
    derived = yaml.safe_load((Path(result["run_dir"]) / "config.yaml").read_text())["derived"]
    assert derived["precision"] == "bfloat16" and set(seen) == {torch.bfloat16}
    assert np.isfinite(result["val_accuracy"])


@pytest.mark.parametrize("capability, expected", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_amp_auto_on_cuda_picks_bf16_only_from_compute_capability_8(monkeypatch, capability, expected):
    """torch.cuda.is_bf16_supported() is True on a T4 (7.5) or V100 (7.0) too, where bf16 is emulated: those get fp16
    with a GradScaler, as the help says. No GPU is needed: torch.cuda's answers are replaced."""
    from ignite_cifar.training.engines import Precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    for amp in ("auto", "on"):
        precision = Precision.resolve(amp, False, torch.device("cuda"))
        assert precision.dtype == expected
        assert (precision.scaler is not None) == (expected == torch.float16)
    assert Precision.resolve("off", False, torch.device("cuda")).dtype is None
