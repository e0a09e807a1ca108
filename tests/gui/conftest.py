import pytest

pytestmark = pytest.mark.gui


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/gui" in str(item.fspath):
            item.add_marker(pytest.mark.gui)


def wait_until_idle(qtbot, widget, timeout=120_000):
    """Wait until the dock's job, and the prediction that may follow training, are done (the timeout
    guards against a hang; it is no speed check)."""
    # Opening an image ends on the GUI thread, a turn per layer, after its worker.
    qtbot.waitUntil(lambda: widget.worker is None and not widget.session.busy, timeout=timeout)



def record_errors(monkeypatch, into: list) -> None:
    """Collect the error notifications the dock shows, in whichever of its modules they are raised."""
    for module in ("widget", "prediction", "model_files", "experiment_panel"):
        monkeypatch.setattr(f"napari_mia.gui.{module}.show_error", into.append)


def tiny_dock(viewer, application: str = "semantic", **values):
    """The dock in ``viewer`` with a network of a hundred thousand weights (timm's test EfficientNet) and
    short runs: for tests whose subject is the loop, not accuracy. ``values`` set other controls by name."""
    from napari_mia.gui.widget import MiaWidget

    widget = MiaWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.application.value = application
    widget.backbone.value, widget.pretrained.value = "tu-test_efficientnet", False
    widget.color_mode.value, widget.downscale.value = "mono", "1"
    widget.epochs.value, widget.batch_size.value, widget.patch_size.value = 1, 4, 64
    widget.validation_fraction.value = 0.0
    for name, value in values.items():
        getattr(widget, name).value = value
    return widget
