"""The recipe study's noise rule (benchmarks/recipe_rule.py): recipes by their mean over seeds, a win beyond twice
the larger standard deviation, every recipe judged against the default too with the baseline's noise as a floor, and a
recipe outside the assignment's rules never the default."""

from __future__ import annotations

from types import SimpleNamespace

from .helpers import load_benchmark

recipe_rule = load_benchmark("recipe_rule")


def _summaries(accuracies: dict[str, float], state: str = "finished") -> dict[str, dict]:
    return {name: {"variant": SimpleNamespace(name=name, overrides={}), "state": state, "test_accuracy": acc,
                   "seed": 42 + i} for i, (name, acc) in enumerate(accuracies.items())}


def test_the_rule_compares_recipe_means_with_twice_the_larger_standard_deviation():
    text = recipe_rule.noise_section(_summaries({
        "shipped": 0.80, "shipped-seed2": 0.79, "shipped-seed3": 0.81,  # mean 0.80, std 0.01
        "a": 0.825, "a-seed2": 0.835,  # mean 0.83, std 0.00707: +3.00 > 2 x 0.01
        "b": 0.82, "b-seed2": 0.80,  # mean 0.81, std 0.01414: +1.00 < 2 x 0.01414
        "c": 0.819,  # one seed: +1.90 against the range 2.00
        "d": 0.775,  # one seed: -2.50 beyond the range
    }))
    assert "mean 80.00%, standard deviation 1.00 points, range 2.00 points" in text
    assert "| a | 45: 82.50, 46: 83.50 | 83.00 | 0.71 | +3.00 | 2.00 | wins |" in text
    assert "| b |" in text and "| +1.00 | 2.83 | within the noise |" in text
    assert "| c |" in text and "| +1.90 | 2.00 | within the noise |" in text
    assert "| -2.50 | 2.00 | worse, beyond the noise (one seed: provisional until a second seed agrees) |" in text
    assert "twice the larger of the two standard deviations" in text


def test_every_recipe_is_judged_against_the_default_with_the_baseline_noise_as_a_floor():
    text = recipe_rule.noise_section(_summaries({
        "shipped": 0.80, "shipped-seed2": 0.79, "shipped-seed3": 0.81,  # std 0.01, range 0.02
        "combination": 0.835, "combination-seed2": 0.833,  # mean 0.834, std 0.0014, range 0.002
        "combination-x": 0.85,  # one seed: +1.60 against shipped's range 2.00 (not the default's 0.20)
        "combination-y": 0.86, "combination-y-seed2": 0.858,  # mean 0.859: +2.50 > 2 x shipped's std
        "a": 0.82,  # not a change to the default, judged against it all the same: -1.40 against 2.00
    }))
    assert "| combination | 45: 83.50, 46: 83.30 |" in text and "| the default | | |" in text
    assert "| +1.60 | 2.00 | within the noise |" in text
    assert "| +2.50 | 2.00 | wins |" in text
    assert next(line for line in text.splitlines() if line.startswith("| a |")).endswith(
        "| -1.40 | 2.00 | within the noise |")
    assert "`shipped`'s seed noise as a floor" in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len({row.count("|") for row in rows}) == 1  # every row has the header's cells


def test_a_recipe_outside_the_assignments_rules_is_marked_and_never_wins_the_default():
    summaries = _summaries({"shipped": 0.80, "shipped-seed2": 0.79, "shipped-seed3": 0.81,
                            "combination": 0.835, "combination-seed2": 0.833,
                            "combination-flip": 0.87, "combination-flip-seed2": 0.868})
    for name in ("combination-flip", "combination-flip-seed2"):
        summaries[name]["variant"] = SimpleNamespace(name=name, overrides={"p_hflip": 0.5})
    text = recipe_rule.noise_section(summaries)
    flip = next(line for line in text.splitlines() if line.startswith("| combination-flip"))
    assert "(**outside the assignment's rules**: horizontal flip)" in flip
    assert flip.endswith("| wins (outside the assignment's rules: never the default) |")
    assert "outside" not in next(line for line in text.splitlines() if line.startswith("| combination |"))


def test_the_rule_waits_for_two_baseline_seeds_and_ignores_unfinished_runs():
    one_seed = recipe_rule.noise_section(_summaries({"shipped": 0.80, "a": 0.90}))
    assert "| +10.00 | - | no noise measured yet |" in one_seed and "| wins |" not in one_seed
    unfinished = _summaries({"shipped": 0.80, "shipped-seed2": 0.78})
    unfinished["shipped-seed2"]["state"] = "unfinished"
    assert "over 1 seed(s)" in recipe_rule.noise_section(unfinished)
