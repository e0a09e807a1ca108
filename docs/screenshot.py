"""Screenshots of napari with the MIA Training dock: the Train Data window during training, or a folder
of DSB2018 images (shared/data) after Predict all, the most uncertain image open with its uncertainty.

    xvfb-run -a python docs/screenshot.py docs/images/training.png
    xvfb-run -a python docs/screenshot.py --experiment docs/images/experiment.png
"""

import sys
import time

import napari
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

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
    from pathlib import Path

    import tifffile

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_nuclei" / "train"
    folder = Path(tempfile.mkdtemp()) / "nuclei"
    folder.mkdir()
    ids = sorted(p.stem for p in (data / "images").glob("*.png"))[:8]
    for number, image_id in enumerate(ids, start=1):
        shutil.copy(data / "images" / f"{image_id}.png", folder / f"nuclei{number}.png")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1050)
    widget = MiaWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="MIA Training")
    viewer.window._qt_window.resizeDocks([dock], [620], Qt.Horizontal)  # wide enough for the whole table
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
    panel.order.value = "most uncertain"
    panel.show_uncertainty.value = True
    panel.next_button.clicked()
    _wait(lambda: widget.worker is None and panel.current.name != "nuclei1")
    panel.unsure_button.clicked()
    viewer.camera.zoom *= 2
    _wait(lambda: True, 1)
    viewer.screenshot(path, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    if sys.argv[1] == "--experiment":
        experiment(sys.argv[2])
    else:
        main(sys.argv[1])
