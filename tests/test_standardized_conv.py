"""Weight standardization (--weight-standardization): every convolution's kernels at mean 0 and variance 1 per output
channel at each forward, the stored weights left free; reaches the trained model and the saved run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ignite_cifar.config import make_config
from ignite_cifar.explain import saved_run
from ignite_cifar.model.resnet import build_model, configured_model
from ignite_cifar.model.standardized_conv import StandardizedConv2d, standardized
from ignite_cifar.training.launch import train

from .helpers import ASSIGNMENT_RECIPE, tiny_config


def test_standardized_kernels_have_mean_0_and_variance_1_per_output_channel():
    weight = torch.randn(6, 4, 3, 3, dtype=torch.double) * torch.arange(1, 7).view(6, 1, 1, 1) + 3.0
    kernels = standardized(weight).flatten(1)
    assert torch.allclose(kernels.mean(1), torch.zeros(6, dtype=torch.double), atol=1e-12)
    assert torch.allclose(kernels.var(1, correction=0), torch.ones(6, dtype=torch.double), atol=1e-5)


def test_the_convolution_ignores_each_kernels_scale_and_offset():
    torch.manual_seed(0)
    conv = StandardizedConv2d(4, 6, 3, padding=1, bias=False).double()
    plain = nn.Conv2d(4, 6, 3, padding=1, bias=False).double()
    plain.weight.data.copy_(conv.weight.data)
    x = torch.randn(2, 4, 8, 8, dtype=torch.double)
    out, plain_out = conv(x), plain(x)
    assert torch.allclose(out, F.conv2d(x, standardized(conv.weight), padding=1))
    with torch.no_grad():  # a different scale and offset for each output channel's kernel
        for layer in (conv, plain):
            layer.weight.mul_(torch.linspace(0.5, 4.0, 6, dtype=torch.double).view(6, 1, 1, 1)).add_(0.7)
    assert torch.allclose(conv(x), out, rtol=1e-3, atol=1e-4)  # up to the eps added to each kernel's variance
    assert not torch.allclose(plain(x), plain_out, rtol=1e-1, atol=1e-1)


def test_the_kernels_gradient_changes_neither_their_mean_nor_their_scale():
    # invariant to each kernel's offset and scale, so the gradient sums to 0 over each kernel and is orthogonal to it
    torch.manual_seed(0)
    conv = StandardizedConv2d(4, 6, 3, padding=1, bias=False).double()
    conv(torch.randn(2, 4, 8, 8, dtype=torch.double)).pow(2).sum().backward()
    grad, weight = conv.weight.grad.flatten(1), conv.weight.detach().flatten(1)
    assert grad.abs().max() > 1e-3
    assert torch.allclose(grad.sum(1), torch.zeros(6, dtype=torch.double), atol=1e-9)
    cosine = (grad * weight).sum(1) / (grad.norm(dim=1) * weight.norm(dim=1))
    assert cosine.abs().max() < 1e-3  # not exactly 0: the eps added to each kernel's variance


@pytest.mark.parametrize("name, convs", [("resnet18", 1 + 8 * 2 + 3), ("resnet34", 1 + 16 * 2 + 3)])
def test_the_option_standardizes_every_convolution_and_keeps_the_parameters(name, convs):
    torch.manual_seed(0)
    plain = build_model(name, width=0.125)
    torch.manual_seed(0)
    standard = build_model(name, width=0.125, weight_standardization=True)
    assert not any(isinstance(m, StandardizedConv2d) for m in plain.modules())
    assert sum(isinstance(m, StandardizedConv2d) for m in standard.modules()) == convs
    assert sum(isinstance(m, nn.Conv2d) for m in standard.modules()) == convs
    # the same parameters, drawn the same: a checkpoint's shapes and the init do not depend on the option
    plain_state, standard_state = plain.state_dict(), standard.state_dict()
    assert plain_state.keys() == standard_state.keys()
    assert all(torch.equal(plain_state[k], standard_state[k]) for k in plain_state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x), standard.eval()(x), atol=1e-3)


def test_the_config_reaches_the_model():
    off = configured_model(make_config(ASSIGNMENT_RECIPE), 10, width=0.0625)
    on = configured_model(make_config(ASSIGNMENT_RECIPE, {"weight_standardization": True}), 10, width=0.0625)
    assert not isinstance(off.conv1, StandardizedConv2d) and isinstance(on.conv1, StandardizedConv2d)
    default = configured_model(make_config(), 10, width=0.0625)  # the default recipe standardizes every convolution
    convs = [m for m in default.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, StandardizedConv2d) for m in convs)


def test_a_standardized_run_is_read_back_standardized(tmp_path):
    result = train(tiny_config(tmp_path, run_name="ws", epochs=1, weight_standardization=True, explain_at_end=False))
    run_dir = Path(result["run_dir"])
    _, _, model, _, _ = saved_run.load_run(str(run_dir))
    assert isinstance(model.layer4[1].conv2, StandardizedConv2d)
    # the saved model evaluates to the loss the run recorded, which a plain convolution would not give
    recorded = json.loads((run_dir / "history.json").read_text())["epochs"][-1]["val_loss"]
    evaluated = saved_run.evaluate_saved_run(str(run_dir), None, device="cpu")
    assert evaluated["test_loss"] == pytest.approx(recorded, rel=1e-5)
