"""A user's microscope at another magnification: DSB2018 instance models on the hold-out rescaled.

The seeded hold-out of ``dsb_instance.py`` (100 images) is resized by each ``--factors`` value (images
bilinear, labels nearest), as a user's objective or camera would make the same nuclei larger or smaller
than any the model was trained on, and each ``--model`` (trained by ``dsb_instance.py --workdir W``)
predicts it with ``napari-mia predict``. Prints the AP@0.5 mean per image for every model and factor,
and as ``name value target pass|fail`` how much of its AP at the training magnification a model keeps
(target 0.9).

    python benchmarks/magnification.py --workdir W --model W/dsb.safetensors [--model OTHER] [--factors 0.5 1 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from dsb_instance import colour_stems, score
from skimage.transform import resize

KEPT_TARGET = 0.9


def rescaled_hold_out(val: Path, factor: float, out: Path) -> Path:
    """The hold-out's images and labels resized by ``factor`` into ``out`` (made once)."""
    if (out / "labels").is_dir():
        return out
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    for path in sorted((val / "images").iterdir()):
        image = iio.imread(path)[..., :3]
        labels = tifffile.imread(val / "labels" / f"{path.stem}.tif")
        shape = tuple(max(32, round(side * factor)) for side in labels.shape)
        image = resize(image, (*shape, 3), order=1, preserve_range=True, anti_aliasing=factor < 1)
        iio.imwrite(out / "images" / f"{path.stem}.png", image.round().astype(np.uint8))
        tifffile.imwrite(out / "labels" / f"{path.stem}.tif",
                         resize(labels, shape, order=0, preserve_range=True, anti_aliasing=False).astype(np.uint16))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, required=True, help="a dsb_instance.py --workdir (its split/val)")
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()
    val = args.workdir / "split" / "val"
    if not val.is_dir():
        sys.exit(f"no hold-out in {val}: run benchmarks/dsb_instance.py --workdir {args.workdir} first")
    results = {}
    for factor in args.factors:
        folder = rescaled_hold_out(val, factor, args.workdir / f"magnified-{factor:g}")
        colour = colour_stems(folder / "images")
        for model in args.model:
            predicted = folder / f"predicted-{model.stem}-{model.parent.name}"
            subprocess.run([sys.executable, "-m", "napari_mia", "predict", "--model", str(model), "--images",
                            str(folder / "images"), "--out", str(predicted)], check=True)
            every = score(predicted, folder / "labels")["ap50_per_image"]
            grey = score(predicted, folder / "labels", {p.stem for p in (folder / "labels").iterdir()} - colour)
            shown = score(predicted, folder / "labels", colour)
            results[model, factor] = every
            print(f"magnification {factor:g}x {model.parent.name}/{model.name}: AP@0.5 mean per image {every:.4f} "
                  f"(fluorescence {grey['ap50_per_image']:.4f}, colour {shown['ap50_per_image']:.4f})", flush=True)
    for model in args.model:
        for factor in args.factors:
            if factor != 1.0 and (model, 1.0) in results:
                kept = results[model, factor] / results[model, 1.0]
                print(f"ap50_kept_at_{factor:g}x_{model.parent.name} {kept:.3f} {KEPT_TARGET} "
                      f"{'pass' if kept >= KEPT_TARGET else 'fail'}")


if __name__ == "__main__":
    main()
