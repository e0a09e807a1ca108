"""npe2 sample data: a DSB2018 nuclei image (CC0) with its foreground labels."""

from __future__ import annotations

from pathlib import Path

import tifffile

SAMPLE_FOLDER = Path(__file__).resolve().parents[1] / "sample_data"


def nuclei_sample():
    image = tifffile.imread(SAMPLE_FOLDER / "nuclei.tif")
    labels = tifffile.imread(SAMPLE_FOLDER / "nuclei_labels.tif")
    return [
        (image, {"name": "nuclei"}, "image"),
        (labels, {"name": "nuclei labels"}, "labels"),
    ]
