"""How far to believe a CAM: a sanity check (model-parameter randomization) and faithfulness (deletion / insertion).

Sanity (Adebayo et al. 2018): on a deep copy of the model, the parameters are re-initialized cumulatively from the
head down (fc, layer4, layer3, layer2, layer1, stem); after each stage the maps are recomputed for the same images
and classes and compared with the trained model's by Spearman rank correlation and SSIM. A method that depends on
what the model learnt loses that similarity as the layers are randomized. An image whose trained map is constant
has no order to lose: it is left out of the means, and with none left the check is undefined (faithfulness_verdict).

Faithfulness (Petsiuk et al. 2018): the pixels are removed in the map's order, most relevant first, in `STEPS`
equal steps, by the fill 0 after normalization (the training mean), and the class probability is recorded after
each step; deletion AUC is the area under that curve (lower = more faithful). Insertion starts from the all-fill
image and puts the pixels back, most relevant first (higher = more faithful).

Baselines, always named: a faithful map must beat a *random order* of the same pixels. Scattered single pixels are
noise a CIFAR model never saw, so any order of them drops the probability fast; regions are what a CAM removes.
`random_regions` therefore shuffles whole cells of the map's native grid (4 x 4 cells of 8 x 8 pixels for layer4 at
32 x 32), averaged over `RANDOM_ORDERS` orders; `random_pixels` (single pixels) is available and labelled as such.

Everything here works on a batch at once and knows GradCAM's output shape (B x H x W in [0, 1]), nothing of
training. The model passed in is left as found: modes restored, parameters, `requires_grad` and `.grad` untouched,
no hooks left (the randomization works on a copy).
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ignite_cifar.explain.faithfulness_verdict import TARGETS as TARGETS  # the targets, where they were defined before
from ignite_cifar.explain.faithfulness_verdict import constant_maps, sanity_means, verdict
from ignite_cifar.explain.gradcam import GradCAM, resolve_layer

STEPS = 16
RANDOM_ORDERS = 3
SEED = 0
FILL = 0.0  # after normalization: the training split's mean colour
BASELINES = ("random_regions", "random_pixels")
# (stage, modules re-initialized at that stage); cumulative, head first. Stages a model lacks are skipped.
CASCADE = (("fc", ("fc",)), ("layer4", ("layer4",)), ("layer3", ("layer3",)), ("layer2", ("layer2",)),
           ("layer1", ("layer1",)), ("stem", ("conv1", "norm1")))


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside the block; every module's own train/eval flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training


def native_grid(model: nn.Module, layer: str, images: torch.Tensor) -> tuple[int, int]:
    """h x w of `layer`'s output for these images: the resolution a CAM of that layer really has."""
    seen: list[tuple[int, int]] = []
    handle = resolve_layer(model, layer).register_forward_hook(lambda m, i, out: seen.append(tuple(out.shape[-2:])))
    try:
        with torch.no_grad(), evaluating(model):
            model(images[:1])
    finally:
        handle.remove()
    return seen[0]


def class_probabilities(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                        batch_size: int = 256) -> torch.Tensor:
    """softmax(model(images))[i, classes[i]] for each image, in chunks, without gradients (N,)."""
    out = []
    with torch.no_grad(), evaluating(model):
        for start in range(0, len(images), batch_size):
            logits = model(images[start:start + batch_size]).float()
            out.append(torch.softmax(logits, dim=1).gather(1, classes[start:start + batch_size, None])[:, 0])
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------ deletion/insertion
def pixel_ranks(scores: torch.Tensor) -> torch.Tensor:
    """B x H x W scores -> each pixel's rank, 0 = most relevant; ties go to the lower pixel index (stable)."""
    flat = scores.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks.view_as(scores)


def random_region_scores(batch: int, grid: tuple[int, int], size: Sequence[int], generator: torch.Generator,
                         device: torch.device) -> torch.Tensor:
    """A random order of whole cells of the map's native grid, as B x H x W scores constant on each cell."""
    cells = torch.rand(batch, 1, *grid, generator=generator)
    return F.interpolate(cells, size=tuple(size), mode="nearest")[:, 0].to(device)


def random_pixel_scores(batch: int, size: Sequence[int], generator: torch.Generator,
                        device: torch.device) -> torch.Tensor:
    """A random order of single pixels, as B x H x W scores."""
    return torch.rand(batch, *size, generator=generator).to(device)


def endpoint_probabilities(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                           fill: float = FILL) -> torch.Tensor:
    """B x 2: the class probability of each image itself and of the all-`fill` image, the two points every order's
    deletion and insertion curves share."""
    flat = torch.full_like(images, fill)
    probs = class_probabilities(model, torch.cat([images, flat]), torch.cat([classes, classes]).to(images.device))
    return probs.view(2, len(images)).T


def perturbation_curves(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor,
                        steps: int = STEPS, fill: float = FILL,
                        ends: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(deletion, insertion) class-probability curves, each B x (steps + 1), for pixels taken in `scores`' order.

    Point k has round(k * H * W / steps) pixels removed (deletion: set to `fill`, all channels) or put back
    (insertion: the rest is `fill`); point 0 of deletion is the image itself, point `steps` the all-fill image.
    Those two ends are the same for every order: pass them as `ends` (endpoint_probabilities) to evaluate only the
    steps - 1 points between.
    """
    if ends is None:
        ends = endpoint_probabilities(model, images, classes, fill)
    original, flat = ends[:, :1], ends[:, 1:]
    if steps < 2:
        return torch.cat([original, flat], 1), torch.cat([flat, original], 1)
    ranks = pixel_ranks(scores)
    n = ranks[0].numel()
    counts = torch.round(torch.arange(1, steps, device=images.device) * n / steps).long()
    removed = (ranks[:, None] < counts[None, :, None, None])[:, :, None]  # B x (steps - 1) x 1 x H x W
    x = images[:, None]
    fill_t = torch.tensor(fill, dtype=images.dtype, device=images.device)
    perturbed = torch.cat([torch.where(removed, fill_t, x), torch.where(removed, x, fill_t)], dim=1)
    batch, points = perturbed.shape[:2]
    target = classes.to(images.device).repeat_interleave(points)
    probs = class_probabilities(model, perturbed.flatten(0, 1), target).view(batch, points)
    inner = steps - 1
    return (torch.cat([original, probs[:, :inner], flat], 1), torch.cat([flat, probs[:, inner:], original], 1))


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under curves sampled at equal steps over [0, 1] (trapezoid rule), per row."""
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[-1] - 1), dim=-1)


def faithfulness_curves(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, maps: torch.Tensor,
                        grid: tuple[int, int], baselines: Sequence[str] = ("random_regions",),
                        repeats: int = RANDOM_ORDERS, seed: int = SEED) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"map" and each baseline: (deletion, insertion) curves, B x (STEPS + 1)}; baselines averaged over `repeats`
    random orders drawn from `seed` (the global random state is not used)."""
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; choose from {', '.join(BASELINES)}")
    generator = torch.Generator().manual_seed(seed)
    size, batch = maps.shape[-2:], len(maps)
    ends = endpoint_probabilities(model, images, classes)
    out = {"map": perturbation_curves(model, images, classes, maps, ends=ends)}
    for name in baselines:
        runs = []
        for _ in range(repeats):
            scores = (random_region_scores(batch, grid, size, generator, maps.device) if name == "random_regions"
                      else random_pixel_scores(batch, size, generator, maps.device))
            runs.append(perturbation_curves(model, images, classes, scores, ends=ends))
        out[name] = tuple(torch.stack([r[i] for r in runs]).mean(0) for i in (0, 1))
    return out


# ------------------------------------------------------------------------------------------------ sanity
def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks along the last dimension, 0-based, tied values sharing their average rank (as scipy's rankdata)."""
    flat = x.flatten(1).contiguous()
    ordered = flat.sort(dim=1).values
    below = torch.searchsorted(ordered, flat, right=False)
    upto = torch.searchsorted(ordered, flat, right=True)
    return (below + upto - 1).to(torch.float64) / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (B x H x W each) -> (B,). A constant map orders nothing,
    so its correlation is 0 (not NaN); `assess` leaves the images whose trained map is constant out of its means."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    rho = (ra * rb).sum(1) / torch.where(denom > 0, denom, 1.0)
    return torch.where(denom > 0, rho, 0.0).float()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean structural similarity of maps in [0, 1] (B x H x W each) -> (B,), as scikit-image's default:
    a uniform `window` x `window` filter, sample covariances, data range 1, the mean over the windows inside."""
    window = min(window, a.shape[-1], a.shape[-2])
    window -= 1 - window % 2  # odd
    c1, c2 = 0.01**2, 0.03**2
    x, y = a[:, None].double(), b[:, None].double()
    kernel = torch.full((1, 1, window, window), 1.0 / window**2, dtype=x.dtype, device=x.device)
    mx, my = F.conv2d(x, kernel), F.conv2d(y, kernel)
    cov = window**2 / (window**2 - 1)
    vx = cov * (F.conv2d(x * x, kernel) - mx * mx)
    vy = cov * (F.conv2d(y * y, kernel) - my * my)
    vxy = cov * (F.conv2d(x * y, kernel) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).float()


def cascade_stages(model: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    """The CASCADE stages whose modules all exist in `model`."""
    names = {name for name, _ in model.named_modules()}
    return [(stage, mods) for stage, mods in CASCADE if all(m in names for m in mods)]


@torch.no_grad()
def reinitialize_(module: nn.Module, generator: torch.Generator) -> None:
    """Draw `module`'s parameters again from their initial distributions: convolutions Kaiming-normal (fan out, as
    models.py), linear layers PyTorch's default uniform, norm layers their reset (weight 1, bias 0)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 2 * bound - bound)
            if m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=generator) * 2 * bound - bound)
        elif hasattr(m, "reset_parameters") and not any(True for _ in m.children()):
            m.reset_parameters()


def randomization_cascade(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, maps: torch.Tensor,
                          layer: str, method: str, seed: int = SEED, keep: int = 0) -> dict[str, dict]:
    """{stage: {"spearman": (B,), "ssim": (B,)}} of the maps of a copy of `model` whose stages up to and including
    that one are re-initialized, against `maps` (the trained model's, same images and classes); with `keep`, also
    "maps": the first `keep` randomized maps of each stage (for a figure)."""
    generator = torch.Generator().manual_seed(seed)
    randomized = copy.deepcopy(model)
    out = {}
    for stage, modules in cascade_stages(randomized):
        for name in modules:
            reinitialize_(randomized.get_submodule(name), generator)
        with GradCAM(randomized, target_layer=layer, method=method) as cam:
            again = cam(images, class_idx=classes)
        out[stage] = {"spearman": spearman(maps, again), "ssim": ssim(maps, again)}
        if keep:
            out[stage]["maps"] = again[:keep]
    del randomized
    return out


# ------------------------------------------------------------------------------------------------ one call, plain data
@dataclass(frozen=True)
class Scoring:
    """What `assess` computes: the baselines (the first is the one ratios and gains compare with), whether to run
    the randomization cascade, and how many of its randomized maps to keep for a figure."""

    baselines: Sequence[str] = ("random_regions",)
    sanity: bool = True
    keep: int = 0


def assess(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, maps: torch.Tensor, layer: str,
           method: str, scoring: Scoring = Scoring()) -> dict:
    """Faithfulness (and, with `sanity`, the randomization cascade) of `maps` (B x H x W, GradCAM's output for
    `images` and `classes` at `layer` with `method`), as plain numbers: `per_image` lists, `means`, mean `curves`;
    with `keep`, `cascade_maps` {stage: the first `keep` randomized maps} as tensors (for a figure, not for JSON).

    Ratios and gains compare with `baselines[0]`; every key names the baseline it uses."""
    baselines, keep = scoring.baselines, scoring.keep
    grid = native_grid(model, layer, images)
    curves = faithfulness_curves(model, images, classes, maps, grid, baselines)
    out: dict = {"grid": list(grid), "cell_pixels": [maps.shape[-2] / grid[0], maps.shape[-1] / grid[1]],
                 "per_image": {}, "means": {}, "curves": {}}
    for kind, i in (("deletion", 0), ("insertion", 1)):
        for order, pair in curves.items():
            areas = auc(pair[i])
            out["per_image"][f"{kind}_auc/{order}"] = areas.tolist()
            out["means"][f"{kind}_auc/{order}"] = float(areas.mean())
            out["curves"][f"{kind}/{order}"] = pair[i].mean(0).tolist()
    base = baselines[0]
    out["means"][f"deletion_ratio/{base}"] = out["means"]["deletion_auc/map"] / out["means"][f"deletion_auc/{base}"]
    out["means"][f"insertion_gain/{base}"] = out["means"]["insertion_auc/map"] - out["means"][f"insertion_auc/{base}"]
    if scoring.sanity:  # the means leave out the images whose trained map is constant (faithfulness_verdict.py)
        cascade = randomization_cascade(model, images, classes, maps, layer, method, keep=keep)
        if keep:
            out["cascade_maps"] = {stage: scores.pop("maps") for stage, scores in cascade.items()}
        constant = constant_maps(maps)
        out["constant_maps"] = int(constant.sum())
        for stage, scores in cascade.items():
            for name, values in scores.items():
                out["per_image"][f"sanity_{name}/{stage}"] = values.tolist()
            out["means"].update(sanity_means(stage, scores, ~constant))
    out["verdict"] = verdict(out["means"], base, out.get("constant_maps", 0))
    return out
