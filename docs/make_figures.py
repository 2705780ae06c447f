"""The README's pictures of a real run, small enough to commit: the curves, the GradCAM probe at its first and
last explained epochs (as TensorBoard stores them), and the top rows of the completion GradCAM grid.

    python docs/make_figures.py RUN_DIR [--out docs] [--width 900]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

from ignite_cifar.explain.probe import TAG


def small(image: Image.Image, width: int) -> Image.Image:
    """Scaled to `width` pixels and reduced to a 128-colour palette: tens of kB instead of a megabyte."""
    height = round(image.height * width / image.width)
    return image.convert("RGB").resize((width, height), Image.LANCZOS).quantize(128)


def probe_steps(tb_dir: Path) -> list[tuple[int, Image.Image]]:
    events = EventAccumulator(str(tb_dir), size_guidance={IMAGES: 0})
    events.Reload()
    return [(e.step, Image.open(io.BytesIO(e.encoded_image_string))) for e in events.Images(TAG)]


def stacked(images: list[Image.Image]) -> Image.Image:
    width = max(i.width for i in images)
    out = Image.new("RGB", (width, sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        out.paste(image.convert("RGB"), (0, top))
        top += image.height
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, default=Path(__file__).parent)
    p.add_argument("--width", type=int, default=900)
    args = p.parse_args(argv)
    steps = probe_steps(args.run / "tb")
    if not steps:
        raise SystemExit(f"{args.run / 'tb'} has no {TAG} images: train with --probe-every N > 0")
    written = {"probe.png": small(stacked([steps[0][1], steps[-1][1]]), args.width),
               "curves.png": small(Image.open(args.run / "curves.png"), args.width)}
    grid = Image.open(args.run / "gradcam.png")
    written["gradcam.png"] = small(grid.crop((0, 0, grid.width, grid.height * 2 // 5)), args.width)
    for name, image in written.items():
        image.save(args.out / name, optimize=True)
        print(f"{args.out / name}: {image.width}x{image.height}, {(args.out / name).stat().st_size // 1024} kB")
    print(f"probe steps used: {steps[0][0]} and {steps[-1][0]}")


if __name__ == "__main__":
    main()
