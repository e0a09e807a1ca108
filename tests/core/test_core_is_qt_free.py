import subprocess
import sys


def test_core_and_cli_never_import_qt_or_napari():
    script = """
import sys
import napari_mia.core, napari_mia.core.cli
try:
    napari_mia.core.cli.main(["train", "--help"])
except SystemExit:
    pass
gui = ("qtpy", "PyQt5", "PySide2", "PyQt6", "PySide6", "napari", "magicgui", "vispy", "pyqtgraph")
bad = [m for m in sys.modules if m.split(".")[0] in gui]
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
