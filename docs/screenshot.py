"""Screenshots of napari with the MIA Training dock: the Train Data window during training, or a folder
of DSB2018 images (shared/data) after Predict all, the most uncertain image open with its uncertainty.

    xvfb-run -a python docs/screenshot.py docs/images/training.png
    xvfb-run -a python docs/screenshot.py --experiment docs/images/experiment.png
    xvfb-run -a python docs/screenshot.py --loop docs/images   # loop-<application>-<width>.png

``--loop``: for each application, a folder of real images with the first annotated, a short training run
(the default network, 5 epochs), then Next: the second image with its prediction to correct, at 1280x800
and 1920x1080, the dock at napari's default width.
"""

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_mia.gui.config_panel import toggle_section
from napari_mia.gui.widget import MiaWidget


def main(path: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1050)
    viewer.open_sample("napari-mia", "nuclei")
    widget = MiaWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MIA Training")
    widget.epochs.value = 12
    widget.batch_size.value = 4
    # The sample mirrored as the validation pair: the plots show validation IoU.
    validation = viewer.add_image(viewer.layers["nuclei"].data[:, ::-1], name="nuclei mirrored")
    validation_labels = viewer.add_labels(viewer.layers["nuclei labels"].data[:, ::-1], name="nuclei mirrored labels")
    widget.image_layer.value, widget.labels_layer.value = viewer.layers["nuclei"], viewer.layers["nuclei labels"]
    widget.validation_image.value, widget.validation_labels.value = validation, validation_labels
    widget.validation_fraction.value = 0.0
    widget.train_button.clicked()
    _wait(lambda: widget.train_data.parent() is not None, 30)  # the window opens a turn after the click
    widget.train_data.parent().setFloating(False)  # it opens floating; docked, one screenshot shows both
    deadline = time.time() + 600
    while len(widget.train_data.epochs) < 5 and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    widget.train_data.redraw()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.screenshot(path, canvas_only=False)
    widget.stop_training()
    while widget.worker is not None and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.close()


def _wait(condition, seconds: float = 600) -> None:
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)


def experiment(path: str) -> None:
    import shutil
    import tempfile

    import tifffile

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_nuclei" / "train"
    folder = Path(tempfile.mkdtemp()) / "nuclei"
    folder.mkdir()
    ids = sorted(p.stem for p in (data / "images").glob("*.png"))[:8]
    for number, image_id in enumerate(ids, start=1):
        shutil.copy(data / "images" / f"{image_id}.png", folder / f"nuclei{number}.png")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    widget = MiaWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MIA Training")  # at napari's default width
    widget.application.value = "instance"
    widget.epochs.value, widget.batch_size.value, widget.validation_fraction.value = 40, 8, 0.0
    widget.predict_after.value = False
    panel = widget.experiment_panel
    panel.open_folder(folder)
    _wait(lambda: panel.current is not None and widget.worker is None)
    viewer.layers["nuclei1 labels"].data = tifffile.imread(data / "labels" / f"{ids[0]}.tif")
    widget.train_button.clicked()
    _wait(lambda: widget.worker is None and widget.model is not None)
    widget.train_data.parent().close()
    panel.predict_all_button.clicked()
    _wait(lambda: widget.worker is None)
    toggle_section(panel.folder_options, panel.folder_options_button, True)
    panel.order.value = "most uncertain"
    panel.show_uncertainty.value = True
    panel.next_button.clicked()
    _wait(lambda: widget.worker is None and panel.current.name != "nuclei1")
    panel.unsure_button.clicked()
    viewer.camera.zoom *= 2
    _wait(lambda: True, 1)
    viewer.screenshot(path, canvas_only=False)
    viewer.close()


def _loop_folder(application: str, folder):
    """A folder of four real images for ``application`` and a function that annotates the first one as a
    user would, once the dock shows it."""
    import csv
    import shutil

    import imageio.v3 as iio
    import numpy as np
    import tifffile

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    folder.mkdir(parents=True)
    if application == "semantic":
        em = shared / "isbi2012_em_membranes"
        for index in range(4):
            iio.imwrite(folder / f"slice{index}.png", iio.imread(em / "images" / f"{index:02d}.png")[:256, :256])
        membranes = (iio.imread(em / "labels" / "00.png")[:256, :256] == 0).astype(np.uint8)
        return "background, membrane", lambda viewer, _: viewer.layers["slice0 labels"].__setattr__(
            "data", membranes)
    if application == "detection":
        bccd = shared / "bccd_blood_cells"
        rows = list(csv.DictReader(open(bccd / "annotations.csv")))
        names = sorted({r["image"] for r in rows})[:4]
        for name in names:
            shutil.copy(bccd / "JPEGImages" / name, folder / name)

        def click(viewer, _):
            points = viewer.layers[f"{names[0][:-4]} points"]
            for r in rows:
                if r["image"] == names[0] and r["label"] in ("WBC", "Platelets"):
                    points.feature_defaults = {"class": r["label"], "score": 1.0}
                    points.add(np.array([[(int(r["ymin"]) + int(r["ymax"])) / 2,
                                          (int(r["xmin"]) + int(r["xmax"])) / 2]]))
        return "Platelets, WBC", click
    dsb = shared / "dsb2018_nuclei" / "train"
    index = list(csv.DictReader(open(dsb / "index.csv")))
    if application == "classification":
        grey = [r["image_id"] for r in index if r["is_grayscale"] == "1"][:2]
        colour = [r["image_id"] for r in index if r["is_grayscale"] == "0"][:2]
        for number, image_id in enumerate([grey[0], colour[0], grey[1], colour[1]], start=1):
            shutil.copy(dsb / "images" / f"{image_id}.png", folder / f"slide{number}.png")

        def choose(viewer, panel):
            panel.class_choice.value = "fluorescence"
            _wait(lambda: panel.current.status == "labelled")  # saved before the user moves on
            panel.step(1)
            _wait(lambda: panel.current.name == "slide2" and panel.dock.worker is None)
            panel.class_choice.value = "histology"
            _wait(lambda: panel.current.status == "labelled")
        return "fluorescence, histology", choose
    ids = [r["image_id"] for r in index][:4]
    for image_id in ids:
        shutil.copy(dsb / "images" / f"{image_id}.png", folder / f"{image_id}.png")

    def paint(viewer, panel):  # the image the folder opens with (natural order of the names)
        name = panel.current.name
        viewer.layers[f"{name} labels"].data = tifffile.imread(dsb / "labels" / f"{name}.tif")
    return "background, nucleus", paint


def loop(directory: str) -> None:
    """Each application's loop after its first Next, at 1280x800 and 1920x1080."""
    from napari_mia.core.config import APPLICATIONS

    for application in sys.argv[3:] or APPLICATIONS:
        _loop_screenshots(application, Path(directory))


def _loop_screenshots(application: str, directory: Path) -> None:
    import tempfile

    folder = Path(tempfile.mkdtemp()) / application
    classes, annotate = _loop_folder(application, folder)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    widget = MiaWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MIA Training")
    widget.application.value = application
    widget.epochs.value, widget.predict_after.value = 5, False
    widget.classes.value = classes
    panel = widget.experiment_panel
    panel.open_folder(folder)
    _wait(lambda: panel.current is not None and widget.worker is None, 60)
    annotate(viewer, panel)
    panel.save_now()
    widget.train_button.clicked()
    _wait(lambda: widget.worker is None and widget.model is not None)
    widget.train_data.parent().close()
    first = panel.current.name
    panel.step(1)
    _wait(lambda: widget.worker is None and panel.current.name != first)
    for width, height in ((1280, 800), (1920, 1080)):
        viewer.window._qt_window.resize(width, height)
        _wait(lambda: True, 1)
        viewer.screenshot(str(directory / f"loop-{application}-{width}.png"), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    if sys.argv[1] == "--loop":
        loop(sys.argv[2])
    elif sys.argv[1] == "--experiment":
        experiment(sys.argv[2])
    else:
        main(sys.argv[1])
