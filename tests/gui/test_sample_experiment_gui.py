"""File > Open Sample > napari-mia > Nuclei experiment: a folder of real images opened in the dock, and the
whole loop run on it as a newcomer would in the first minute."""

import numpy as np
from qtpy.QtWidgets import QMenu

from napari_mia.core.experiment import Experiment

from .conftest import record_errors, wait_until_idle


def _menu_action(window, *path):
    """The QAction at ``path`` of napari's menu bar (menu titles, then the action's text)."""
    menu = window._qt_window.menuBar()
    for title in path[:-1]:
        action = next(a for a in menu.actions() if a.text().replace("&", "") == title)
        menu = action.menu()
        assert isinstance(menu, QMenu)
    return next(a for a in menu.actions() if a.text().replace("&", "") == path[-1])


def test_the_sample_experiment_opens_from_the_file_menu_and_the_loop_runs_on_it(make_napari_viewer, qtbot, tmp_path,
                                                                                monkeypatch, trained_samples):
    folder = tmp_path / "sample experiment"
    monkeypatch.setenv("NAPARI_MIA_SAMPLE_FOLDER", str(folder))
    runs = trained_samples
    viewer = make_napari_viewer()
    _menu_action(viewer.window, "File", "Open Sample", "napari-mia",
                 "Nuclei experiment (a folder of six images, opened in MIA Training)").trigger()
    _, widget = viewer.window.add_plugin_dock_widget("napari-mia", "MIA Training")  # the dock it opened
    panel = widget.experiment_panel
    qtbot.waitUntil(lambda: panel.current is not None, timeout=30_000)
    wait_until_idle(qtbot, widget)
    assert [e.name for e in panel.experiment] == [f"nuclei{n}" for n in range(1, 7)]
    assert [layer.name for layer in viewer.layers] == ["nuclei1", "nuclei1 labels", "nuclei1 prediction"]
    assert panel.current.status == "labelled" and viewer.layers["nuclei1 labels"].data.any()

    widget.backbone.value, widget.pretrained.value = "tu-test_efficientnet", False  # a quick first model
    widget.epochs.value, widget.batch_size.value, widget.patch_size.value = 1, 4, 64
    errors = []
    record_errors(monkeypatch, errors)
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: len(runs) == 1, timeout=60_000)
    wait_until_idle(qtbot, widget)
    panel.next_button.clicked()
    qtbot.waitUntil(lambda: panel.current.name == "nuclei2", timeout=60_000)
    wait_until_idle(qtbot, widget)
    assert panel.current.status == "predicted"
    prediction = viewer.layers["nuclei2 prediction"]
    corrected = np.zeros(prediction.data.shape, np.uint16)
    corrected[100:130, 100:130] = 1  # the user's correction
    prediction.data = corrected
    panel.accept_button.clicked()
    qtbot.waitUntil(lambda: panel.current.status == "accepted", timeout=10_000)
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: len(runs) == 2, timeout=60_000)
    wait_until_idle(qtbot, widget)
    assert {e.name for e in panel.experiment.last_used} == {"nuclei1", "nuclei2"}  # one of them validates
    assert not errors
    reopened = Experiment.open(folder)
    assert [e.status for e in reopened][:3] == ["labelled", "accepted", "unlabelled"] and reopened.runs
