"""Every figure of a run, drawn with matplotlib's Agg backend (nothing else in the package draws)."""

from __future__ import annotations

import math
import textwrap
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def curves(records: Sequence[dict[str, Any]]) -> Figure:
    """Train and val loss (left) and accuracy (right) per epoch."""
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    splits = [("train", "-o"), ("val", "-s")] + ([("raw_val", "--^")] if records and "raw_val_loss" in records[0]
                                                  else [])
    for split, style in splits:
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in records], style, ms=3, label=split)
        ax_acc.plot(epochs, [100 * r[f"{split}_accuracy"] for r in records], style, ms=3, label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    # fixed margins, set by eye to match tight_layout's picture of a 40-epoch run (compared side by side): this is
    # redrawn after every epoch, and tight_layout measured every tick label each time (drawn and saved: 0.25 s with
    # it, 0.18 s without)
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.12, top=0.93, wspace=0.2)
    return fig


def lr_range_test(lrs: Sequence[float], losses: Sequence[float | None], marks: Sequence[tuple[str, float, str]],
                  title: str = "LR range test") -> Figure:
    """Smoothed training loss against the lr (log axis); `marks` are (label, lr, colour) drawn as vertical lines.
    A missing (non-finite) loss is left out; the y axis ends a little above the highest loss before the lowest one,
    so a diverging tail runs off the top instead of flattening the descent."""
    points = [(lr, loss) for lr, loss in zip(lrs, losses, strict=True) if loss is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], "-", color="tab:blue", lw=1.5, label="smoothed loss")
    ax.set_xscale("log")
    values = [p[1] for p in points]
    if values:
        low = min(values)
        span = max(values[: values.index(low) + 1]) - low
        if span > 0:
            ax.set_ylim(low - 0.05 * span, low + 1.25 * span)
    for label, lr, colour in marks:
        ax.axvline(lr, color=colour, ls="--", lw=1.2, label=f"{label}: {lr:.3g}")
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss (smoothed)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """An H x W x 3 image in [0, 1] with a CAM in [0, 1] blended on top in a colour map."""
    heat = matplotlib.colormaps[colormap](np.clip(cam, 0, 1))[..., :3]
    return np.clip((1 - alpha) * image + alpha * heat, 0, 1)


def _grid(n_panels: int, cols: int, panel: float = 1.6) -> tuple[Figure, np.ndarray]:
    rows = max(1, math.ceil(n_panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * panel, rows * (panel + 0.35)), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes.ravel()


def _fixed_layout(fig: Figure, hspace: float, top_inches: float) -> None:
    """Margins for a grid of titled image panels (`hspace`: room for the panel titles, in panel heights;
    `top_inches`: room for the suptitle and the first row's titles), set here instead of by tight_layout, which
    measures the text of every panel (seconds for a 60-panel grid)."""
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - top_inches / fig.get_figheight(), hspace=hspace,
                        wspace=0.08)


def render(fig: Figure, dpi: int) -> bytes:
    """The figure as PNG bytes, drawn once (the same bytes go to the file and to TensorBoard)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def png_to_array(png: bytes) -> np.ndarray:
    """H x W x 3 uint8 of PNG bytes (for TensorBoard's add_image)."""
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def misclassified_grid(images: np.ndarray, mistakes: Sequence[dict[str, Any]], cols: int = 5) -> Figure:
    """The de-normalized images, each titled `pred / true (p=0.93)`."""
    fig, axes = _grid(len(mistakes), cols, panel=1.8)
    for ax, img, m in zip(axes[:len(mistakes)], images, mistakes, strict=True):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(f"{m['pred_name']} / {m['true_name']}\n(p={m['prob']:.2f})", fontsize=8)
    fig.suptitle("misclassified test images: predicted / true (p = predicted probability)", fontsize=10)
    _fixed_layout(fig, hspace=0.45, top_inches=0.85)
    return fig


def gradcam_grid(images: np.ndarray, cam_pred: np.ndarray, cam_true: np.ndarray,
                 mistakes: Sequence[dict[str, Any]], method: str = "gradcam", per_row: int = 4,
                 title: str | None = None) -> Figure:
    """For each image, in the same order as the misclassified grid: image | CAM of pred | CAM of true."""
    fig, axes = _grid(3 * len(mistakes), 3 * per_row, panel=1.5)
    for k, m in enumerate(mistakes):
        a_img, a_pred, a_true = axes[3 * k: 3 * k + 3]
        a_img.imshow(images[k], interpolation="nearest")
        a_img.set_title(f"#{k + 1} idx {m['index']}", fontsize=7)
        a_pred.imshow(overlay(images[k], cam_pred[k]), interpolation="bilinear")
        a_pred.set_title(f"pred: {m['pred_name']}", fontsize=7, color="darkred")
        a_true.imshow(overlay(images[k], cam_true[k]), interpolation="bilinear")
        a_true.set_title(f"true: {m['true_name']}", fontsize=7, color="darkgreen")
    fig.suptitle(title or f"{method}: where the network looked, for the predicted class and for the true class "
                 "(jet: red = high)", fontsize=10)
    _fixed_layout(fig, hspace=0.3, top_inches=0.6)
    return fig


def confusion(cm: np.ndarray, classes: Sequence[str]) -> Figure:
    """Confusion matrix, rows = true class, columns = predicted class, with counts."""
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 1 + 0.55 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    limit = cm.max() / 2 if cm.size else 0
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > limit else "black")
    total = cm.sum()
    ax.set_title(f"confusion on {total} test images, accuracy {100 * np.trace(cm) / max(1, total):.2f}%", fontsize=9)
    fig.tight_layout()
    return fig


def faithfulness(curves: dict[str, dict[str, Sequence[float]]], images: np.ndarray, maps: np.ndarray,
                 cascade: dict[str, np.ndarray], title: str) -> Figure:
    """Top: mean deletion and insertion curves of each group's maps against its random-region baseline. Below, one
    row per image: the image, its map, and the map again after each cumulative randomization stage."""
    cols = 2 + len(cascade)
    fig = plt.figure(figsize=(max(9.0, 1.25 * cols), 4.2 + 1.35 * len(images)))
    outer = fig.add_gridspec(2, 1, height_ratios=[2.6, 1.2 * max(1, len(images))], hspace=0.32)
    top = outer[0].subgridspec(1, 2, wspace=0.22)
    rows = outer[1].subgridspec(max(1, len(images)), cols, hspace=0.25, wspace=0.08)
    for k, kind in enumerate(("deletion", "insertion")):
        ax = fig.add_subplot(top[0, k])
        for g, (group, c) in enumerate(curves.items()):
            for order, style in (("map", "-"), ("random_regions", "--"), ("random_pixels", ":")):
                values = c.get(f"{kind}/{order}")
                if values is not None:
                    x = np.linspace(0, 1, len(values))
                    ax.plot(x, values, style, color=f"C{g}", lw=1.4, label=f"{group}: {order.replace('_', ' ')}")
        ax.set(xlabel=f"fraction of pixels {'removed' if k == 0 else 'put back'} (fill: training mean)",
               ylabel="class probability", title=f"{kind} ({'lower' if k == 0 else 'higher'} = more faithful)",
               ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for r, image in enumerate(images):
        panels = [("image", image, None), ("trained", None, maps[r])]
        panels += [(f"+ {stage}", None, m[r]) for stage, m in cascade.items()]
        for c, (name, shown, cam) in enumerate(panels):
            ax = fig.add_subplot(rows[r, c])
            ax.imshow(shown if cam is None else overlay(image, cam), interpolation="bilinear")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.02, top=1 - 0.75 / fig.get_figheight())  # tight_layout: 1 s
    return fig


def own_images(images: np.ndarray, maps: np.ndarray, names: Sequence[str], captions: Sequence[str]) -> Figure:
    """One row per image: the 32 x 32 image the model saw, its map on top, and a caption (top-3 classes, scores)."""
    fig, axes = plt.subplots(len(images), 3, figsize=(9, 2.6 * len(images)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.6]})
    for row, image, cam, name, caption in zip(axes, images, maps, names, captions, strict=True):
        row[0].imshow(image, interpolation="nearest")
        row[0].set_title(name, fontsize=8)
        row[1].imshow(overlay(image, cam), interpolation="bilinear")
        row[1].set_title("map of the top class", fontsize=8)
        row[2].text(0, 0.5, caption, fontsize=8, va="center", family="monospace")
        for ax in row:
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
