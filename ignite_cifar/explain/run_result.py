"""A run as its folder holds it: what `train()` returns and `open_run(path)` reads back, for a notebook or a script.

It knows the run folder, its config, the per-epoch history, the test evaluation, the mistakes (test indices, in the
order both figures draw them), which figures exist, and how far to believe the maps; in Jupyter it shows the
figures inline. Everything is read from the folder when asked, so a finished, a stopped and a resumed run look
the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ignite_cifar import files
from ignite_cifar.config import Config, read_yaml, saved_run_config
from ignite_cifar.errors import UserError
from ignite_cifar.run_folders import RESUME_COMMAND

FIGURES = {"curves": "curves.png", "mistakes": "misclassified.png", "gradcam": "gradcam.png",
           "confusion": "confusion.png", "faithfulness": "explanations.png"}
MEANINGS = {
    "deletion": "removing the pixels the map ranks first lowers the class probability faster than removing random "
                "regions of the same grid",
    "insertion": "putting back the pixels the map ranks first raises the class probability faster than random "
                 "regions",
    "sanity": "the maps change once the trained weights of fc and layer4 are replaced by random ones, so they "
              "depend on what the model learned, not only on the image",
}


def open_run(run_dir: str | Path) -> "RunResult":
    """The run in folder `run_dir` (finished, stopped or resumed); a folder that is not a run is a UserError."""
    return RunResult(Path(run_dir))


def finished_run(summary: dict[str, Any]) -> "RunResult | None":
    """What train() returns: the run rank 0 trained (`summary` names its folder); None in the other processes."""
    return RunResult(Path(summary["run_dir"])) if summary.get("run_dir") else None


class RunResult:
    """One run folder, read when asked. `train()` returns one; `open_run(path)` opens an existing one.

    `result["run_dir"]`, `result["val_accuracy"]` and `result["epochs"]` still work as they did when `train()`
    returned a dict.
    """

    def __init__(self, run_dir: Path):
        if not (run_dir / files.CONFIG_FILE).is_file():
            raise UserError(f"run: {run_dir} is not a run folder (it has no {files.CONFIG_FILE})")
        self.run_dir = run_dir

    # ------------------------------------------------------------ what the run recorded
    @property
    def config(self) -> Config:
        """The run's settings, as its config.yaml saved them."""
        raw = read_yaml(str(self.run_dir / files.CONFIG_FILE))
        raw.pop(files.DERIVED, None)
        return saved_run_config(raw)

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per epoch trained: train and val loss and accuracy, lr, seconds, images/s."""
        return self._json(files.HISTORY_FILE).get("epochs", [])  # none before the first epoch ended

    @property
    def epochs(self) -> int:
        """Epochs trained so far."""
        return len(self.history)

    @property
    def val_accuracy(self) -> float | None:
        """The last epoch's val accuracy (None before the first epoch ends)."""
        return self.history[-1].get("val_accuracy") if self.history else None

    @property
    def test(self) -> dict[str, Any] | None:
        """The final test evaluation (loss, accuracy, per-class accuracy); None until training completed."""
        return self._json(files.HISTORY_FILE).get("final_test")

    @property
    def finished(self) -> bool:
        """Whether the run's completion step is done: its history holds the test evaluation, written last (not with
        --no-explain-at-end)."""
        return files.run_finished(self.run_dir)

    @property
    def mistakes(self) -> list[dict[str, Any]]:
        """The explained mistakes, in the order both figures draw them: test index, true and predicted class,
        probability. Empty before the run's end wrote them."""
        return self._json("misclassified.json").get("mistakes", [])

    @property
    def mistake_indices(self) -> list[int]:
        """The test indices of the explained mistakes, in the figures' order."""
        return [m["index"] for m in self.mistakes]

    @property
    def figures(self) -> dict[str, Path]:
        """The figures this run has written, by name (curves, mistakes, gradcam, confusion, faithfulness)."""
        return {name: self.run_dir / file for name, file in FIGURES.items() if (self.run_dir / file).is_file()}

    @property
    def tensorboard_dir(self) -> Path:
        """The run's TensorBoard events (`tensorboard --logdir` it, or `%tensorboard` in a notebook)."""
        return self.run_dir / "tb"

    @property
    def resume_command(self) -> str:
        """The shell command that continues this run (`resume(run_dir)` in Python)."""
        return f"{RESUME_COMMAND} {self.run_dir}"

    def faithfulness(self) -> str:
        """How far to believe the mistakes' GradCAM maps, in words: each target met or missed, and what it means."""
        report = self._json("explanations.json")
        group = report.get("groups", {}).get("mistakes")
        if group is None:
            return "no faithfulness scores: the run has not explained any mistakes yet"
        verdict, means = group["verdict"], group["means"]
        lines = [f"{report['method']} at {report['layer']}, {len(group['images'])} mistakes, against random regions "
                 f"of the map's grid:",
                 f"- deletion ratio {means['deletion_ratio/random_regions']:.2f} (target at most "
                 f"{verdict['targets']['deletion_ratio_max']}): {MEANINGS['deletion']}",
                 f"- insertion gain {means['insertion_gain/random_regions']:+.3f} (target at least "
                 f"{verdict['targets']['insertion_gain_min']}): {MEANINGS['insertion']}",
                 f"- sanity check {verdict['sanity']} (Spearman after randomizing layer4 at most "
                 f"{verdict['targets']['spearman_after_layer4_max']}): {MEANINGS['sanity']}",
                 "faithful: " + ("yes, both faithfulness targets met" if verdict["faithful"]
                                 else "no (" + "; ".join(verdict["missed"]) + "): read the maps as hints, not proof")]
        return "\n".join(lines)

    # ------------------------------------------------------------ shown inline (Jupyter), or printed paths elsewhere
    def show_curves(self) -> None:
        """Train and val loss and accuracy per epoch."""
        self._show("curves", "no curves yet: the first epoch has not ended")

    def show_mistakes(self) -> None:
        """The explained mistakes with their test indices, in the order GradCAM shows them."""
        print(f"{len(self.mistakes)} misclassified test images, test indices in order: {self.mistake_indices}")
        self._show("mistakes", "no misclassified.png: the run has no explained mistakes")

    def show_gradcam(self) -> None:
        """GradCAM on the same mistakes in the same order: image, map of the predicted class, of the true class."""
        print(f"GradCAM on {len(self.mistakes)} test images, test indices in order: {self.mistake_indices}")
        self._show("gradcam", "no gradcam.png: the run has no explained mistakes")

    def show_confusion(self) -> None:
        """The test split's confusion matrix, with the test accuracy."""
        if self.test:
            print(f"test accuracy {100 * self.test['test_accuracy']:.2f}%")
        self._show("confusion", "no confusion.png: training has not completed")

    def show_faithfulness(self) -> None:
        """The verdict in words, and the deletion/insertion curves and randomized maps."""
        print(self.faithfulness())
        self._show("faithfulness", "no explanations.png yet")

    def explain_images(self, images: Sequence[str | Path], output: str | Path | None = None,
                       device: str = "auto") -> list[dict[str, Any]]:
        """GradCAM, top-3 classes and faithfulness of this run's model for your own image files (any size, resized
        to 32 x 32), as `explain --images` does; shows own_images.png and returns its entries."""
        from ignite_cifar.explain.saved_run import explain_own_images
        from ignite_cifar.explain.settings import ExplainSettings

        config = self.config
        entries, out_dir = explain_own_images(str(self.run_dir), None, [str(p) for p in images],
                                              ExplainSettings.of(config), config.explain_checkpoint, device,
                                              None if output is None else str(output))
        _display_image(Path(out_dir) / "own_images.png")
        return entries

    # ------------------------------------------------------------ plumbing
    def __getitem__(self, key: str) -> Any:
        """`run_dir` (a str), `val_accuracy` and `epochs`, as train()'s dict had them."""
        if key == "run_dir":
            return str(self.run_dir)
        if key in ("val_accuracy", "epochs"):
            return getattr(self, key)
        raise KeyError(key)

    def __repr__(self) -> str:
        test = f", test accuracy {100 * self.test['test_accuracy']:.2f}%" if self.test else ""
        val = f", val accuracy {100 * self.val_accuracy:.2f}%" if self.val_accuracy is not None else ""
        return f"RunResult({str(self.run_dir)!r}: {self.epochs} epochs{val}{test})"

    def _json(self, name: str) -> dict[str, Any]:
        """A JSON file of the run; {} where the run has not written it (yet)."""
        path = self.run_dir / name
        return json.loads(path.read_text()) if path.is_file() else {}

    def _show(self, figure: str, absent: str) -> None:
        path = self.figures.get(figure)
        if path is None:
            print(absent)
        else:
            _display_image(path)


def _display_image(path: Path) -> None:
    """The PNG inline under IPython (Jupyter, Colab); its path in a plain Python process."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        get_ipython = None  # noqa: N806  (IPython is not a dependency)
    if get_ipython is None or get_ipython() is None:
        print(path)
        return
    display(Image(filename=str(path)))
