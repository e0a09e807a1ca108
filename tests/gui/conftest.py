import pytest

pytestmark = pytest.mark.gui


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/gui" in str(item.fspath):
            item.add_marker(pytest.mark.gui)


def wait_until_idle(qtbot, widget, timeout=120_000):
    """Wait until the dock's job, and the prediction that may follow training, are done (the timeout
    guards against a hang; it is no speed check)."""
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)



def record_errors(monkeypatch, into: list) -> None:
    """Collect the error notifications the dock shows, in whichever of its modules they are raised."""
    for module in ("widget", "prediction", "model_files", "experiment_panel"):
        monkeypatch.setattr(f"napari_mia.gui.{module}.show_error", into.append)
