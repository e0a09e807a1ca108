"""Screenshot of napari with the MIA Training dock and the Train Data window during training.

    xvfb-run -a python docs/screenshot.py docs/images/training.png
"""

import sys
import time

import napari
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
    widget.settings_button.clicked()
    widget.validation_fraction.value = 0.0
    widget.validation_image.value = viewer.layers["nuclei"]
    widget.validation_labels.value = viewer.layers["nuclei labels"]
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


if __name__ == "__main__":
    main(sys.argv[1])
