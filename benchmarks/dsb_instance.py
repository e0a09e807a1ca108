"""DSB2018 nuclei instance segmentation, trained and predicted through the CLI.

Same seeded hold-out split as ``dsb_semantic.py`` (100 of 664 images). Trains with
``napari-mia train --application instance --max-minutes M``, predicts the hold-out with
``napari-mia predict`` and prints AP@0.5 and AP@0.5:0.95 (TP / (TP + FP + FN), objects matched one to one
by IoU with the Hungarian algorithm, pooled over all hold-out objects as StarDist reports it; and the
mean per image).

    python benchmarks/dsb_instance.py --minutes 15 [--tta] [extra train options...]

``--tta`` predicts with ``napari-mia predict --tta`` (the mean of the four flips of every tile).
"""

from __future__ import annotations

from pathlib import Path

import tifffile
from dsb_semantic import N_VALIDATION, train_and_predict

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


def main() -> None:
    predicted, truth, minutes = train_and_predict(15.0, "dsb-instance-", ["--application", "instance"])
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
