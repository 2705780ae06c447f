"""Models: ResNet18/34 sizes and shapes, width multiplier, LayerNorm (GroupNorm(1, C)) only and batch independent."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ignite_cifar.config import SHIPPED_CONFIGS, make_config, read_yaml
from ignite_cifar.model.resnet import ResNet, build_model
from ignite_cifar.model.standardized_conv import StandardizedConv2d
from ignite_cifar.training.process import build_model_and_optimizer, resolve_precision


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet18_has_about_11_2_million_parameters():
    model = build_model("resnet18", num_classes=10, norm="layer", width=1.0)
    n = _params(model)
    assert 11_100_000 <= n <= 11_300_000
    assert n == 11_173_962


def test_resnet_stage_depths():
    r18, r34 = build_model("resnet18", width=0.125), build_model("resnet34", width=0.125)
    assert [len(getattr(r18, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert [len(getattr(r34, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert _params(r34) > _params(r18)


@pytest.mark.parametrize("name, classes", [("resnet18", 10), ("resnet34", 7)])
def test_output_shape(name, classes):
    torch.manual_seed(0)
    model = build_model(name, num_classes=classes, width=0.125).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, classes) and torch.isfinite(out).all()


def test_width_multiplier_scales_channels():
    model = build_model("resnet18", width=0.25)
    assert model.conv1.out_channels == 16
    assert [getattr(model, f"layer{i}")[-1].conv2.out_channels for i in range(1, 5)] == [16, 32, 64, 128]
    assert model.fc.in_features == 128
    full = build_model("resnet18", width=1.0)
    assert full.conv1.out_channels == 64 and full.fc.in_features == 512


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError, match="resnet18, resnet34"):
        build_model("vgg")


# ---------------------------------------------------------------- LayerNorm only
def _norm_layers(model):
    return [m for m in model.modules() if "norm" in type(m).__name__.lower()]


@pytest.mark.parametrize("name", [None, *SHIPPED_CONFIGS])
def test_the_trainers_model_for_each_shipped_config_has_layer_norm_only(name):
    """Built as the trainer builds it (training/process.build_model_and_optimizer: configured_model with the
    config's weight standardization, then idist.auto_model); None is the default config. No BatchNorm of any kind
    (SyncBatchNorm and the lazy ones are _BatchNorm too), and every normalization layer is GroupNorm(1, C), a
    LayerNorm over (C, H, W) with a per-channel affine, right after a convolution with C outputs."""
    config = make_config(read_yaml(name) if name else {})
    cpu = torch.device("cpu")
    network = build_model_and_optimizer(config, 10, cpu, resolve_precision(config, cpu))
    model = network.base_model
    assert isinstance(model, ResNet)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(isinstance(c, StandardizedConv2d) == config.weight_standardization for c in convs)
    for module in network.model.modules():
        assert not isinstance(module, nn.modules.batchnorm._BatchNorm), type(module)
        assert "batchnorm" not in type(module).__name__.lower(), type(module)
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.RMSNorm)
    norms = [m for m in model.modules() if isinstance(m, norm_types)]
    assert norms == _norm_layers(model)  # nothing normalizes under another name
    assert len(norms) == (20 if config.model == "resnet18" else 36)  # stem + 2 per block + 3 shortcuts
    assert len(convs) == len(norms)
    for conv, norm in zip(convs, norms, strict=True):  # module order: each norm follows its convolution
        assert type(norm) is nn.GroupNorm and norm.num_groups == 1 and norm.affine, norm
        assert norm.num_channels == conv.out_channels, (conv, norm)


def test_every_layer_norm_follows_a_conv_with_matching_channels():
    model = build_model("resnet18", width=0.25)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = _norm_layers(model)
    assert len(convs) == len(norms)
    assert sorted(c.out_channels for c in convs) == sorted(n.num_channels for n in norms)


def _capture_norm_outputs(model, x):
    outputs = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().clone()))
             for m in _norm_layers(model)]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, outputs


def test_layer_norm_is_batch_independent():
    torch.manual_seed(0)
    model = build_model("resnet18", width=0.25).train()  # train mode: BatchNorm would mix the batch here
    x = torch.randn(4, 3, 32, 32)
    y = x.clone()
    y[1:] = torch.randn(3, 3, 32, 32) * 3 + 1
    out_x, norms_x = _capture_norm_outputs(model, x)
    out_y, norms_y = _capture_norm_outputs(model, y)
    alone, _ = _capture_norm_outputs(model, x[:1])
    assert torch.allclose(out_x[0], out_y[0], atol=1e-5)
    assert torch.allclose(out_x[0], alone[0], atol=1e-5)
    for a, b in zip(norms_x, norms_y, strict=True):
        assert torch.allclose(a[0], b[0], atol=1e-5)
    assert not torch.allclose(out_x[1], out_y[1], atol=1e-3)  # the other samples did change


@pytest.mark.parametrize("width", [1.0, 0.125])
def test_layer_norm_normalizes_each_sample_over_c_h_w(width):
    torch.manual_seed(0)
    model = build_model("resnet18", width=width)
    norms = _norm_layers(model)
    for m in norms:  # at init the affine part is the identity
        assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
    x = torch.cat([torch.randn(1, 3, 32, 32), 5 * torch.randn(1, 3, 32, 32) + 2])
    _, outputs = _capture_norm_outputs(model, x)
    assert len(outputs) == len(norms) == 20
    for out in outputs:
        per_sample = out.flatten(1).double()
        assert torch.allclose(per_sample.mean(1), torch.zeros(2, dtype=torch.double), atol=1e-4)
        assert torch.allclose(per_sample.var(1, unbiased=False), torch.ones(2, dtype=torch.double), atol=2e-3)
        # ... but not per channel: that would be InstanceNorm, not LayerNorm over (C, H, W)
        per_channel = out.transpose(0, 1).flatten(1).double()
        assert per_channel.mean(1).abs().max() > 1e-2


# ---------------------------------------------------------------- zero-init of the residual branches
def _blocks(model):
    from ignite_cifar.model.resnet import BasicBlock

    return [m for m in model.modules() if isinstance(m, BasicBlock)]


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_zero_init_residual_makes_every_block_start_as_the_identity(name):
    torch.manual_seed(0)
    model = build_model(name, width=0.125, zero_init_residual=True).eval()
    blocks = _blocks(model)
    assert len(blocks) == (8 if name == "resnet18" else 16)
    x = model.relu(model.norm1(model.conv1(torch.randn(4, 3, 32, 32))))
    identity_blocks = 0
    with torch.no_grad():
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in stage:
                out = block(x.clone())  # the block's ReLU is in place: keep x for the comparison
                # the residual branch adds exactly 0: the block is relu(shortcut(x))
                assert torch.equal(out, torch.relu(block.shortcut(x)))
                if isinstance(block.shortcut, nn.Identity):
                    assert torch.equal(out, torch.relu(x))
                    identity_blocks += 1
                x = out
    assert identity_blocks == len(blocks) - 3  # the first block of stages 2-4 downsamples


def test_without_zero_init_the_residual_branch_is_not_zero():
    torch.manual_seed(0)
    model = build_model("resnet18", width=0.125).eval()
    block = model.layer1[0]
    x = torch.relu(torch.randn(2, 8, 32, 32))
    with torch.no_grad():
        assert not torch.allclose(block(x.clone()), torch.relu(x), atol=1e-3)
    assert all(torch.equal(b.norm2.weight, torch.ones_like(b.norm2.weight)) for b in _blocks(model))


def test_zero_init_touches_only_the_last_norm_of_each_block():
    torch.manual_seed(0)
    plain = build_model("resnet18", width=0.125)
    torch.manual_seed(0)
    zeroed = build_model("resnet18", width=0.125, zero_init_residual=True)
    differ = [k for k, v in plain.state_dict().items() if not torch.equal(v, zeroed.state_dict()[k])]
    assert differ and all(k.endswith("norm2.weight") for k in differ)
    assert len(differ) == len(_blocks(zeroed))
