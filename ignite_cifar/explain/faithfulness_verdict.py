"""The faithfulness scores judged against the project's targets, and where a comparison of maps is undefined.

A constant map (GradCAM's output where every weighted activation is negative, or a model that diverged: the same
map for every image) orders no pixel. Its Spearman correlation with any other map is undefined (faithfulness.spearman
reports 0, which would read as a perfect sanity result) and its SSIM with another constant map is 1, so the sanity
means are taken over the images whose trained map is not constant, and with none left the check is undefined, never
passed.
"""

from __future__ import annotations

import torch

# The project's targets for a trained model (default layer and method, against random regions).
TARGETS = {"deletion_ratio_max": 0.75, "insertion_gain_min": 0.1, "spearman_after_layer4_max": 0.3}
UNDEFINED = "undefined (constant maps)"


def constant_maps(maps: torch.Tensor) -> torch.Tensor:
    """(B,) bools: which of the B x H x W maps hold one value everywhere."""
    flat = maps.flatten(1)
    return flat.amax(1) == flat.amin(1)


def sanity_means(stage: str, scores: dict[str, torch.Tensor], defined: torch.Tensor) -> dict[str, float]:
    """{sanity_<score>/<stage>: mean over the images whose trained map is not constant}; {} when there are none."""
    if not bool(defined.any()):
        return {}
    return {f"sanity_{name}/{stage}": float(values[defined.to(values.device)].mean())
            for name, values in scores.items()}


def verdict(means: dict, baseline: str = "random_regions", constant: int = 0) -> dict:
    """The targets applied to `means`: faithful (deletion and insertion beat `baseline` by the margins)
    and sane (Spearman after re-initializing fc and layer4 at most the limit; None when not measured, or undefined:
    every one of the maps constant, `constant` of them). `missed` says, for each faithfulness target not met, the
    measured value against the target, to four decimals (a gain of 0.0997 prints as +0.100 at three). `sanity`
    says it in words: passed, failed, not measured or undefined (constant maps)."""
    ratio, gain = means[f"deletion_ratio/{baseline}"], means[f"insertion_gain/{baseline}"]
    missed = []
    if not ratio <= TARGETS["deletion_ratio_max"]:
        missed.append(f"deletion ratio {ratio:.4f} above {TARGETS['deletion_ratio_max']}")
    if not gain >= TARGETS["insertion_gain_min"]:
        missed.append(f"insertion gain {gain:+.4f} below {TARGETS['insertion_gain_min']}")
    after = means.get("sanity_spearman/layer4")
    sane = None if after is None else after <= TARGETS["spearman_after_layer4_max"]
    words = (UNDEFINED if constant else "not measured") if sane is None else "passed" if sane else "failed"
    return {"faithful": not missed, "missed": missed, "sane": sane, "sanity": words, "baseline": baseline,
            "targets": dict(TARGETS)}
