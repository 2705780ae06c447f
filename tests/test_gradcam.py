"""Tests for the hand-written, hook-based Grad-CAM / Grad-CAM++ (tiny models, fast)."""

from copy import deepcopy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from ignite_cifar.explain import gradcam
from ignite_cifar.explain.gradcam import (
    CAM_METHODS,
    GradCAM,
    UnknownLayerError,
    gradcam_pp_weights,
    gradcam_weights,
    valid_layer_names,
)
from ignite_cifar.model.resnet import build_model

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


# --------------------------------------------------------------------------- models


class GapLinear(nn.Module):
    """features -> global average pool -> linear: dy_c/dA_k(i, j) = W[c, k] / (h * w)."""

    def __init__(self, features: nn.Module, fc_weight: torch.Tensor):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(fc_weight.shape[1], fc_weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(fc_weight)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def identity_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels)[:, :, None, None])
    return conv


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.n1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.n2 = norm(c_out)
        self.shortcut = (
            nn.Identity() if stride == 1 and c_in == c_out
            else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        )

    def forward(self, x):
        out = F.relu(self.n1(self.conv1(x)))
        return F.relu(self.n2(self.conv2(out)) + self.shortcut(x))


def layer_norm(c):
    return nn.GroupNorm(1, c)  # per-sample normalization over C x H x W


class TinyResNet(nn.Module):
    """Same attribute names as the project's CIFAR ResNet; BatchNorm and Dropout make mode matter."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.norm1 = layer_norm(8)
        self.layer1 = nn.Sequential(Block(8, 8, 1, layer_norm), Block(8, 8, 1, layer_norm))
        self.layer2 = nn.Sequential(Block(8, 16, 2, layer_norm))
        self.layer3 = nn.Sequential(Block(16, 16, 1, nn.BatchNorm2d))
        self.layer4 = nn.Sequential(Block(16, 32, 2, layer_norm))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(32, num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = F.relu(self.norm1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(self.pool(x).flatten(1)))


def tiny_resnet(device, seed=0):
    torch.manual_seed(seed)
    return TinyResNet().to(device)


def images(device, batch=4, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g).to(device)


def minmax_upsample(cam, size):
    """Reference post-processing, written out per image."""
    out = []
    for m in cam:
        lo, hi = m.min(), m.max()
        m = torch.zeros_like(m) if hi - lo <= 0 else (m - lo) / (hi - lo)
        out.append(F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(out)


def hooks_snapshot(model):
    return {
        name: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for name, m in model.named_modules()
    }


# --------------------------------------------------------------------------- 1 + 7: hand-worked


def test_hand_worked_literal_gradcam_and_gradcampp(device):
    # A = input (identity 1x1 conv), 2 x 2 maps, h*w = 4 so g = W[c] / 4.
    a0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a1 = torch.tensor([[4.0, 3.0], [2.0, 1.0]])
    x = torch.stack([a0, a1])[None].to(device)
    model = GapLinear(identity_conv(2), torch.tensor([[1.0, -1.0], [0.5, 0.5]])).to(device)

    with GradCAM(model, "features") as cam:
        # class 0: alpha = [1/4, -1/4]; 0.25*(A0-A1) = [[-.75,-.25],[.25,.75]] -> ReLU clips the top row
        assert_close(cam(x, class_idx=0)[0], torch.tensor([[0.0, 0.0], [1 / 3, 1.0]], device=device))
        # class 1: 0.125*(A0+A1) = 0.625 everywhere: a flat map becomes zeros, not NaN
        assert_close(cam(x, class_idx=1)[0], torch.zeros(2, 2, device=device))

    with GradCAM(model, "features", method="gradcam++") as cam:
        # g0 = 1/4, g1 = -1/4, sum A_k = 10: alpha0 = g^2/(2g^2 + 10 g^3) = 1/4.5,
        # w0 = 4 * alpha0 * relu(g0) = 1/4.5, w1 = 0 (relu(g1) = 0) -> CAM = A0 / 4.5
        expected = torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]], device=device)
        assert_close(cam(x, class_idx=0)[0], expected)


def _random_gap_linear(device, seed=0):
    torch.manual_seed(seed)
    features = nn.Conv2d(3, 4, 3, stride=2, padding=1)  # 8x8 input -> 4x4 maps, upsampling matters
    return GapLinear(features, torch.randn(5, 4)).to(device)


@pytest.mark.parametrize("method", CAM_METHODS)
def test_gap_linear_matches_closed_form(device, method):
    model = _random_gap_linear(device)
    x = images(device, batch=6, size=8)
    classes = torch.tensor([0, 1, 2, 3, 4, 0], device=device)
    with GradCAM(model, "features", method=method) as cam:
        maps = cam(x, class_idx=classes)

    a = model.features(x).detach()
    hw = a.shape[2] * a.shape[3]
    g = model.fc.weight.detach()[classes] / hw  # B x K, constant over space
    if method == "gradcam":
        weights = g
    else:
        # alpha_k = g^2 / (2 g^2 + S_k g^3) = 1 / (2 + S_k g_k), summed over hw positions
        s = a.sum(dim=(2, 3))
        weights = hw * torch.relu(g) / (2 + s * g)
    raw = (weights[:, :, None, None] * a).sum(1)
    if method == "gradcam":
        assert (raw < 0).any() and (raw > 0).any(), "want a case where ReLU clips"
    expected = minmax_upsample(torch.relu(raw), x.shape[-2:])
    assert_close(maps, expected)


def test_weight_functions_on_hand_worked_values():
    # One channel, 2 x 2: A = [[1, 0], [0, 1]] (sum 2), g = [[1, -1], [0.5, 0]].
    a = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    g = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]]]])
    # Grad-CAM: the mean gradient, (1 - 1 + 0.5 + 0) / 4.
    assert_close(gradcam_weights(a, g), torch.tensor([[0.125]]))
    # Grad-CAM++: alpha = g^2 / (2 g^2 + 2 g^3) = 1 / (2 + 2 g) where g != 0: 1/4 at g = 1, 1/3 at g = 0.5;
    # times relu(g): 1/4 + 1/6; g = -1 adds nothing (relu), g = 0 nothing (0/0 taken as 0, not NaN).
    assert_close(gradcam_pp_weights(a, g), torch.tensor([[1 / 4 + 1 / 6]]))
    # zero gradients: denominator 0 everywhere, weights 0 rather than NaN
    assert torch.equal(gradcam_pp_weights(a, torch.zeros_like(g)), torch.zeros(1, 1))


def test_weight_functions_match_pytorch_grad_cam():
    """The channel weights against the library's own code (pytorch-grad-cam's get_cam_weights, numpy), on random
    non-negative activations and gradients of both signs with some exact zeros. The library adds 1e-6 to the
    Grad-CAM++ denominator 2 g^2 + S g^3; gradients of magnitude 0.5 or more keep that below 1e-6 of it."""
    from pytorch_grad_cam import GradCAM as LibGradCAM  # imported here: 4 s, only these tests need it
    from pytorch_grad_cam import GradCAMPlusPlus

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 4, 5, generator=g)
    grads = torch.randn(2, 3, 4, 5, generator=g)
    grads = grads.sign() * (0.5 + grads.abs())
    grads[torch.rand(grads.shape, generator=g) < 0.2] = 0.0
    for ours, theirs in ((gradcam_weights, LibGradCAM), (gradcam_pp_weights, GradCAMPlusPlus)):
        expected = theirs.get_cam_weights(None, None, None, None, a.numpy(), grads.numpy())
        assert_close(ours(a, grads), torch.from_numpy(expected).float(), atol=1e-6, rtol=1e-5)


class _Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


_NEXT = {"layer2": "layer3", "layer3": "layer4", "layer4": "pool"}  # the module that reads each stage's output


def _rescaled_at(model: nn.Module, layer: str, scale: float) -> tuple[nn.Module, nn.Module]:
    """A copy of `model` computing the same function, whose `layer` output is multiplied by `scale` (the returned
    module, the CAM target) and divided by it again before the next stage. The gradient at the target is then 1 /
    scale times the original's; Grad-CAM and Grad-CAM++ maps are unchanged (each channel's weight scales by 1 /
    scale and its activation by scale; in alpha = 1 / (2 + S g), S g does not change)."""
    copy = deepcopy(model)
    target = _Scale(scale)
    setattr(copy, layer, nn.Sequential(getattr(copy, layer), target))
    setattr(copy, _NEXT[layer], nn.Sequential(_Scale(1 / scale), getattr(copy, _NEXT[layer])))
    return copy.eval(), target


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    lo, hi = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
    return (maps - lo) / (hi - lo)


@pytest.mark.parametrize("method", CAM_METHODS)
def test_resnet_maps_match_pytorch_grad_cam(method):
    """Our maps against pytorch-grad-cam's on the project's ResNet18 (tiny width, eval mode, fixed weights) at
    layer2 (16x16 maps) and layer3 (8x8), where the gradient varies over space (with a pooled linear head it is one
    number per channel, as it is at layer4 (4x4), which feeds the pool directly: checked too).

    Alignment: the library computes ReLU(sum_k w_k A_k), scales each map by (m - min) / (max + 1e-7), resizes it
    to the input with cv2 (bilinear, pixel centres at half-pixel offsets, as F.interpolate(align_corners=False))
    and scales the result again the same way. Ours scales by exact min-max before upsampling and not after, so its
    maximum at input size can be below 1 (0.62 here at layer2). Min-max is unchanged by a positive affine map, so
    normalize(upsample(normalize(cam))) = normalize(upsample(cam)): we min-max ours once more at input size and
    compare; the library's 1e-7 then moves values by about 1e-7. For Grad-CAM++ the library also adds 1e-6 to
    alpha's denominator 2 g^2 + S g^3, with gradients near 1e-3 here a change of up to 3e-2 in the maps; so the
    library explains the same network with the target's output scaled by 1e-3 (_rescaled_at): same maps in exact
    arithmetic, gradients 1e3 times larger, its 1e-6 negligible. Ours is checked to give the same maps on both.

    Tolerance 1e-5 on [0, 1] maps: float32 rounding in the two pipelines; the largest difference measured was 7e-7
    (Grad-CAM++ at layer2), 3e-2 without the rescaling."""
    from pytorch_grad_cam import GradCAM as LibGradCAM  # imported here: 4 s, only these tests need it
    from pytorch_grad_cam import GradCAMPlusPlus

    torch.manual_seed(0)
    model = build_model("resnet18", width=0.125).eval()  # 8 base channels
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for layer in ("layer2", "layer3", "layer4"):
        with GradCAM(model, layer, method=method) as cam:
            ours = cam(x)
            predicted = cam.last_predictions
        rescaled, target = _rescaled_at(model, layer, 1e-3)
        with GradCAM(rescaled, target, method=method) as cam:
            assert_close(cam(x), ours, atol=1e-5, rtol=0)  # the rescaling leaves our maps as they were
        library = LibGradCAM if method == "gradcam" else GradCAMPlusPlus
        with library(model=rescaled, target_layers=[target]) as lib:
            theirs = torch.from_numpy(lib(input_tensor=x, targets=None))  # None: each image's predicted class
            assert torch.equal(lib.outputs.argmax(1), predicted)
            gradient = lib.activations_and_grads.gradients[0]
        spread = gradient.std(dim=(2, 3)).amax() / gradient.abs().amax()
        assert spread > 0.1 if layer != "layer4" else spread < 1e-5  # layer4 feeds the pool: flat gradient
        assert theirs.shape == ours.shape == (4, 32, 32)
        assert (ours.amax(dim=(1, 2)) > ours.amin(dim=(1, 2))).all()  # no flat map: the comparison means something
        assert_close(_minmax(ours), theirs, atol=1e-5, rtol=0, msg=f"{method} at {layer}")


def test_hook_captured_gradient_is_the_one_used(monkeypatch):
    model = _random_gap_linear("cpu")
    x = images("cpu", batch=2, size=8)
    seen = []
    original = gradcam._FeatureTap._on_gradient

    def record(self, grad):
        seen.append(grad.clone())
        original(self, grad)

    monkeypatch.setattr(gradcam._FeatureTap, "_on_gradient", record)
    with GradCAM(model, "features") as cam:
        maps = cam(x, class_idx=[1, 3])
    assert len(seen) == 1  # one backward for the whole batch
    expected = (model.fc.weight.detach()[[1, 3]] / 16)[:, :, None, None].expand(-1, -1, 4, 4)
    assert_close(seen[0], expected)
    assert maps.amax() > 0

    # If the tensor hook stores zeros, the maps become zeros: the hook's gradient is what's used.
    monkeypatch.setattr(gradcam._FeatureTap, "_on_gradient", lambda self, g: original(self, 0 * g))
    with GradCAM(model, "features") as cam:
        assert torch.equal(cam(x, class_idx=[1, 3]), torch.zeros(2, 8, 8))


# --------------------------------------------------------------------------- 2: batch vs single


@pytest.mark.parametrize("method", CAM_METHODS)
def test_batch_equals_one_at_a_time(device, method):
    model = tiny_resnet(device)
    model.train()  # GradCAM must switch to eval itself (BatchNorm/Dropout would mix/perturb)
    x = images(device, batch=4)
    # cuDNN's TF32 convolutions round differently for a batch of 4 and of 1 (up to 2.4e-4 on an H200)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False), GradCAM(model, "layer4", method=method) as cam:
        batch_maps = cam(x)
        batch_classes = cam.last_class_idx.clone()
        singles = []
        for i in range(len(x)):
            singles.append(cam(x[i : i + 1])[0])
            assert cam.last_class_idx.item() == batch_classes[i].item()
    assert_close(batch_maps, torch.stack(singles), atol=1e-4, rtol=1e-4)
    assert batch_maps.amax() > 0


# --------------------------------------------------------------------------- 3: hooks gone


def test_hooks_removed_after_with_and_after_exception(device):
    model = tiny_resnet(device)
    before = hooks_snapshot(model)
    assert all(v == (0, 0, 0) for v in before.values())
    x = images(device, batch=2)

    with GradCAM(model, "layer3") as cam:
        assert len(model.layer3._forward_hooks) == 1
        cam(x)
    assert hooks_snapshot(model) == before

    with pytest.raises(KeyError, match="boom"):
        with GradCAM(model, model.layer2) as cam:
            cam(x)
            raise KeyError("boom")
    assert hooks_snapshot(model) == before

    cam = GradCAM(model, "layer1.0")
    cam.release()
    cam.release()  # idempotent
    assert hooks_snapshot(model) == before
    with pytest.raises(RuntimeError, match="release"):
        cam(x)


def test_normal_forward_inside_with_is_not_recorded():
    model = tiny_resnet("cpu")
    x = images("cpu", batch=2)
    with GradCAM(model, "layer4") as cam:
        model(x)  # the caller's own forward: nothing kept, graph not pinned
        assert cam._tap.activations is None
        cam(x)
        assert cam._tap.activations is None and cam._tap.gradients is None


# --------------------------------------------------------------------------- 4: state restored


def _state(model):
    return (
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: p.grad for n, p in model.named_parameters()},
    )


@pytest.mark.parametrize("method", CAM_METHODS)
def test_model_state_restored(device, method):
    model = tiny_resnet(device)
    model.train()
    model.layer3.eval()
    model.layer1[1].n1.eval()
    for p in list(model.conv1.parameters()) + list(model.layer1.parameters()):
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    for i, p in enumerate(model.parameters()):
        if i % 2 == 0:
            p.grad = torch.randn(p.shape, generator=g).to(device)
    modes, flags, grads = _state(model)
    grad_values = {n: None if t is None else t.clone() for n, t in grads.items()}

    def check():
        now_modes, now_flags, now_grads = _state(model)
        assert now_modes == modes
        assert now_flags == flags
        for n, t in now_grads.items():
            assert t is grads[n]  # same object (or still None)
            if t is not None:
                assert torch.equal(t, grad_values[n])

    x = images(device, batch=3)
    with GradCAM(model, "layer4", method=method) as cam:
        cam(x)
        check()
        with pytest.raises(ValueError):
            cam(x, class_idx=99)  # an error inside the call restores state too
        check()
    check()


# --------------------------------------------------------------------------- 5: flat maps


class IgnoresFeatures(nn.Module):
    """Runs the target layer but the logits do not depend on it."""

    def __init__(self, frozen_constant=False):
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(3, 5)
        self.frozen_constant = frozen_constant
        if frozen_constant:
            self.requires_grad_(False)

    def forward(self, x):
        self.features(x)
        if self.frozen_constant:  # logits need no grad at all
            return self.fc.bias.expand(x.shape[0], -1)
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", CAM_METHODS)
def test_flat_maps_are_zero_not_nan(device, method):
    torch.manual_seed(0)
    x = images(device, batch=3, size=8)
    # Non-negative activations, all-negative class weights: ReLU leaves nothing.
    negative = GapLinear(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), -torch.rand(5, 4) - 0.1)
    models = [negative, IgnoresFeatures(), IgnoresFeatures(frozen_constant=True)]
    for model in models:
        model.to(device)
        with GradCAM(model, "features", method=method) as cam:
            maps = cam(x, class_idx=2)
        assert not torch.isnan(maps).any()
        assert torch.equal(maps, torch.zeros(3, 8, 8, device=device))


# --------------------------------------------------------------------------- 6: output contract


@pytest.mark.parametrize("method", CAM_METHODS)
def test_output_range_shape_device_detached(device, method):
    model = tiny_resnet(device)
    x = images(device, batch=5, size=16).requires_grad_(True)
    with GradCAM(model, "layer2", method=method) as cam:
        maps = cam(x)
    assert maps.shape == (5, 16, 16)
    assert maps.dtype == torch.float32
    assert maps.device == x.device
    assert not maps.requires_grad and maps.grad_fn is None
    assert maps.min() >= 0 and maps.max() <= 1
    assert x.grad is None  # the caller's images are not differentiated
    for t in (cam.last_logits, cam.last_predictions, cam.last_class_idx):
        assert t.device == x.device and not t.requires_grad
    assert cam.last_logits.shape == (5, 10)


def test_non_square_input_is_upsampled_to_its_size():
    model = tiny_resnet("cpu")
    x = torch.randn(2, 3, 16, 24)
    with GradCAM(model, "layer4") as cam:
        assert cam(x).shape == (2, 16, 24)


# --------------------------------------------------------------------------- 8: errors


def test_unknown_layer_lists_valid_names():
    model = tiny_resnet("cpu")
    names = valid_layer_names(model)
    for expected in ("conv1", "norm1", "layer1", "layer1.0", "layer2", "layer3", "layer4", "fc"):
        assert expected in names
    with pytest.raises(UnknownLayerError) as info:
        GradCAM(model, "layer5")
    assert isinstance(info.value, ValueError)
    for expected in ("layer5", "conv1", "layer1", "layer2", "layer3", "layer4", "fc"):
        assert expected in str(info.value)
    with pytest.raises(UnknownLayerError):
        GradCAM(model, "")
    with pytest.raises(ValueError, match="not a submodule"):
        GradCAM(model, nn.Conv2d(3, 3, 1))
    assert hooks_snapshot(model) == {n: (0, 0, 0) for n, _ in model.named_modules()}


def test_deeper_dotted_name_and_module_give_same_maps():
    model = tiny_resnet("cpu")
    x = images("cpu", batch=2)
    with GradCAM(model, "layer4.0.conv2") as cam:
        by_name = cam(x)
    with GradCAM(model, model.layer4[0].conv2) as cam:
        assert torch.equal(cam(x), by_name)


def test_unknown_method_and_bad_class_idx():
    model = tiny_resnet("cpu")
    with pytest.raises(ValueError) as info:
        GradCAM(model, "layer4", method="scorecam")
    assert "gradcam" in str(info.value) and "gradcam++" in str(info.value)
    x = images("cpu", batch=3)
    with GradCAM(model, "layer4") as cam:
        with pytest.raises(ValueError):
            cam(x, class_idx=10)
        with pytest.raises(ValueError):
            cam(x, class_idx=[0, 1])
        with pytest.raises(ValueError):
            cam(x[0], class_idx=0)  # not a batch


# --------------------------------------------------------------------------- 9: class_idx forms


def test_class_idx_forms(device):
    model = tiny_resnet(device)
    x = images(device, batch=3)
    with GradCAM(model, "layer4") as cam:
        by_none = cam(x, class_idx=None)
        predicted = cam.last_predictions.clone()
        assert torch.equal(cam.last_class_idx, predicted)
        assert torch.equal(predicted, model.eval()(x).argmax(1))
        assert torch.equal(cam(x, class_idx=predicted), by_none)
        assert torch.equal(cam(x, class_idx=predicted.tolist()), by_none)

        by_int = cam(x, class_idx=7)
        assert cam.last_class_idx.tolist() == [7, 7, 7]
        assert torch.equal(cam.last_predictions, predicted)  # predictions independent of class_idx
        assert torch.equal(cam(x, class_idx=[7, 7, 7]), by_int)
        assert torch.equal(cam(x, class_idx=torch.tensor(7)), by_int)

        mixed = cam(x, class_idx=[1, 2, 3])
        assert cam.last_class_idx.tolist() == [1, 2, 3]
        for i, c in enumerate([1, 2, 3]):
            assert_close(mixed[i], cam(x, class_idx=c)[i])


# --------------------------------------------------------------------------- 10: no_grad / frozen


@pytest.mark.parametrize("method", CAM_METHODS)
def test_no_grad_inference_mode_and_frozen_model(device, method):
    model = tiny_resnet(device)
    x = images(device, batch=3)
    with GradCAM(model, "layer3", method=method) as cam:
        reference = cam(x)
        with torch.no_grad():
            assert_close(cam(x), reference)
        with torch.inference_mode():
            x_inf = x.clone()
            assert_close(cam(x_inf), reference)
        model.requires_grad_(False)
        assert_close(cam(x), reference)
        with torch.no_grad():
            assert_close(cam(x), reference)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert reference.amax() > 0


def test_parameter_free_feature_layer():
    # No parameter before the target layer: the graph comes from the images alone.
    model = GapLinear(nn.AvgPool2d(2), torch.randn(4, 3))
    model.requires_grad_(False)
    x = images("cpu", batch=2, size=8)
    with torch.no_grad(), GradCAM(model, "features") as cam:
        maps = cam(x, class_idx=1)
    a = F.avg_pool2d(x, 2)
    raw = (model.fc.weight[1] / 16)[None, :, None, None] * a
    assert_close(maps, minmax_upsample(torch.relu(raw.sum(1)), (8, 8)))
