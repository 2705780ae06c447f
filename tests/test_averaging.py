"""The weight average (--ema-decay): its momentum rule, that the evaluator, checkpoints and explanations use it,
and that a resumed run averages exactly as an uninterrupted one."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from ignite_cifar import cli, files
from ignite_cifar.explain import saved_run
from ignite_cifar.training.averaging import attach_weight_average, ema_momentum
from ignite_cifar.training.launch import train

from .helpers import tiny_config

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "iteration")


def _records(run_dir) -> list[dict]:
    """Each epoch's metrics (not its timings)."""
    epochs = json.loads((Path(run_dir) / "history.json").read_text())["epochs"]
    return [{k: r[k] for k in METRICS} for r in epochs]


def _last_state(run_dir) -> dict:
    return files.load_checkpoint(files.find_checkpoint(Path(run_dir)))


def test_momentum_starts_large_and_settles_at_one_minus_decay():
    assert ema_momentum(1, 0.999) == pytest.approx(9 / 11)
    assert ema_momentum(100, 0.999) == pytest.approx(9 / 110)
    assert ema_momentum(10_000, 0.999) == pytest.approx(0.001)
    values = [ema_momentum(t, 0.99) for t in range(1, 2000)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_the_average_follows_the_recursion_step_by_step():
    weight = torch.nn.Parameter(torch.zeros(3))
    model = torch.nn.Linear(3, 1, bias=False)
    model.weight = torch.nn.Parameter(weight.view(1, 3).clone())
    steps = [torch.tensor([[1.0, 2.0, 3.0]]) * (k + 1) for k in range(30)]

    def step(engine, batch):
        with torch.no_grad():
            model.weight.copy_(steps[engine.state.iteration - 1])

    trainer = Engine(step)
    average = attach_weight_average(trainer, model, decay=0.9)
    trainer.run(range(30), max_epochs=1)
    expected = torch.zeros(1, 3)
    for t, w in enumerate(steps, start=1):
        m = max(0.1, 9 / (10 + t))
        expected = (1 - m) * expected + m * w
    assert torch.allclose(average.weight, expected, rtol=1e-6)
    assert not average.training and not average.weight.requires_grad


@pytest.fixture(scope="module")
def ema_straight(tmp_path_factory):
    """A 3-epoch run with the weight average, shared by the tests that only read it."""
    return train(tiny_config(tmp_path_factory.mktemp("ema"), run_name="ema-straight", epochs=3, ema_decay=0.9))


def test_the_run_evaluates_checkpoints_and_explains_the_average(ema_straight):
    run_dir = Path(ema_straight["run_dir"])
    state = _last_state(run_dir)
    assert set(state["ema_model"]) == set(state["model"])
    assert any(not torch.equal(state["ema_model"][k], state["model"][k]) for k in state["model"])
    records = _records(run_dir)
    # val accuracy was the average's: a saved-run evaluation (which reads ema_model) gives the same number
    final = saved_run.evaluate_saved_run(str(run_dir), None, device="cpu")
    assert final["test_accuracy"] == pytest.approx(records[-1]["val_accuracy"], abs=1e-9)
    best = saved_run.evaluate_saved_run(str(run_dir), None, which="best", device="cpu")
    assert best["test_accuracy"] == pytest.approx(max(r["val_accuracy"] for r in records), abs=1e-9)
    history = json.loads((run_dir / "history.json").read_text())
    assert history["final_test"]["test_accuracy"] == pytest.approx(records[-1]["val_accuracy"], abs=1e-9)
    assert "EMA" in json.loads((run_dir / "evaluation.json").read_text())["model"]


def test_a_resumed_run_averages_exactly_as_an_uninterrupted_one(ema_straight, tmp_path):
    straight = ema_straight
    half = train(tiny_config(tmp_path, run_name="ema-halves", epochs=1, ema_decay=0.9,
                             explain_at_end=False))
    assert cli.main(["train", "--resume", half["run_dir"], "--epochs", "3"]) == 0
    assert _records(half["run_dir"]) == _records(straight["run_dir"])
    a, b = _last_state(straight["run_dir"])["ema_model"], _last_state(half["run_dir"])["ema_model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_average_turned_on_at_resume_starts_from_the_resumed_weights(tmp_path):
    plain = train(tiny_config(tmp_path, run_name="plain", epochs=1, explain_at_end=False))
    resumed_weights = _last_state(plain["run_dir"])["model"]
    assert cli.main(["train", "--resume", plain["run_dir"], "--epochs", "2", "--ema-decay", "0.9999",
                     "--lr", "1e-12"]) == 0
    average = _last_state(plain["run_dir"])["ema_model"]
    assert all(torch.allclose(average[k], resumed_weights[k], atol=1e-6) for k in average)
