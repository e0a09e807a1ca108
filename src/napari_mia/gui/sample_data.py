"""npe2 sample data: a DSB2018 nuclei image (CC0) with its foreground labels, and a sample experiment (six
DSB2018 images, the first labelled) opened in the dock, to try the whole loop in the first minute."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import tifffile

SAMPLE_FOLDER = Path(__file__).resolve().parents[1] / "sample_data"
SAMPLE_EXPERIMENT = SAMPLE_FOLDER / "experiment"
# Where the sample experiment is copied on first use (labels, predictions and models are written there).
FOLDER_VARIABLE = "NAPARI_MIA_SAMPLE_FOLDER"


def nuclei_sample():
    image = tifffile.imread(SAMPLE_FOLDER / "nuclei.tif")
    labels = tifffile.imread(SAMPLE_FOLDER / "nuclei_labels.tif")
    return [
        (image, {"name": "nuclei"}, "image"),
        (labels, {"name": "nuclei labels"}, "labels"),
    ]


def sample_experiment_folder() -> Path:
    """The sample experiment in a folder of the user's (``$NAPARI_MIA_SAMPLE_FOLDER``, else
    ``~/napari-mia/sample experiment``), copied there the first time; the user's work in it stays."""
    folder = Path(os.environ.get(FOLDER_VARIABLE) or Path.home() / "napari-mia" / "sample experiment")
    if not folder.is_dir():
        shutil.copytree(SAMPLE_EXPERIMENT, folder)
    return folder


def experiment_sample():
    """Open the sample experiment in the MIA Training dock; its first image is the layer returned (the
    dock shows it with its labels and goes on from there)."""
    import napari

    from ..core.files import list_images, read_image

    folder = sample_experiment_folder()
    viewer = napari.current_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-mia", "MIA Training")
    widget.experiment_panel.open_folder(folder)
    first = list_images(folder)[0]
    image, channel_axis = read_image(first)
    return [(image, {"name": first.stem, "rgb": channel_axis is not None}, "image")]
