"""Hook-based Grad-CAM and Grad-CAM++ for convolutional classifiers (no CAM library).

Usage::

    with GradCAM(model, target_layer="layer4", method="gradcam") as cam:
        maps = cam(images, class_idx=None)   # B x H x W in [0, 1], detached, on images.device
        explained = cam.last_class_idx       # classes the maps explain (B,)
        predicted = cam.last_predictions     # argmax of the logits (B,)

Pipeline per batch: one forward (a forward hook keeps the target layer's output A and puts a
tensor hook on it that keeps dY/dA), one backward of the sum of the selected logits,
channel weights (the only step where the methods differ), CAM = ReLU(sum_k w_k A_k),
per-image min-max scaling to [0, 1], then bilinear upsampling to the input's H x W.

Normalization happens *before* upsampling: min/max are exact on the small map, and bilinear
interpolation (align_corners=False) takes convex combinations, so the result stays in [0, 1].
The upsampled map's maximum can be a little below 1 and its minimum a little above 0,
because output pixel centres need not fall exactly on feature-map cell centres.

The model must not mix samples (e.g. BatchNorm in train mode): the whole batch shares one
backward pass, so image i's gradient must depend on image i only. GradCAM puts the model in
eval mode for the call, which covers BatchNorm and Dropout. The target layer's output must
not be modified in place downstream (e.g. by ReLU(inplace=True)), and must be larger than
1 x 1: a single-cell map is flat, and flat maps come back as zeros.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ignite_cifar.config_checks import CAM_METHODS
from ignite_cifar.errors import UserError

ClassIdx = Union[None, int, Sequence[int], torch.Tensor]

# A map whose range is below this fraction of its maximum counts as flat. Relative, because
# gradients (hence CAM values) can be tiny in absolute terms without being meaningless.
_FLAT_RTOL = 1e-6

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class UnknownLayerError(UserError, ValueError):
    """A target layer name that does not name a submodule of the model."""


def valid_layer_names(model: nn.Module) -> list[str]:
    """Suggested target-layer names: top-level children plus the blocks of top-level containers.

    For a ResNet: ``conv1, ..., layer1, layer1.0, layer1.1, ..., layer4, fc``. Any dotted
    submodule name is accepted as a target; this short list keeps error messages readable.
    """
    names = []
    for name, child in model.named_children():
        names.append(name)
        if isinstance(child, _CONTAINERS):
            names.extend(f"{name}.{sub}" for sub, _ in child.named_children())
    return names


def resolve_layer(model: nn.Module, target_layer: nn.Module | str) -> nn.Module:
    """Return the target module given the module itself or its dotted name in ``model``."""
    if isinstance(target_layer, nn.Module):
        if not any(m is target_layer for m in model.modules()):
            raise ValueError("target_layer is not a submodule of model")
        return target_layer
    try:
        if not target_layer:  # get_submodule("") would return the model itself
            raise AttributeError(target_layer)
        return model.get_submodule(target_layer)
    except AttributeError:
        raise UnknownLayerError(
            f"unknown target layer {target_layer!r}; valid names: "
            f"{', '.join(valid_layer_names(model))} (or any deeper dotted submodule name)"
        ) from None


def gradcam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights: spatial mean of dY_c/dA_k, B x K."""
    return gradients.mean(dim=(2, 3))


def gradcam_pp_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ closed-form channel weights, B x K.

    alpha_kij = g_kij^2 / (2 g_kij^2 + (sum_ab A_kab) g_kij^3), w_k = sum_ij alpha_kij relu(g_kij)
    (Chattopadhay et al., 2018). Where the denominator is 0 (g = 0, or an exact cancellation)
    alpha is taken as 0 instead of NaN/inf.
    """
    g2 = gradients.pow(2)
    denom = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g2 * gradients
    nonzero = denom != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denom, torch.ones_like(denom)), 0.0)
    return (alpha * gradients.clamp_min(0)).sum(dim=(2, 3))


_WEIGHTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradcam": gradcam_weights,
    "gradcam++": gradcam_pp_weights,
}


class _FeatureTap:
    """Owns the hooks on the target layer: its output A (forward hook) and dY/dA (tensor hook)."""

    def __init__(self, layer: nn.Module):
        self.armed = False
        self.activations: torch.Tensor | None = None
        self.gradients: torch.Tensor | None = None
        self._handle = layer.register_forward_hook(self._on_forward)

    def _on_forward(self, module, inputs, output):
        # Record only during GradCAM's own forward: the model may be used normally inside the
        # `with` block, and keeping A there would pin its autograd graph in memory.
        if not self.armed:
            return
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise TypeError("target layer must output a B x K x h x w tensor")
        if self.activations is not None:
            # Two outputs would leave A and dY/dA from different calls paired together.
            raise RuntimeError("target layer ran more than once in one forward; pick another")
        self.activations = output
        if output.requires_grad:
            output.register_hook(self._on_gradient)

    def _on_gradient(self, grad: torch.Tensor) -> None:
        self.gradients = grad

    def clear(self) -> None:
        self.activations = self.gradients = None

    def release(self) -> None:
        self._handle.remove()
        self.clear()


class GradCAM:
    """Grad-CAM / Grad-CAM++ of ``model`` at ``target_layer`` (a module or its dotted name).

    Use as a context manager (or call :meth:`release`) so the hook is removed afterwards.
    Each call leaves the model as it found it: per-module train/eval flags are restored, and
    parameters' ``requires_grad`` and ``.grad`` are never touched (gradients are taken with
    ``torch.autograd.grad`` w.r.t. the activations only; the graph is built by making a
    detached copy of the images require grad, so frozen models and ``no_grad`` callers work).

    After each call: ``last_logits`` (B x C), ``last_predictions`` (their argmax) and
    ``last_class_idx`` (the classes the maps explain) are detached tensors on the images' device.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str, method: str = "gradcam"):
        if method not in CAM_METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(CAM_METHODS)}")
        self.model = model
        self.method = method
        self.target_layer = resolve_layer(model, target_layer)
        self._tap: _FeatureTap | None = _FeatureTap(self.target_layer)
        self.last_logits: torch.Tensor | None = None
        self.last_predictions: torch.Tensor | None = None
        self.last_class_idx: torch.Tensor | None = None

    def __enter__(self) -> "GradCAM":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Remove the hooks; the object cannot compute maps afterwards."""
        if self._tap is not None:
            self._tap.release()
            self._tap = None

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """The one step in which the methods differ: (A, dY/dA), both B x K x h x w -> B x K."""
        return _WEIGHTS[self.method](activations, gradients)

    def __call__(self, images: torch.Tensor, class_idx: ClassIdx = None) -> torch.Tensor:
        """B x H x W maps in [0, 1] for ``images`` (B x C x H x W).

        ``class_idx``: None explains each image's predicted class; an int the same class for
        all; a sequence / 1-D tensor of length B one class per image.
        """
        if self._tap is None:
            raise RuntimeError("GradCAM used after release()")
        if images.dim() != 4:
            raise ValueError(f"images must be B x C x H x W, got shape {tuple(images.shape)}")
        tap = self._tap
        modes = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.eval()
            # inference_mode(False)/enable_grad: work even when the caller disabled autograd.
            with torch.inference_mode(False), torch.enable_grad():
                x = images.clone() if images.is_inference() else images
                x = x.detach().requires_grad_(True)
                tap.armed = True
                logits = self.model(x)
                tap.armed = False
                if tap.activations is None:
                    raise RuntimeError("target layer did not run in the model's forward")
                if logits.dim() != 2:
                    raise ValueError(f"model must return B x C logits, got {tuple(logits.shape)}")
                classes = _select_classes(logits, class_idx)
                score = logits.gather(1, classes[:, None]).sum()
                if score.requires_grad:
                    # Fires the tensor hook on A; the returned copy is not used.
                    torch.autograd.grad(score, tap.activations, allow_unused=True)
            activations = tap.activations.detach().float()
            # No captured gradient means the scores do not depend on A: all-zero weights.
            gradients = (
                torch.zeros_like(activations) if tap.gradients is None
                else tap.gradients.detach().float()
            )
            maps = self._maps(activations, gradients, images.shape[-2:])
            self.last_logits = logits.detach()
            self.last_predictions = self.last_logits.argmax(dim=1)
            self.last_class_idx = classes
            return maps
        finally:
            tap.armed = False
            tap.clear()
            for module, training in modes:
                module.training = training

    def _maps(self, activations, gradients, size) -> torch.Tensor:
        weights = self.channel_weights(activations, gradients)
        cam = F.relu((weights[:, :, None, None] * activations).sum(dim=1))
        lo = cam.amin(dim=(1, 2), keepdim=True)
        hi = cam.amax(dim=(1, 2), keepdim=True)
        span = hi - lo
        flat = span <= _FLAT_RTOL * hi  # includes the all-zero map (0 <= 0)
        cam = torch.where(flat, 0.0, (cam - lo) / torch.where(flat, 1.0, span))
        cam = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)
        # Interpolation is convex; the clamp only removes float rounding past the ends.
        return cam[:, 0].clamp_(0.0, 1.0)


def _select_classes(logits: torch.Tensor, class_idx: ClassIdx) -> torch.Tensor:
    """Class per image as a (B,) long tensor on the logits' device."""
    batch, num_classes = logits.shape
    if class_idx is None:
        return logits.detach().argmax(dim=1)
    idx = torch.as_tensor(class_idx, dtype=torch.long, device=logits.device)
    if idx.dim() == 0:
        idx = idx.repeat(batch)
    if idx.shape != (batch,):
        raise ValueError(f"class_idx must be an int or have length {batch}, got {tuple(idx.shape)}")
    if bool(((idx < 0) | (idx >= num_classes)).any()):
        raise ValueError(f"class_idx out of range for {num_classes} classes: {idx.tolist()}")
    return idx
