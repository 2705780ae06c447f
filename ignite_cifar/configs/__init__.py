"""The shipped configs (assignment.yaml: the original assignment's recipe; smoke.yaml: a 20-second run), and the
assignment's rules: what it allows a recipe to change, and where a run's settings leave it.

The assignment fixes the network family (ResNet18 or ResNet34 with LayerNorm only), 40 epochs and its three
augmentations (a random 32x32 crop after padding 4, a rotation of up to 5 degrees, one 16x16 cutout). The optimizer,
lr, weight decay, a weight average, label smoothing, the plateau settings and how often each of the three
augmentations fires (but not never) are the recipe's to choose. Whether a warmup is "short" is not judged here.

Reports mark a run outside the rules so that it is read in its own row and never becomes the default. Torch-free:
reading a run's config.yaml needs no model.
"""

from __future__ import annotations

from typing import Any, Mapping

from ignite_cifar.config import read_yaml
from ignite_cifar.config_checks import ARCHITECTURES

ASSIGNMENT = read_yaml("assignment")  # the assignment's recipe, field by field (configs/assignment.yaml)
PINNED = {  # a field whose value must stay the assignment's: what it is called in a report
    "norm": "normalization",
    "epochs": "epochs",
    "crop_padding": "crop padding",
    "rotate_limit": "rotation limit",
    "cutout_size": "cutout size",
}
REQUIRED_AUGMENTATIONS = {  # probability field (above 0 in the assignment): the augmentation it requires
    "p_crop": "random crop",
    "p_rotate": "rotation",
    "p_cutout": "cutout",
}
EXTRA_AUGMENTATIONS = {  # probability field (0 in the assignment): the augmentation it adds
    "p_hflip": "horizontal flip",
    "p_shift_scale_rotate": "shift/scale/rotate",
    "p_to_gray": "gray conversion",
}


def outside_rules(fields: Mapping[str, Any]) -> list[str]:
    """Each way `fields` (a run's config.yaml, or a recipe's overrides: a field left out is the assignment's) leaves
    the assignment's rules, in words; empty when it keeps them."""
    reasons = []
    if fields.get("model", ARCHITECTURES[0]) not in ARCHITECTURES:
        reasons.append(f"model {fields['model']}")
    for name, words in PINNED.items():
        if name in fields and fields[name] != ASSIGNMENT[name]:
            reasons.append(f"{words} {fields[name]} (the assignment: {ASSIGNMENT[name]})")
    # how often a required augmentation fires is the recipe's to choose, but never: that drops it
    reasons += [f"{words} switched off ({name} {fields[name]})" for name, words in REQUIRED_AUGMENTATIONS.items()
                if name in fields and float(fields[name] or 0) <= 0]
    reasons += [words for name, words in EXTRA_AUGMENTATIONS.items() if float(fields.get(name) or 0) > 0]
    return reasons
