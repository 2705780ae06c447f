"""Was the default chosen on the test set? The gap between the default and the assignment recipe, measured twice: with
the test split as the val split (how every study row ran and the default was chosen) and with training images held
out as the val split (the `<recipe>-holdout` runs, `val_split` in their YAML), the test split touched once, at the
end. The gap is judged by the study's own rule (recipe_rule.verdict, the pooled seed noise as its floor); a part of
RECIPE.md (recipe_report.py).
"""

from __future__ import annotations

from typing import Any

from recipe_rule import BASELINE, DEFAULT, HOLDOUT, pct, pooled_noise, recipe_accuracies, verdict

PAIR = (DEFAULT, BASELINE)
SEEDS_WANTED = 2  # the held-out check wants two seeds of each held-out recipe


def _cell(accs: list[float]) -> str:
    if not accs:
        return "-"
    return f"{pct(sum(accs) / len(accs))} ({len(accs)} seed{'s' if len(accs) > 1 else ''})"


def gap_row(label: str, default: list[float], base: list[float], floor: float | None) -> tuple[str, float | None]:
    """One table row (the default's mean, the assignment recipe's, the gap, its margin, the verdict) and the gap,
    None until both sides have a finished run."""
    if not default or not base:
        return f"| {label} | {_cell(default)} | {_cell(base)} | - | - | not measured yet |", None
    gap, margin, words = verdict(base, default, floor)
    return f"| {label} | {_cell(default)} | {_cell(base)} | {100 * gap:+.2f} | {pct(margin)} | {words} |", gap


def holdout_section(summaries: dict[str, dict[str, Any]]) -> str:
    """The two gaps side by side, and how far the held-out one moved from the one the default was chosen by."""
    groups = recipe_accuracies(summaries)
    accs = {name: [acc for _, acc in groups.get(name, [])] for name in (*PAIR, *(r + HOLDOUT for r in PAIR))}
    floor = pooled_noise(groups)[0]
    chosen, chosen_gap = gap_row("the test split (how the default was chosen)", accs[DEFAULT], accs[BASELINE], floor)
    held, held_gap = gap_row("5,000 training images held out (the test split touched once, at the end)",
                             accs[DEFAULT + HOLDOUT], accs[BASELINE + HOLDOUT], floor)
    finished = sum(len(accs[r + HOLDOUT]) for r in PAIR)
    if chosen_gap is None or held_gap is None:
        moved = f"Not decided yet: {finished} of {SEEDS_WANTED * len(PAIR)} held-out runs have finished."
    else:
        moved = (f"With the val split held out the gap is {100 * held_gap:+.2f} points, "
                 f"{100 * (held_gap - chosen_gap):+.2f} from the {100 * chosen_gap:+.2f} the default was chosen by "
                 f"({finished} of {SEEDS_WANTED * len(PAIR)} held-out runs finished).")
    return "\n".join([
        "## Was the default chosen on the test set?", "",
        f"Every row above steps the plateau and picks its best epoch on the test split, and `{DEFAULT}` became the "
        f"default by test accuracy over some 40 runs. `{DEFAULT}{HOLDOUT}` and `{BASELINE}{HOLDOUT}` train the same "
        "two recipes on 45,000 training images and step the plateau on the other 5,000 (stratified by class, drawn "
        "by the seed); they see the test split once, at the end. Had the choice leaned on the test set, the gap "
        "would shrink here. (Trained on 45,000 images, not 50,000: compare the gaps, not the accuracies.)", "",
        f"| val split | the default (`{DEFAULT}`) | the assignment's recipe (`{BASELINE}`) | gap "
        "| must exceed | verdict |",
        "|---|---|---|---|---|---|", chosen, held, "", moved])
