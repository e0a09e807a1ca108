"""A new user's first steps, each in a fresh process as a user starts them: napari first, then the dock.

The rest of the suite imports the plugin (and so PyTorch) before any viewer exists, which hides what goes
wrong when napari has made its OpenGL context first (triton's LLVM against Mesa's: a segmentation fault).
"""

import os
import subprocess
import sys
from pathlib import Path

VIEWER_FIRST = """
import sys
import time
import napari
import numpy as np
from qtpy.QtWidgets import QApplication

viewer = napari.Viewer()  # the OpenGL context exists before anything of the plugin is imported
assert "torch" not in sys.modules
viewer.open_sample("napari-mia", "nuclei")
_, widget = viewer.window.add_plugin_dock_widget("napari-mia", "MIA Training")
widget.epochs.value, widget.batch_size.value, widget.patch_size.value = 1, 4, 64
widget.backbone.value = "tu-test_efficientnet"  # a tiny network: the subject is the start, not accuracy
widget.validation_fraction.value = 0.0


def wait_until(condition, seconds=600):  # a guard against a hang, not a speed check
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        QApplication.processEvents()
        time.sleep(0.02)


widget.train_button.clicked()
wait_until(lambda: "nuclei prediction" in viewer.layers and widget.worker is None)
prediction = viewer.layers["nuclei prediction"].data
assert prediction.shape == viewer.layers["nuclei"].data.shape[:2], prediction.shape
widget.predict_button.clicked()
wait_until(lambda: widget.worker is None and widget.predict_button.enabled)
print("trained and predicted", len(widget.history), "epoch(s)", flush=True)
viewer.close()
"""


def _run(command, timeout=900):
    environment = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


def test_dock_opened_from_a_running_napari_trains_and_predicts():
    result = _run([sys.executable, "-c", VIEWER_FIRST])
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
    assert "trained and predicted 1 epoch(s)" in result.stdout


def test_napari_mia_gui_opens_the_dock_and_sample_on_qt6_without_warnings():
    launcher = Path(sys.executable).with_name("napari-mia-gui")  # the installed command, as a user runs it
    result = _run([str(launcher), "--quit-after", "2"])
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
    assert "docks: MIA Training (napari-mia); layers: nuclei, nuclei labels" in result.stdout
    binding = result.stdout.split("window up on ")[1].split(";")[0]
    assert binding in ("PyQt6", "PySide6")
    for warning in ("deprecated", "requires a Qt6 backend"):  # napari shows these as toasts over the canvas
        assert warning not in result.stderr, result.stderr[-4000:]
