"""Weight standardization (Qiao et al. 2019, "Micro-Batch Training with Batch-Channel Normalization and Weight
Standardization"): each output channel's kernel is shifted to mean 0 and scaled to variance 1 before the convolution.

The activations are still normalized by LayerNorm alone; this reparameterizes the convolutions' weights, which the
paper found smooths the loss landscape for networks whose norm layers do not use the batch (GroupNorm, LayerNorm).
"""

from __future__ import annotations

import torch
from torch import nn

WEIGHT_STD_EPS = 1e-6  # added to each kernel's variance; the kernels' variance at init is 2/fan_out, >= 4e-4 here


def standardized(weight: torch.Tensor, eps: float = WEIGHT_STD_EPS) -> torch.Tensor:
    """`weight` (out, in, kh, kw) with each output channel's kernel at mean 0 and (biased) variance 1."""
    dims = tuple(range(1, weight.ndim))
    variance, mean = torch.var_mean(weight, dim=dims, keepdim=True, correction=0)
    return (weight - mean) * torch.rsqrt(variance + eps)


class StandardizedConv2d(nn.Conv2d):
    """nn.Conv2d whose kernels are standardized at every forward; the stored `weight` stays the free parameter, so
    checkpoints, weight decay, the weight average and GradCAM's hooks see an ordinary convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardized(self.weight), self.bias)
