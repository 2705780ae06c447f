"""The recipe's optional knobs do what they say: AdamW's decoupled decay, Nesterov, no decay on norm weights and
biases, the plateau schedule's metric, threshold and cooldown, and the raw weights evaluated beside an average."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from ignite_cifar import files
from ignite_cifar.config import Config, make_config
from ignite_cifar.errors import ConfigError
from ignite_cifar.model.resnet import build_model
from ignite_cifar.training.launch import train
from ignite_cifar.training.optimizer import NO_DECAY, build_optimizer, optimizer_settings
from ignite_cifar.training.schedules import Plateau, PlateauScheduler

from .helpers import ASSIGNMENT_RECIPE, tiny_config


def _optimizer(**fields):
    config = make_config(ASSIGNMENT_RECIPE, fields)  # the knobs are changes to the assignment's SGD
    return build_optimizer(config, build_model(width=0.0625)), config


def test_by_default_every_parameter_decays_in_one_group():  # (in the assignment recipe)
    optimizer, config = _optimizer()
    (group,) = optimizer.param_groups
    assert group["weight_decay"] == config.weight_decay == 5e-4 and not group["nesterov"]


def test_no_decay_norm_bias_puts_exactly_the_norm_weights_and_biases_in_a_group_without_decay():
    model = build_model(width=0.0625)
    optimizer = build_optimizer(make_config(ASSIGNMENT_RECIPE, {"decay_norm_bias": False}), model)
    weights, no_decay = optimizer.param_groups
    assert no_decay["name"] == NO_DECAY and no_decay["weight_decay"] == 0.0 and weights["weight_decay"] == 5e-4
    norms_and_biases = {id(p) for m in model.modules() for name, p in m.named_parameters(recurse=False)
                        if isinstance(m, torch.nn.GroupNorm) or name == "bias"}
    assert {id(p) for p in no_decay["params"]} == norms_and_biases
    assert all(p.ndim > 1 for p in weights["params"])
    assert len(weights["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    # flags given with --resume update the decay of the decaying group only
    assert "weight_decay" not in optimizer_settings(make_config(ASSIGNMENT_RECIPE, {"decay_norm_bias": False}),
                                                    no_decay)


def test_adamw_decays_the_weights_apart_from_the_gradient():
    """With a zero gradient, AdamW still shrinks every weight by lr x weight_decay; Adam's L2 term g = wd x w goes
    through its gradient normalization instead: its first step is lr x g / (|g| + eps), about lr x sign(w)."""
    torch.manual_seed(0)

    def adam_first_step(w):
        g = 0.05 * w
        return w - 1e-3 * g / (g.abs() + 1e-8)

    for name, expected in (("adamw", lambda w: w * (1 - 1e-3 * 0.05)), ("adam", adam_first_step)):
        optimizer, _ = _optimizer(optimizer=name, lr=1e-3, weight_decay=0.05)
        param = optimizer.param_groups[0]["params"][0]
        before = param.detach().clone()
        for p in optimizer.param_groups[0]["params"]:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        assert torch.allclose(param.detach(), expected(before), atol=1e-6), name  # the two rules differ by ~1e-3
    assert isinstance(_optimizer(optimizer="adamw")[0], torch.optim.AdamW)


def test_nesterov_reaches_sgd_and_needs_momentum():
    optimizer, _ = _optimizer(nesterov=True)
    assert optimizer.param_groups[0]["nesterov"] and optimizer.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ConfigError, match="nesterov"):
        make_config(ASSIGNMENT_RECIPE, {"nesterov": True, "momentum": 0})
    with pytest.raises(ConfigError, match="nesterov"):
        make_config({"nesterov": True, "optimizer": "adam"})


def _cuts(plateau: Plateau, values: list[float]) -> list[int]:
    """The evaluations (1-based) after which the lr was cut, for these metric values."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = PlateauScheduler(optimizer, plateau)
    evaluator = Engine(lambda engine, batch: None)
    cuts = []
    for k, value in enumerate(values, start=1):
        evaluator.state.metrics = {plateau.metric: value}
        before = optimizer.param_groups[0]["lr"]
        scheduler(evaluator)
        if optimizer.param_groups[0]["lr"] < before:
            cuts.append(k)
    return cuts


def test_the_plateau_watches_the_metric_and_threshold_it_is_given():
    creeping_loss = [1.0, 0.999, 0.998, 0.997, 0.996, 0.995]  # tiny gains: relative 1e-4 counts them
    assert _cuts(Plateau(patience=1), creeping_loss) == []
    assert _cuts(Plateau(patience=1, threshold=0.01, threshold_mode="abs"), creeping_loss) == [3, 5]
    rising_accuracy = [0.5, 0.6, 0.7, 0.8]  # accuracy is to be raised: no cut, while the loss rule would cut
    assert _cuts(Plateau(patience=0, metric="accuracy"), rising_accuracy) == []
    assert _cuts(Plateau(patience=0, metric="loss"), rising_accuracy) == [2, 3, 4]


def test_cooldown_waits_after_a_cut():
    flat = [1.0] * 7
    assert _cuts(Plateau(patience=0, min_lr=0.0), flat) == [2, 3, 4, 5, 6, 7]
    assert _cuts(Plateau(patience=0, min_lr=0.0, cooldown=2), flat) == [2, 5]


def test_the_mission_keeps_torch_defaults():
    plateau = Plateau.of(make_config(ASSIGNMENT_RECIPE))
    assert (plateau.metric, plateau.mode, plateau.threshold, plateau.threshold_mode, plateau.cooldown) == (
        "loss", "min", 1e-4, "rel", 0)
    assert Plateau.of(Config()) == plateau  # the default recipe changed the optimizer, not the plateau


@pytest.mark.parametrize("plateau_on, watched", [("raw", "raw_val_loss"), ("ema", "val_loss")])
def test_with_an_average_the_raw_weights_are_evaluated_and_the_plateau_steps_on_the_chosen_one(
        tmp_path, plateau_on, watched):
    result = train(tiny_config(tmp_path, run_name=plateau_on, epochs=2, ema_decay=0.9, plateau_on=plateau_on,
                               explain_at_end=False))
    run_dir = Path(result["run_dir"])
    records = json.loads((run_dir / "history.json").read_text())["epochs"]
    assert all({"raw_val_loss", "raw_val_accuracy", "raw_val_seconds", "val_seconds"} <= set(r) for r in records)
    assert any(r["raw_val_loss"] != r["val_loss"] for r in records)  # two models, two evaluations
    scheduler = files.load_checkpoint(files.find_checkpoint(run_dir))["scheduler"]
    assert scheduler["best"] == pytest.approx(min(r[watched] for r in records), rel=1e-6)
