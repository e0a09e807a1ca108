"""DSB2018 nuclei instance segmentation, trained and predicted through the CLI.

Same seeded hold-out split as ``dsb_semantic.py`` (100 of 664 images). Trains with
``napari-mia train --application instance --max-minutes M``, predicts the hold-out with
``napari-mia predict`` and prints AP@0.5 and AP@0.5:0.95 (TP / (TP + FP + FN), objects matched one to one
by IoU with the Hungarian algorithm, pooled over all hold-out objects as StarDist reports it; and the
mean per image).

    python benchmarks/dsb_instance.py --minutes 15 [--tta] [--brightfield-as-fluorescence] [train options...]

``--tta`` predicts with ``napari-mia predict --tta`` (the mean of the four flips of every tile).
``--brightfield-as-fluorescence`` trains and predicts on a copy of the data in which every colour (stained,
bright-field) image is shown as fluorescence: a question for the data, not yet an option of napari-mia.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from dsb_semantic import DATA, N_VALIDATION, train_and_predict
from skimage.color import rgb2gray

from napari_mia.core.auto import is_colour
from napari_mia.core.files import read_image
from napari_mia.core.metrics import InstanceScore


def score(predicted: Path, truth: Path, stems: set[str] | None = None) -> dict[str, float]:
    instance_score = InstanceScore()
    for path in sorted(truth.glob("*.tif")):
        if stems is None or path.stem in stems:
            instance_score.add(tifffile.imread(path), tifffile.imread(predicted / path.name))
    return instance_score.metrics()


def colour_stems(images: Path) -> set[str]:
    """The hold-out's colour (H&E-like) images; the others are grey fluorescence saved as RGB."""
    return {path.stem for path in images.iterdir() if is_colour(*read_image(path))}


def brightfield_as_fluorescence(data: Path, root: Path) -> Path:
    """A copy of DSB2018's ``data`` folder (images/, labels/) in which every colour image shows its inverted
    luminance: stained nuclei, dark on a bright ground, become bright on a dark one, as in the fluorescence
    images. Blue is one grey level above red and green, so the image still counts as colour (the balance of
    looks and the colour/grey scores keep their groups); the grey images and the labels are linked."""
    for kind in ("images", "labels"):
        (root / kind).mkdir(parents=True)
    for path in sorted((data / "images").glob("*.png")):
        (root / "labels" / f"{path.stem}.tif").symlink_to(data / "labels" / f"{path.stem}.tif")
        image, channel_axis = read_image(path)
        if not is_colour(image, channel_axis):
            (root / "images" / path.name).symlink_to(path)
            continue
        inverted = np.round(255 * (1 - rgb2gray(image))).astype(np.uint8)  # read_image drops alpha
        iio.imwrite(root / "images" / path.name, np.stack([inverted, inverted, np.minimum(inverted, 254) + 1], -1))
    return root


def main() -> None:
    data = DATA
    if "--brightfield-as-fluorescence" in sys.argv:  # removed before train_and_predict hands the rest to the CLI
        sys.argv.remove("--brightfield-as-fluorescence")
        data = brightfield_as_fluorescence(DATA, Path(tempfile.mkdtemp()) / "train")
    predicted, truth, minutes = train_and_predict(15.0, "dsb-instance-", ["--application", "instance"], data)
    metrics = score(predicted, truth)
    print(f"dsb_instance: train {minutes:.1f} min (incl. loading), hold-out {N_VALIDATION} images: "
          f"AP@0.5 {metrics['ap50']:.4f}, AP@0.5:0.95 {metrics['ap50_95']:.4f}, "
          f"AP@0.5 mean per image {metrics['ap50_per_image']:.4f}")
    colour = colour_stems(truth.parent / "images")
    grey = {path.stem for path in truth.glob("*.tif")} - colour
    for name, stems in (("fluorescence", grey), ("colour", colour)):
        part = score(predicted, truth, stems)
        print(f"dsb_instance {name} ({len(stems)} images): AP@0.5 mean per image {part['ap50_per_image']:.4f}, "
              f"pooled {part['ap50']:.4f}")


if __name__ == "__main__":
    main()
