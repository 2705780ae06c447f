"""What an explanation is made from and where it goes: the labelled test images, the settings that choose what to
explain (the train flags of the same names), and the run folder / TensorBoard step the results are written to."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ignite_cifar import files
from ignite_cifar.data.augment import denormalize, eval_dataset
from ignite_cifar.data.datasets import Split
from ignite_cifar.explain import figures


@dataclass(frozen=True)
class ExplainSettings:
    """Which mistakes and how to explain them: `--n-misclassified`, `--mistake-order`, `--gradcam-method`,
    `--gradcam-layer`."""

    n_misclassified: int = 20
    mistake_order: str = "confident"
    gradcam_method: str = "gradcam"
    gradcam_layer: str = "layer4"

    @classmethod
    def of(cls, settings: Any) -> "ExplainSettings":
        """The fields of the same names from a Config (or the CLI's parsed arguments)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class LabelledImages:
    """The test split with its class names (index = label) and the training split's channel statistics, which
    normalize the images for the model and de-normalize them for figures."""

    split: Split
    classes: list[str]
    mean: Sequence[float]
    std: Sequence[float]

    def normalized(self, index: Sequence[int] | np.ndarray) -> torch.Tensor:
        index = np.asarray(index, dtype=np.int64)
        return eval_dataset(self.split.images[index], self.split.labels[index], self.mean, self.std).tensors[0]

    def shown(self, x: torch.Tensor) -> np.ndarray:
        return denormalize(x, self.mean, self.std)


@dataclass(frozen=True)
class Destination:
    """Where results go: the run folder, and a TensorBoard writer (or None) at a step (the epoch)."""

    run_dir: Path
    tb_writer: Any = None
    step: int = 0
    logged: frozenset[str] = frozenset()  # scalar prefixes already written at this step (not written twice)

    def figure(self, fig, name: str, tag: str, dpi: int = 120) -> Path:
        """Save `fig` as run_dir/name and add the same picture to TensorBoard under `tag` (drawn once); close it.
        Returns the file."""
        path = Path(self.run_dir) / name
        png = figures.render(fig, dpi)
        figures.close(fig)
        files.write_bytes(path, png)
        if self.tb_writer is not None:
            self.tb_writer.add_image(tag, figures.png_to_array(png), global_step=self.step, dataformats="HWC")
        return path

    def text(self, tag: str, text: str) -> None:
        if self.tb_writer is not None:
            self.tb_writer.add_text(tag, text, global_step=self.step)

    def scalars(self, prefix: str, values: dict[str, float]) -> None:
        if self.tb_writer is not None and prefix not in self.logged:
            for key, value in values.items():
                self.tb_writer.add_scalar(prefix + key, value, global_step=self.step)
