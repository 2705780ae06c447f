"""notebooks/assignment.ipynb executed end to end in a fresh kernel at smoke size, its settings cell overridden as
papermill would, and the committed copy checked for outputs it must not carry."""

from __future__ import annotations

import ast
import re
import time

import nbformat
import numpy as np
import pytest
from PIL import Image

from .helpers import REPO

NOTEBOOK = REPO / "notebooks" / "assignment.ipynb"
INDICES = re.compile(r"test indices in order: (\[[\d, ]*\])")


def _with_parameters(nb, **values):
    """A cell after the one tagged `parameters` that sets `values`, as papermill's injected-parameters cell does."""
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    code = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(code, metadata={"tags": ["injected-parameters"]}))
    return nb


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _has_image(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.outputs if o.output_type == "display_data")


def _cell(nb, source: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.strip() == source)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run once at smoke size (the shipped smoke config on generated images), with a picture of
    'my own'; (the executed notebook, the run folder, seconds it took)."""
    from nbclient import NotebookClient

    tmp = tmp_path_factory.mktemp("notebook")
    picture = tmp / "mine.png"
    Image.fromarray(np.full((48, 40, 3), (200, 80, 40), dtype=np.uint8)).save(picture)
    nb = _with_parameters(nbformat.read(NOTEBOOK, as_version=4), configs=["smoke"], dataset="synthetic", width=0.125,
                          epochs=2, channels_last=False, output_dir=str(tmp / "runs"), run_name="nb",
                          show_tensorboard=False, my_images=[str(picture)])
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp)}}).execute()
    return nb, tmp / "runs" / "nb", time.perf_counter() - start


@pytest.mark.slow
def test_the_notebook_runs_end_to_end_at_smoke_size(executed):
    nb, run_dir, seconds = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert (run_dir / "history.json").is_file()
    print(f"notebook executed in {seconds:.1f} s")


@pytest.mark.slow
def test_the_notebook_shows_curves_mistakes_and_gradcam_of_the_same_20(executed):
    nb, run_dir, _ = executed
    for source in ("run.show_curves()", "run.show_mistakes()", "run.show_gradcam()", "run.show_confusion()",
                   "run.show_faithfulness()"):
        assert _has_image(_cell(nb, source)), source
    mistakes = ast.literal_eval(INDICES.search(_text(_cell(nb, "run.show_mistakes()"))).group(1))
    gradcam = ast.literal_eval(INDICES.search(_text(_cell(nb, "run.show_gradcam()"))).group(1))
    assert len(mistakes) == 20 and gradcam == mistakes
    import json

    listed = json.loads((run_dir / "misclassified.json").read_text())["mistakes"]
    assert [m["index"] for m in listed] == mistakes
    assert "faithful: " in _text(_cell(nb, "run.show_faithfulness()"))


@pytest.mark.slow
def test_the_notebook_trained_the_shipped_smoke_config_which_ends_with_twenty_mistakes(executed):
    """`make smoke` as shipped ends with the mistakes the project is for: at least 20 on the synthetic test split
    (one image in five mixes two classes' cues), drawn, and GradCAM on them. The notebook's run is that run: its
    settings above are the smoke config's own values, and its config.yaml says so field by field."""
    import json

    import yaml

    from ignite_cifar.config import make_config, read_yaml

    _, run_dir, _ = executed
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    shipped = make_config(read_yaml("smoke")).to_dict()
    where = ("output_dir", "run_name", "data_dir")  # where it reads and writes, not what it trains
    assert {k: v for k, v in saved.items() if k != "derived" and k not in where} == yaml.safe_load(
        yaml.safe_dump({k: v for k, v in shipped.items() if k not in where}))
    listed = json.loads((run_dir / "misclassified.json").read_text())
    assert listed["total_misclassified"] >= 20 and listed["found"] == 20
    assert (run_dir / "misclassified.png").is_file() and (run_dir / "gradcam.png").is_file()
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2]
    assert 0.8 < history["final_test"]["test_accuracy"] < 0.97  # it learned the clean images; the mixed stay half wrong


@pytest.mark.slow
def test_the_notebook_shows_the_epochs_and_a_progress_widget(executed):
    nb, _, _ = executed
    training = next(c for c in nb.cells if c.cell_type == "code" and "run = train(config)" in c.source)
    text = _text(training)
    assert "epoch 1/2" in text and "epoch 2/2" in text and "\r" not in text  # log lines, no redrawn text bar
    widgets = [o for o in training.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets  # ignite's ProgressBar through tqdm.autonotebook, with ipywidgets installed


@pytest.mark.slow
def test_the_notebook_explains_my_own_picture(executed):
    nb, _, _ = executed
    own = next(c for c in nb.cells if c.cell_type == "code" and "run.explain_images(images)" in c.source)
    assert _has_image(own)


def test_the_committed_notebook_carries_no_outputs():
    """No run's numbers are shown as results on GitHub: the reader runs it (docs/usage.md says why)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
