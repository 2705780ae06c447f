"""The recipe study's noise rule (benchmarks/study/recipe_rule.py): recipes by their mean over seeds, a win beyond twice
the larger standard deviation with the seed noise pooled over recipes as a floor, every recipe judged against the
default too, and a recipe outside the assignment's rules never the default."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from .helpers import load_benchmark

recipe_rule = load_benchmark("recipe_rule")


def _summaries(accuracies: dict[str, float], state: str = "finished") -> dict[str, dict]:
    return {name: {"variant": SimpleNamespace(name=name, overrides={}), "state": state, "test_accuracy": acc,
                   "seed": 42 + i} for i, (name, acc) in enumerate(accuracies.items())}


def test_the_rule_compares_recipe_means_with_twice_the_larger_standard_deviation():
    text = recipe_rule.noise_section(_summaries({
        "assignment": 0.80, "assignment-seed2": 0.79, "assignment-seed3": 0.81,  # mean 0.80, std 0.01
        "a": 0.825, "a-seed2": 0.835,  # mean 0.83, std 0.00707: +3.00 > 2 x the pooled 0.0106
        "b": 0.82, "b-seed2": 0.80,  # mean 0.81, std 0.01414: +1.00 < 2 x 0.01414
        "c": 0.819,  # one seed: +1.90 against twice the pooled noise (more than the range 2.00)
        "d": 0.775,  # one seed: -2.50 beyond it
    }))  # pooled noise: squares 2e-4 + 5e-5 + 2e-4 over 4 degrees of freedom: 0.0106
    assert "mean 80.00%, standard deviation 1.00 points, range 2.00 points" in text
    assert "| a | 45: 82.50, 46: 83.50 | 83.00 | 0.71 | +3.00 | 2.12 | wins |" in text
    assert "| b |" in text and "| +1.00 | 2.83 | within the noise |" in text
    assert "| c |" in text and "| +1.90 | 2.12 | within the noise |" in text
    assert "| -2.50 | 2.12 | worse, beyond the noise (one seed: provisional until a second seed agrees) |" in text
    assert "twice the largest of three standard deviations" in text


def test_the_pooled_noise_is_each_seeds_distance_from_its_own_recipes_mean():
    groups = {"a": [(42, 0.80), (43, 0.82)], "b": [(42, 0.90), (43, 0.91), (44, 0.92)], "c": [(42, 0.5)]}
    floor, dof, recipes = recipe_rule.pooled_noise(groups)
    # squares 2 x 0.01^2 + 2 x 0.01^2 over 1 + 2 degrees of freedom; a one-seed recipe adds none
    assert (dof, recipes) == (3, 2) and floor == pytest.approx((4e-4 / 3) ** 0.5)
    assert recipe_rule.pooled_noise({"c": [(42, 0.5)]}) == (None, 0, 0)


def test_every_recipe_is_judged_against_the_default_with_the_pooled_noise_as_a_floor():
    text = recipe_rule.noise_section(_summaries({
        "assignment": 0.80, "assignment-seed2": 0.79, "assignment-seed3": 0.81,  # std 0.01, range 0.02
        recipe_rule.DEFAULT: 0.835, f"{recipe_rule.DEFAULT}-seed2": 0.833,  # mean 0.834, std 0.0014, range 0.002
        "x": 0.85,  # one seed: +1.60 against twice the pooled noise
        "y": 0.852, "y-seed2": 0.850,  # mean 0.851: +1.70 > 2 x the pooled noise, under 2 x assignment's std
        "a": 0.818,  # judged against the default all the same: -1.60
    }))
    # pooled: squares 2e-4 (assignment) + 2e-6 (the default) + 2e-6 (y) over 2 + 1 + 1 degrees of freedom: 0.00714
    floor = (2.04e-4 / 4) ** 0.5
    assert f"standard deviation {100 * floor:.2f} points (4 degrees of freedom)" in text
    margin = f"{200 * floor:.2f}"
    assert f"| {recipe_rule.DEFAULT} | 45: 83.50, 46: 83.30 |" in text and "| the default | | |" in text
    assert f"| +1.60 | {margin} | wins (one seed: provisional until a second seed agrees) |" in text
    assert f"| +1.70 | {margin} | wins |" in text
    assert next(line for line in text.splitlines() if line.startswith("| a |")).endswith(
        f"| -1.60 | {margin} | worse, beyond the noise (one seed: provisional until a second seed agrees) |")
    assert "| y | 48: 85.20, 49: 85.00 | 85.10 | 0.14 | +5.10 | 2.00 | wins |" in text  # assignment's own std rules
    assert "the study's pooled seed noise" in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len({row.count("|") for row in rows}) == 1  # every row has the header's cells


def test_a_recipe_outside_the_assignments_rules_is_marked_and_never_wins_the_default():
    summaries = _summaries({"assignment": 0.80, "assignment-seed2": 0.79, "assignment-seed3": 0.81,
                            recipe_rule.DEFAULT: 0.835, f"{recipe_rule.DEFAULT}-seed2": 0.833,
                            "combination-flip": 0.87, "combination-flip-seed2": 0.868})
    for name in ("combination-flip", "combination-flip-seed2"):
        summaries[name]["variant"] = SimpleNamespace(name=name, overrides={"p_hflip": 0.5})
    text = recipe_rule.noise_section(summaries)
    flip = next(line for line in text.splitlines() if line.startswith("| combination-flip"))
    assert "(**outside the assignment's rules**: horizontal flip)" in flip
    assert flip.endswith("| wins (outside the assignment's rules: never the default) |")
    assert "outside" not in next(line for line in text.splitlines() if line.startswith(f"| {recipe_rule.DEFAULT} |"))


def test_the_rule_waits_for_two_baseline_seeds_and_ignores_unfinished_runs():
    one_seed = recipe_rule.noise_section(_summaries({"assignment": 0.80, "a": 0.90}))
    assert "| +10.00 | - | no noise measured yet |" in one_seed and "| wins |" not in one_seed
    unfinished = _summaries({"assignment": 0.80, "assignment-seed2": 0.78})
    unfinished["assignment-seed2"]["state"] = "unfinished"
    assert "over 1 seed(s)" in recipe_rule.noise_section(unfinished)


def test_the_held_out_check_sets_the_gap_it_measured_beside_the_one_the_default_was_chosen_by():
    recipe_holdout = load_benchmark("recipe_holdout")
    chosen = {"assignment": 0.80, "assignment-seed2": 0.81,
              "combination-weight-std": 0.85, "combination-weight-std-seed2": 0.86}
    text = recipe_holdout.holdout_section(_summaries(chosen))
    assert "| the test split (how the default was chosen) | 85.50 (2 seeds) | 80.50 (2 seeds) | +5.00 |" in text
    assert "| 5,000 training images held out" in text and "| - | - | - | not measured yet |" in text
    assert "Not decided yet: 0 of 4 held-out runs have finished." in text
    held = {"combination-weight-std-holdout": 0.84, "assignment-holdout": 0.80, "assignment-holdout-seed2": 0.82}
    text = recipe_holdout.holdout_section(_summaries({**chosen, **held}))
    assert "| 84.00 (1 seed) | 81.00 (2 seeds) | +3.00 |" in text
    assert "the gap is +3.00 points, -2.00 from the +5.00 the default was chosen by (3 of 4 held-out runs" in text


def test_held_out_recipes_count_in_the_noise_but_are_not_judged_against_rows_trained_on_more_images():
    text = recipe_rule.noise_section(_summaries({
        "assignment": 0.80, "assignment-seed2": 0.79, recipe_rule.DEFAULT: 0.835,
        "assignment-holdout": 0.76, "assignment-holdout-seed2": 0.78}))  # 45,000 images: it would "lose" to assignment
    assert not any(line.startswith("| assignment-holdout") for line in text.splitlines())
    assert "pooled over the 2 recipes with two or more seeds" in text
    assert "Not in this table: `assignment-holdout`, trained on 45,000 images" in text
    seeds_only = _summaries({"assignment": 0.80, "assignment-seed2": 0.79})
    assert "Not in this table" not in recipe_rule.noise_section(seeds_only)
