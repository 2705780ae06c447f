"""What the repository publishes is what its records give: RECIPE.md and FULL-WIDTH-CPU.md are regenerated from the
committed JSON records alone (no run folder) and compared with the committed reports, and each accuracy and time in
README.md's results table is found in the report that its row cites."""

from __future__ import annotations

import difflib
import itertools
import re
import shutil
from pathlib import Path

import pytest

from .helpers import REPO, load_benchmark

load_benchmark("recipe_rule")
recipe_report = load_benchmark("recipe_report")
recipe_study = load_benchmark("recipe_study")
full_width_cpu = load_benchmark("full_width_cpu")

STUDY = REPO / "benchmarks" / "study"
TIMESTAMP = re.compile(r"\(\d{4}-\d{2}-\d{2} \d{2}:\d{2}\)")  # the report's "written at", the one thing ignored
NOT_FINISHED = "(a run without a record, not finished: its row is read from its run folder)"


def _home(tmp_path: Path, monkeypatch) -> Path:
    """A home folder in tmp_path, so the report names the default run folder (~/.cache/ignite-cifar/...) as the
    committed one does, while the folder it reads is empty: only the records are read, never a real run."""
    monkeypatch.setattr(Path, "home", lambda: tmp_path)
    return tmp_path / ".cache" / "ignite-cifar"


def _comparable(text: str, unrecorded: set[str]) -> tuple[list[str], set[str]]:
    """A report's lines with what a run folder adds to a records-only report set aside, and the machines named on
    its `Trained on:` line. A variant with no record has its row from its run folder where that folder exists
    (unfinished, at some epoch) and a `not started` row from the records alone: its row only says whether it
    claims to be finished (it cannot be, without a record). The `## Unfinished` section comes from run folders
    only, and so may the machines of an unfinished run."""
    lines, machines, section = [], set(), ""
    for line in TIMESTAMP.sub("(TIME)", text).splitlines():
        if line.startswith("## "):
            section = line
        if section == "## Unfinished":
            continue
        cells = [c.strip() for c in line.strip("|").split("|")] if line.startswith("|") else []
        if cells and cells[0] in unrecorded:
            line = f"| {cells[0]} | " + ("finished, without a record" if cells[1] == "finished" else NOT_FINISHED)
        elif found := re.match(r"Trained on: (.*?)\. (.*)", line):
            machines = set(found[1].split("; "))
            line = f"Trained on: (compared apart). {found[2]}"
        lines.append(line)
    return lines, machines


def _assert_regenerated(committed_path: Path, generated_path: Path, variants: list[str], records: Path) -> None:
    committed, generated = committed_path.read_text(), generated_path.read_text()
    assert len(TIMESTAMP.findall(generated)) == 1, "the report's time stamp is the one fragment ignored"
    unrecorded = {name for name in variants if not (records / f"{name}.json").is_file()}
    (want, want_machines), (have, have_machines) = _comparable(generated, unrecorded), _comparable(committed,
                                                                                                   unrecorded)
    assert want_machines <= have_machines
    assert have_machines - want_machines == set() or unrecorded, "a machine no record names"
    if have != want:
        diff = difflib.unified_diff(have, want, "committed", "what the records give", n=0, lineterm="")
        pytest.fail(f"{committed_path.relative_to(REPO)} is not what its records give (regenerate it with its script,"
                    " --report-only):\n" + "\n".join(itertools.islice(diff, 40)))


def test_recipe_md_is_what_the_recipe_records_give(tmp_path, monkeypatch):
    runs_home = _home(tmp_path, monkeypatch)
    out = tmp_path / "out"
    shutil.copytree(recipe_report.RECORDS, out / recipe_report.RECORDS.name)
    # the study writes its report beside its script: here, beside a stand-in path in tmp_path
    monkeypatch.setattr(recipe_study, "__file__", str(out / "recipe_study.py"))
    assert recipe_study.main(["--report-only", "--study-dir", str(runs_home / "study")]) == 0
    assert not (runs_home / "study").exists()  # nothing was trained
    variants = [v.name for v in recipe_study.load_variants()]
    _assert_regenerated(STUDY / recipe_report.REPORT, out / recipe_report.REPORT, variants, recipe_report.RECORDS)


def test_full_width_cpu_md_is_what_its_records_give(tmp_path, monkeypatch):
    """The second seed may be unfinished: its row and the `## Unfinished` lines come from its run folder, which no
    test reads; only that they do not claim a finished run is checked (_comparable)."""
    runs_home = _home(tmp_path, monkeypatch)
    out = tmp_path / "out"
    shutil.copytree(full_width_cpu.RECORDS, out / full_width_cpu.RECORDS.name)
    monkeypatch.setattr(full_width_cpu, "HERE", out)  # where it writes the report and reads the records
    assert full_width_cpu.main(["--report-only", "--runs-dir", str(runs_home / "full-width-cpu")]) == 0
    _assert_regenerated(STUDY / full_width_cpu.REPORT, out / full_width_cpu.REPORT, list(full_width_cpu.RECIPES),
                        full_width_cpu.RECORDS)


# ---------------------------------------------------------------- README's results table
NUMBER = r"(?<![\w.])\d+(?:\.\d+)?"  # a number standing alone: not the 16 of bf16 or the 32 of fp32


def _results_rows() -> list[dict[str, str]]:
    """README.md's results table (the one whose columns include a test accuracy and a time), a dict per row."""
    lines = (REPO / "README.md").read_text().splitlines()
    for i, line in enumerate(lines):
        head = [c.strip().lower() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and any("accuracy" in c for c in head) and "time" in head:
            table = itertools.takewhile(lambda row: row.startswith("|"), lines[i + 2:])  # after the --- line
            return [dict(zip(head, (c.strip() for c in row.strip().strip("|").split("|")), strict=True))
                    for row in table]
    pytest.fail("README.md has no results table with a test accuracy and a time column")


def _published(row: dict[str, str]) -> list[str]:
    """The accuracies (numbers with decimals, or followed by %) and times (every number) a row publishes."""
    accuracy = next(v for k, v in row.items() if "accuracy" in k)
    return re.findall(NUMBER + r"(?=%)|(?<![\w.])\d+\.\d+", accuracy) + re.findall(NUMBER, row["time"])


def _cited_reports(row: dict[str, str]) -> list[Path]:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", " ".join(row.values()))
    return [(REPO / t).resolve() for t in targets if (REPO / t).resolve().is_relative_to(REPO / "benchmarks")]


def _agrees(value: str, text: str) -> bool:
    """`value` as README writes it is a number in `text` shown to at least as many decimals and the same at the
    README's precision (48 for a report's 48.4 min; 85.40 only for 85.40, or 85.395 to 85.405)."""
    decimals = len(value.partition(".")[2])
    return any(len(n.partition(".")[2]) >= decimals and abs(float(n) - float(value)) <= 0.5 * 10 ** -decimals + 1e-9
               for n in re.findall(NUMBER, text))


def test_each_number_in_readmes_results_table_is_in_the_report_it_cites():
    rows = _results_rows()
    checked = 0
    for row in rows:
        values = _published(row)
        if not values:  # a run not finished: nothing published
            continue
        reports = _cited_reports(row)
        assert reports and all(r.is_file() for r in reports), f"a row publishing {values} cites no report: {row}"
        text = "\n".join(r.read_text() for r in reports)
        missing = [v for v in values if not _agrees(v, text)]
        assert not missing, f"{missing} of README's row {row} are in none of {[str(r) for r in reports]}"
        checked += len(values)
    assert checked >= 10  # the table still publishes numbers


def test_the_results_page_stays_a_page():
    """docs/results.md is where README sends a reader for every number: at most 200 lines, or it stops being read."""
    assert len((REPO / "docs" / "results.md").read_text().splitlines()) <= 200
