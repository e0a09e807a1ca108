import csv
import time

import numpy as np
import pytest
import torch
from qtpy.QtCore import QTimer

from napari_mia.gui.widget import MiaWidget

from ..conftest import blobs
from .conftest import wait_until_idle


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    image, labels = blobs(shape=(128, 128), n=8)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="labels")
    validation_image, validation_labels = blobs(shape=(96, 96), n=5, seed=7)
    viewer.add_image(validation_image, name="val image")
    viewer.add_labels(validation_labels, name="val labels")
    widget = MiaWidget(viewer)
    widget.image_layer.value, widget.labels_layer.value = viewer.layers["cells"], viewer.layers["labels"]
    widget.validation_image.value = viewer.layers["val image"]
    widget.validation_labels.value = viewer.layers["val labels"]
    widget.batch_size.value, widget.patch_size.value = 4, 64
    widget.backbone.value, widget.pretrained.value = "tu-test_efficientnet", False  # the plots, not accuracy
    widget.predict_after.value = False
    return widget


def test_optional_validation_layers_default_to_none(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8)), name="a")
    widget = MiaWidget(viewer)
    assert widget.validation_image.value is None and widget.validation_labels.value is None


def test_train_data_window_plots_stops_resumes_and_exports(widget, qtbot, tmp_path):
    widget.epochs.value = 30
    window = widget.train_data
    widget.train_button.clicked()
    # A turn after the click: the dock's repaint and the new window's first paint are two short freezes.
    assert window.parent() is None
    qtbot.waitUntil(lambda: window.parent() is not None and window.isVisible())  # a napari dock widget
    assert window.parent().isFloating()  # opening it must not shrink napari's canvas
    qtbot.waitUntil(lambda: len(window.epochs) >= 2, timeout=120_000)
    window.stop_button.click()
    wait_until_idle(qtbot, widget)
    qtbot.waitUntil(lambda: window.resume_button.isEnabled(), timeout=10_000)
    steps_at_stop = window.steps[-1]
    window.resume_button.click()
    qtbot.waitUntil(lambda: window.steps[-1] > steps_at_stop and len(window.epochs) >= 3, timeout=120_000)
    window.stop_button.click()
    wait_until_idle(qtbot, widget)
    window.redraw()

    x = window.batch_curve.xData
    assert list(x) == window.steps and len(x) >= 3 * widget.trainer.batches_per_epoch
    assert window.steps == list(range(1, len(window.steps) + 1))  # resume continued the same run
    epochs_x, losses = window.val_epoch_curve.xData, window.val_epoch_curve.yData  # not log-scaled
    assert list(epochs_x) == [e.epoch + 1 for e in window.epochs]
    np.testing.assert_allclose(losses, [e.val_loss for e in window.epochs])
    assert "foreground_iou" in window.metric_plot.titleLabel.text
    assert "best epoch" in window.counters.text() and "patches/s" in window.counters.text()

    window.export_csv(tmp_path / "history.csv")
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [e.epoch for e in widget.history]
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([e.train_loss for e in widget.history])
    assert [float(r["val_foreground_iou"]) for r in rows] == pytest.approx(
        [e.val_metrics["foreground_iou"] for e in widget.history])
    window.save_png(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


@pytest.mark.slow  # a wall-clock bound: it depends on the machine's speed and load (benchmarks/widget_bench.py)
def test_event_loop_never_stalls_while_training(widget, qtbot, capsys):
    widget.epochs.value = 12
    widget.validation_fraction.value = 0.0
    gaps, last = [], [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    timer.stop()
    worst_stall_ms = (max(gaps[1:]) - 0.010) * 1000
    with capsys.disabled():
        print(f"\nworst event-loop stall while training: {worst_stall_ms:.0f} ms over {len(gaps)} ticks")
    assert len(widget.history) == 12 and len(gaps) > 100
    assert worst_stall_ms < 100


def test_settings_and_augmentations_sections_reach_the_training(widget, qtbot):
    assert widget.settings.native.isHidden()
    widget.settings_button.clicked()
    assert not widget.settings.native.isHidden() and widget.settings_button.text == "Settings ▾"
    settings = {w.name: w for w in widget.settings}
    settings["optimizer"].value = "sgd_nesterov"
    settings["lr_schedule"].value = "step"
    settings["class_weighting"].value = "manual"
    settings["class_weights"].value = "1, 4"
    settings["preview_every"].value = 1
    augmentations = {w.name: w for w in widget.augmentations if hasattr(w, "name")}
    augmentations["affine_probability"].value = 0.5
    augmentations["translate"].value = (-0.1, 0.1)
    config = widget.config()
    assert config.optimizer == "sgd_nesterov" and config.class_weights == [1.0, 4.0]
    assert config.augmentations.affine_probability == 0.5 and config.augmentations.translate == (-0.1, 0.1)
    widget.epochs.value = 1
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: widget.trainer is not None, timeout=30_000)
    assert isinstance(widget.trainer.optimizer, torch.optim.SGD)
    assert widget.trainer.class_weights == pytest.approx([0.4, 1.6])
    wait_until_idle(qtbot, widget)
    qtbot.waitUntil(lambda: "cells preview" in widget.viewer.layers, timeout=60_000)


def test_augmentation_preview_layers(widget):
    widget.preview_augmentations_button.clicked()
    images = widget.viewer.layers["augmentation preview"].data
    labels = widget.viewer.layers["augmentation preview labels"].data
    assert images.shape == (8, 64, 64) and labels.shape == (8, 64, 64)


def test_curves_are_fitted_when_redrawn_not_when_painted(qtbot):
    """pyqtgraph fits a plot to new data as it paints, and the refitted axes then need a second paint
    (about 20 ms each while PyTorch runs): redraw fits them first, so one paint shows the update."""
    from napari_mia.core.events import BatchEnd
    from napari_mia.gui.train_plot import TrainDataWindow

    window = TrainDataWindow()
    qtbot.addWidget(window)
    for step in range(1, 201):
        window.on_event(BatchEnd(0, step, 200, step, 1.0 / step, 1e-3 * step, 5.0))
    window.redraw()  # no event processed, so nothing painted yet
    (first_step, last_step), _ = window.loss_plot.viewRange()
    assert first_step <= 1 and last_step >= 200
    assert window.lr_plot.viewRange()[1][1] >= 0.2


def test_log_scaled_losses_are_labelled_at_1_2_5_not_at_every_minor_tick():
    from types import SimpleNamespace

    from napari_mia.gui.train_plot import _set_log_ticks

    labels = []
    plot = SimpleNamespace(getAxis=lambda side: SimpleNamespace(setTicks=labels.append))
    _set_log_ticks(plot, [0.8, 0.3, 0.04])
    assert [text for _, text in labels[-1][0]] == ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5"]
    _set_log_ticks(plot, [12.0, 0.0004])  # more than three decades: powers of ten only
    assert [text for _, text in labels[-1][0]] == ["0.0001", "0.001", "0.01", "0.1", "1", "10", "100"]
    _set_log_ticks(plot, [])
    assert labels[-1] is None  # pyqtgraph's own ticks again


def test_the_end_of_training_is_notified_a_turn_after_the_status_line(widget, qtbot, monkeypatch):
    # The status line's repaint and the notification's (over the canvas) were one freeze of the window.
    from napari_mia.core.events import TrainingDone

    notified = []
    monkeypatch.setattr("napari_mia.gui.widget.show_info", notified.append)
    widget._on_training_event(TrainingDone(reason="finished", epochs_completed=2, steps=8, seconds=5.0))
    assert notified == []
    qtbot.waitUntil(lambda: notified == ["Training finished after 8 batches (5 s)."], timeout=2000)
