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


def test_importing_the_core_asks_nothing_of_the_network():
    """albumentations asks PyPI for its latest version when imported, unless told not to: a request no
    user asked for, and a wait where the network is closed."""
    script = """
import os, urllib.request
os.environ.pop("NO_ALBUMENTATIONS_UPDATE", None)
opened = []
urllib.request.OpenerDirector.open = lambda self, url, *args, **kwargs: opened.append(url)
urllib.request.urlopen = lambda url, *args, **kwargs: opened.append(url)
import napari_mia.core, napari_mia.core.augment
assert not opened, opened
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
