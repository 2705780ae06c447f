"""What the assignment allows (ignite_cifar/configs.py): the original and the default recipe keep its rules;
an added augmentation, a required one switched off, another norm, epoch count, model or augmentation size is
named."""

from __future__ import annotations

import dataclasses

import pytest

from ignite_cifar.config import make_config, read_yaml
from ignite_cifar.configs import ASSIGNMENT, EXTRA_AUGMENTATIONS, PINNED, REQUIRED_AUGMENTATIONS, outside_rules


def test_the_pinned_fields_and_extra_augmentations_are_read_from_the_mission_recipe():
    assert {name: ASSIGNMENT[name] for name in PINNED} == {"norm": "layer", "epochs": 40, "crop_padding": 4,
                                                          "rotate_limit": 5, "cutout_size": 16}
    assert all(ASSIGNMENT[name] == 0 for name in EXTRA_AUGMENTATIONS)


def test_the_required_augmentations_are_the_ones_the_assignment_turns_on():
    """Crop, rotation and cutout fire in the assignment's recipe; a recipe may change how often, never to 0."""
    assert {name: ASSIGNMENT[name] for name in REQUIRED_AUGMENTATIONS} == {"p_crop": 1.0, "p_rotate": 0.5,
                                                                          "p_cutout": 0.5}
    assert set(REQUIRED_AUGMENTATIONS).isdisjoint(EXTRA_AUGMENTATIONS)
    for name in REQUIRED_AUGMENTATIONS:
        assert outside_rules({name: 0.05}) == []
        assert outside_rules({name: 0.0}) != [], name
        assert outside_rules(dataclasses.asdict(make_config({name: 0.0}))) != [], name  # a run's whole config


def test_the_mission_recipe_and_the_default_keep_the_rules():
    assert outside_rules(read_yaml("assignment")) == []
    assert outside_rules(dataclasses.asdict(make_config())) == []


def test_the_recipes_own_choices_keep_the_rules():
    chosen = {"optimizer": "adamw", "lr": 0.004, "weight_decay": 0.05, "ema_decay": 0.999, "label_smoothing": 0.1,
              "warmup_epochs": 2, "p_cutout": 1.0, "p_rotate": 0.1, "p_crop": 0.8, "model": "resnet34", "width": 0.25,
              "weight_standardization": True, "p_hflip": 0.0}
    assert outside_rules(chosen) == []


@pytest.mark.parametrize("fields, words", [
    ({"p_hflip": 0.5}, ["horizontal flip"]),
    ({"p_shift_scale_rotate": 0.3, "p_to_gray": 0.1}, ["shift/scale/rotate", "gray conversion"]),
    ({"norm": "group"}, ["normalization group (the assignment: layer)"]),
    ({"epochs": 60}, ["epochs 60 (the assignment: 40)"]),
    ({"crop_padding": 8, "rotate_limit": 15, "cutout_size": 8},
     ["crop padding 8 (the assignment: 4)", "rotation limit 15 (the assignment: 5)",
      "cutout size 8 (the assignment: 16)"]),
    ({"model": "resnet50"}, ["model resnet50"]),
    ({"p_rotate": 0.0}, ["rotation switched off (p_rotate 0.0)"]),
    ({"p_crop": 0, "p_cutout": 0.0}, ["random crop switched off (p_crop 0)", "cutout switched off (p_cutout 0.0)"]),
])
def test_each_way_out_of_the_rules_is_named(fields, words):
    assert outside_rules(fields) == words
