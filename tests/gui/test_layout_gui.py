"""The dock as a microscopist sees it: the loop on the first screen at napari's default window sizes, nothing
clipped at any width the dock can be dragged to, MIA's Training Window in a window of its own."""

import shutil
from pathlib import Path

import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractButton, QAbstractItemView, QAbstractSpinBox, QComboBox, QLabel, QLineEdit

from napari_mia.core.config import APPLICATIONS

DSB = Path(__file__).resolve().parents[3] / "shared" / "data" / "dsb2018_nuclei" / "train" / "images"
MIAS_NAMES = ("Deep Learning Architecture", "Model Backbone", "Pretrained Net", "Classes", "Color / Mono",
              "Batch Size", "Epochs", "Learning Rate", "Down Scaling", "Settings", "Augmentations",
              "Start Training")


@pytest.fixture
def dsb_folder(tmp_path):
    """Asked for before the viewer: a test skipped after napari's viewer fixture is set up errors in its
    teardown."""
    if not DSB.is_dir():
        pytest.skip("DSB2018 (shared/data) is not on this machine")
    folder = tmp_path / "nuclei"
    folder.mkdir()
    for image in sorted(DSB.glob("*.png"))[:4]:  # their names are 64 characters long
        shutil.copy(image, folder / image.name)
    return folder


def _dock(viewer):
    """The dock as napari adds it from the Plugins menu: its default width, in a shown window."""
    from napari_mia.gui.widget import MiaWidget

    widget = MiaWidget(viewer)
    return widget, viewer.window.add_dock_widget(widget, name="MIA Training")


def _settle(qtbot, widget):
    # The image is open once its layers are all shown (a turn each) and the job has ended.
    qtbot.waitUntil(lambda: widget.experiment_panel.current is not None and not widget.session.busy,
                    timeout=30_000)
    qtbot.wait(200)  # layouts and the table's columns settle


def _loop_buttons(widget):
    panel = widget.experiment_panel
    return [panel.open_button, panel.previous_button, panel.next_button, panel.accept_button,
            panel.predict_all_button, widget.train_button, widget.stop_button]


def _fully_visible(native) -> bool:
    """Shown, and no part of it cut off by the scroll area or the window: what the user sees is all of it."""
    return native.isVisible() and native.visibleRegion().boundingRect() == native.rect()


def _columns_in_view(table) -> bool:
    view = table.native
    width = view.viewport().width()
    return view.horizontalScrollBar().maximum() == 0 and all(
        0 <= view.columnViewportPosition(c) and view.columnViewportPosition(c) + view.columnWidth(c) <= width
        for c in range(view.columnCount()))


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_the_loop_is_on_the_first_screen_for_every_application(dsb_folder, make_napari_viewer, qtbot, size):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*size)
    widget, _ = _dock(viewer)
    panel = widget.experiment_panel
    panel.open_folder(dsb_folder)
    for application in APPLICATIONS:
        widget.application.value = application  # the folder is read again for this application's annotations
        _settle(qtbot, widget)
        for button in _loop_buttons(widget):
            assert _fully_visible(button.native), (application, size, button.text)
        assert _columns_in_view(panel.table), (application, size)
        image_column = panel.table.native.columnWidth(0)
        assert image_column >= 80, image_column  # the elided names stay readable
        item = panel.table.native.item(0, 0)
        assert len(item.text()) == 64 and item.toolTip().startswith(item.text())  # elided on screen, whole here
    assert panel.table.native.textElideMode() == Qt.TextElideMode.ElideMiddle
    # With a folder open the one-pair layer choices fold away; closing the folder brings them back.
    assert widget.open_layers.native.isHidden()
    panel.close_button.clicked()
    assert not widget.open_layers.native.isHidden()


def test_at_its_narrowest_the_dock_clips_no_button(dsb_folder, make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    widget, dock = _dock(viewer)
    widget.application.value = "detection"  # the widest panel: a Class choice beside Predict all
    widget.experiment_panel.open_folder(dsb_folder)
    _settle(qtbot, widget)
    panel = widget.experiment_panel
    for section in (panel.folder_options_button, widget.open_layers_button):  # every section unfolded
        section.clicked()
    assert not panel.folder_options.native.isHidden() and not widget.open_layers.native.isHidden()
    narrowest = widget.native.minimumWidth()
    panel.summary.value = f"Opening {'x' * 200}…"  # a long file name, no space to wrap at
    qtbot.wait(100)
    assert widget.native.minimumWidth() <= narrowest
    def dragged_to_its_narrowest():  # as a user drags until it stops: the unfolded sections' layout may settle later
        viewer.window._qt_window.resizeDocks([dock], [1], Qt.Orientation.Horizontal)
        return widget.native.width() == widget.native.minimumWidth()

    qtbot.waitUntil(dragged_to_its_narrowest, timeout=10_000)  # as narrow as napari lets it be
    qtbot.wait(200)
    viewport = widget.native.viewport()
    buttons = [b for b in widget.native.findChildren(QAbstractButton) if b.isVisible()]
    assert len(buttons) >= 10
    for button in buttons:
        left = button.mapTo(viewport, button.rect().topLeft()).x()
        assert 0 <= left and left + button.width() <= viewport.width(), button.text()
        assert button.width() >= button.minimumSizeHint().width(), button.text()  # its text is not cut
    table = widget.experiment_panel.table.native
    assert table.mapTo(viewport, table.rect().topLeft()).x() + table.width() <= viewport.width()


def test_mias_training_window_is_a_window_of_its_own_and_the_first_screen_is_short(dsb_folder, make_napari_viewer,
                                                                                   qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    widget, _ = _dock(viewer)
    widget.experiment_panel.open_folder(dsb_folder)
    _settle(qtbot, widget)
    controls = (QAbstractButton, QComboBox, QAbstractItemView, QLineEdit, QAbstractSpinBox)
    first_screen = [c for kind in controls for c in widget.native.findChildren(kind)
                    if c.isVisible() and _fully_visible(c) and c.parent().isVisible()
                    and not isinstance(c.parent(), QAbstractItemView)]
    # Application, Train, Stop, Resume, Open/Close folder, the table, Previous, Next, Accept, Predict all, and
    # three buttons that open the rest: Role/order/runs, Training Window, Images open in napari.
    assert len(first_screen) <= 14, [type(c).__name__ for c in first_screen]
    for hidden in (widget.epochs, widget.backbone, widget.learning_rate):  # in the Training Window, not here
        assert not hidden.native.isVisible()

    widget.training_window_button.clicked()
    window = widget.training_window.root_native_widget
    qtbot.waitUntil(window.isVisible)
    assert window.parent().isFloating()  # beside the dock, as MIA opens it; its title bar docks it
    texts = " ".join(w.text() for kind in (QLabel, QAbstractButton) for w in window.findChildren(kind))
    for name in MIAS_NAMES:
        assert name in texts, name
    widget.epochs.value, widget.batch_size.value, widget.patch_size.value = 1, 4, 64
    widget.backbone.value, widget.pretrained.value = "tu-test_efficientnet", False
    widget.start_training_button.clicked()  # MIA's Start Training is the dock's Train
    assert widget.session.state == "training"
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    viewer.window.remove_dock_widget(widget.native)  # the user closes the dock: its Training Window goes too
    assert not window.parent().isVisible()
