"""benchmarks/study/weight_norms.py: the conv-weight norm counts the conv kernels only, reads the raw weights and the
average apart, and sizes a fresh model of the run's width."""

from __future__ import annotations

import pytest
import torch
import yaml

from ignite_cifar.model.resnet import build_model

from .helpers import load_benchmark

weight_norms = load_benchmark("weight_norms")


def test_the_norm_counts_conv_kernels_only():
    state = {"conv.weight": torch.full((2, 1, 3, 3), 2.0), "norm.weight": torch.full((2,), 100.0),
             "fc.weight": torch.full((3, 2), 100.0)}
    assert weight_norms.conv_norm(state) == pytest.approx((18 * 4.0) ** 0.5)


def test_a_run_reads_its_raw_weights_and_its_average_apart(tmp_path):
    config = {"model": "resnet18", "norm": "layer", "width": 0.0625, "seed": 3, "weight_decay": 0.0}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(3)
    raw = build_model(width=0.0625).state_dict()
    average = {k: 2 * v for k, v in raw.items()}
    trainer = {"iteration": 20, "epoch_length": 10, "max_epochs": 4}
    torch.save({"model": raw, "ema_model": average, "trainer": trainer},
               tmp_path / "checkpoints" / "last_checkpoint_20.pt")
    row = weight_norms.run_row(tmp_path)
    assert row["epoch"] == 2
    assert row["raw"] == pytest.approx(row["initial"])  # the same seed and width build the same kernels
    assert row["average"] == pytest.approx(2 * row["raw"])
    assert "| 0.0 | 2 |" in weight_norms.markdown([row])
