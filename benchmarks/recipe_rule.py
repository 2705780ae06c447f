"""The recipe study's noise rule: when a recipe beats the baseline or the default beyond the seed noise.

Runs named `<recipe>-seed<N>` are further seeds of `<recipe>`: the rule compares recipes by their mean over seeds,
written once in RULE and applied to every recipe in noise_section (a part of RECIPE.md, recipe_report.py). A recipe
outside the assignment's rules (ignite_cifar/assignment_rules.py) is marked and never becomes the default.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

from ignite_cifar.assignment_rules import outside_rules

BASELINE = "shipped"
DEFAULT = "combination"  # the shipped default recipe since 2026-11-30; `combination-<change>` variants change it

HOW_TO_READ = ("**How to read this.** The val split here is the test split (`--val-split 0`, as in the original "
               "assignment): the plateau scheduler steps on the test loss and the best epoch is chosen on test "
               "accuracy, so picking the recipe by these numbers is a mild selection on the test set.")
RULE = ("**The rule.** Runs named `<recipe>-seed<N>` are more seeds of `<recipe>`; a recipe's accuracy is the mean "
        f"final test accuracy over its seeds. A recipe wins against `{BASELINE}` when its mean beats `{BASELINE}`'s "
        "mean by more than twice the larger of the two standard deviations (sample standard deviation over seeds); "
        f"with one seed it must beat `{BASELINE}`'s mean by more than `{BASELINE}`'s seed range (highest minus "
        "lowest seed), and its verdict stays provisional until a second seed agrees. A recipe that falls short of "
        "the mean by as much is worse beyond the noise; anything between is within the noise, whichever way it "
        "points. Runs in bf16 (`--amp auto` on this CPU since 2026-11-30) are compared with fp32 runs as they are: "
        "the same seed in both precisions ended 0.11 points apart (`shipped` against `shipped-bf16`, "
        "benchmarks/cpu-bf16/RESULTS.md). "
        f"Every recipe is also judged against the default recipe (`{DEFAULT}`; variants named `{DEFAULT}-<change>` "
        "change it, the others are other recipes of the assignment), by the same rule with "
        f"`{BASELINE}`'s seed noise as a floor (its standard deviation and range "
        "count when they are the larger): two seeds measure a standard deviation poorly, and the seed noise belongs "
        "to the setup more than to the recipe. The default changes only on a win there, and only to a recipe under "
        "the assignment's rules: a recipe outside them (an augmentation the assignment lacks, another norm or "
        "epoch count: `ignite_cifar/assignment_rules.py`) is marked in its row and never becomes the default.")


def recipe_of(name: str) -> str:
    return re.sub(r"-seed\d+$", "", name)


def recipe_accuracies(summaries: dict[str, dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Finished runs' (seed, final test accuracy) grouped by recipe, in the summaries' order."""
    groups: dict[str, list[tuple[int, float]]] = {}
    for name, s in summaries.items():
        if s["state"] == "finished" and s["test_accuracy"] is not None:
            groups.setdefault(recipe_of(name), []).append((s["seed"], s["test_accuracy"]))
    return groups


def spread(accs: list[float]) -> tuple[float, float | None, float]:
    """Mean, sample standard deviation (None with one value) and range of a recipe's seeds."""
    return statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else None, max(accs) - min(accs)


def verdict(base: list[float], other: list[float], floor: list[float] | None = None
            ) -> tuple[float, float | None, str]:
    """The rule applied: (gain in accuracy, margin it must exceed, words). No margin while the baseline has
    fewer than two seeds. `floor`: the seeds of a recipe whose standard deviation and range are the least noise
    assumed for the baseline."""
    base_mean, base_std, base_range = spread(base)
    mean, std, _ = spread(other)
    gain = mean - base_mean
    if floor and len(floor) > 1:
        _, floor_std, floor_range = spread(floor)
        base_std = floor_std if base_std is None else max(base_std, floor_std)
        base_range, base = max(base_range, floor_range), base + floor  # enough seeds to judge
    if len(base) < 2:
        return gain, None, "no noise measured yet"
    margin = 2 * max(base_std, std) if std is not None else base_range
    words = "wins" if gain > margin else "worse, beyond the noise" if gain < -margin else "within the noise"
    if std is None and words != "within the noise":
        words += " (one seed: provisional until a second seed agrees)"
    return gain, margin, words


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _against_default(recipe: str, accs: list[float], default: list[float], base: list[float], broken: bool) -> str:
    """The last three cells of a recipe's verdict row: its verdict against the default, for every other recipe."""
    if recipe == DEFAULT:
        return "the default | | |"
    if not default:
        return "| | |"
    gain, margin, words = verdict(default, accs, floor=base)
    if broken:
        words += " (outside the assignment's rules: never the default)"
    return f"{100 * gain:+.2f} | {pct(margin)} | {words} |"


def noise_section(summaries: dict[str, dict[str, Any]]) -> str:
    """The rule, the baseline's seeds, and one verdict line per recipe in a table."""
    groups = recipe_accuracies(summaries)
    base = [acc for _, acc in groups.get(BASELINE, [])]
    if not base:
        return HOW_TO_READ + "\n\n" + RULE + f"\n\nNoise: not measured yet (no finished `{BASELINE}` run)."
    mean, std, rng = spread(base)
    lines = [HOW_TO_READ, "", RULE, "", f"`{BASELINE}` over {len(base)} seed(s): mean {pct(mean)}%, standard "
             f"deviation {pct(std)} points, range {pct(rng)} points.", "",
             f"| recipe | seeds (final test %) | mean | std | vs {BASELINE} | must exceed | verdict | vs the default "
             f"(`{DEFAULT}`) | must exceed | verdict against the default |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    default = [acc for _, acc in groups.get(DEFAULT, [])]
    broken = {recipe_of(name): outside_rules(s["variant"].overrides) for name, s in summaries.items()}
    for recipe, runs in groups.items():
        accs = [acc for _, acc in runs]
        r_mean, r_std, _ = spread(accs)
        seeds = ", ".join(f"{seed}: {pct(acc)}" for seed, acc in runs)
        if recipe == BASELINE:
            lines.append(f"| {recipe} | {seeds} | {pct(r_mean)} | {pct(r_std)} | baseline | | | | | |")
            continue
        gain, margin, words = verdict(base, accs)
        reasons = broken.get(recipe, [])
        name = recipe + (f" (**outside the assignment's rules**: {', '.join(reasons)})" if reasons else "")
        tail = _against_default(recipe, accs, default, base, bool(reasons))
        lines.append(f"| {name} | {seeds} | {pct(r_mean)} | {pct(r_std)} | {100 * gain:+.2f} | "
                     f"{pct(margin)} | {words} | {tail}")
    return "\n".join(lines)
