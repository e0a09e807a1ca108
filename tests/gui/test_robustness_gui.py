"""Widget cases of docs/robustness.md: a notification naming the layer and the fix; layers survive."""

import threading

import numpy as np
import pytest
import torch
from napari.qt.threading import WorkerBase

from napari_mia.core.train import Trainer
from napari_mia.gui.widget import MiaWidget

from ..conftest import blobs
from .conftest import record_errors, wait_until_idle


@pytest.fixture
def setup(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    image, labels = blobs(shape=(128, 128), n=8)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="labels")
    widget = MiaWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.batch_size.value, widget.patch_size.value, widget.epochs.value = 4, 64, 2
    widget.backbone.value, widget.pretrained.value = "tu-test_efficientnet", False  # the faults, not accuracy
    widget.validation_fraction.value = 0.0
    errors = []
    record_errors(monkeypatch, errors)
    return viewer, widget, errors


def test_out_of_range_settings_are_reported(setup):
    _, widget, errors = setup
    widget.patch_size.value = 100
    widget.train_button.clicked()
    assert widget.worker is None and "patch_size" in errors[0] and "'cells'" in errors[0]


def test_single_class_labels_are_reported(setup, qtbot):
    viewer, widget, errors = setup
    viewer.layers["labels"].data = np.ones((128, 128), np.uint8)
    widget.train_button.clicked()  # samples are built in the worker: the message comes from there
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    assert widget.worker is None and widget.model is None and "'labels'" in errors[0] and "only class 1" in errors[0]


def test_exception_in_the_worker_becomes_a_notification_and_the_buttons_recover(setup, qtbot, monkeypatch):
    _, widget, errors = setup
    monkeypatch.setattr(Trainer, "_train_step", lambda *a: (_ for _ in ()).throw(ValueError("broken batch")))
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    qtbot.waitUntil(lambda: bool(errors), timeout=10_000)
    assert "broken batch" in errors[0]
    assert widget.train_button.enabled and not widget.stop_button.enabled


def test_out_of_memory_is_reported_with_advice(setup, qtbot, monkeypatch):
    _, widget, errors = setup
    monkeypatch.setattr(Trainer, "_train_step", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    qtbot.waitUntil(lambda: bool(errors), timeout=10_000)
    assert "lower Batch Size or Patch size" in errors[0]
    assert widget.model is not None and widget.save_button.enabled  # last good weights kept


def test_deleting_or_editing_input_layers_during_training_changes_nothing(setup, qtbot, monkeypatch):
    viewer, widget, errors = setup
    widget.epochs.value = 6
    edited, train_step = threading.Event(), Trainer._train_step

    def step_after_the_edit(trainer, *args):  # training waits for the edit, however fast the machine
        if trainer.step >= 1:
            edited.wait(timeout=300)
        return train_step(trainer, *args)

    monkeypatch.setattr(Trainer, "_train_step", step_after_the_edit)
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step >= 1, timeout=60_000)
    viewer.layers["labels"].data[:] = 0  # edits apply to the next run only
    viewer.layers.remove("cells")
    edited.set()
    wait_until_idle(qtbot, widget)
    assert widget.trainer.epoch == 6 and not errors
    assert "cells prediction" not in viewer.layers  # nothing to predict: the image is gone


def test_closing_napari_during_training_stops_the_worker(setup, qtbot):
    viewer, widget, _ = setup
    widget.epochs.value = 10_000
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step >= 1, timeout=60_000)
    viewer.close()
    qtbot.waitUntil(lambda: not WorkerBase._worker_set, timeout=30_000)
    assert widget.trainer.step < 10_000 * widget.trainer.batches_per_epoch


def test_rgb_layers_follow_their_rgb_flag(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    grey, labels = blobs(shape=(96, 96))
    rgb = np.stack([grey, grey // 2, grey // 3], axis=-1)
    viewer.add_image(rgb, name="colour", rgb=True)
    viewer.add_labels(labels, name="labels")
    widget = MiaWidget(viewer)
    widget.batch_size.value, widget.patch_size.value, widget.epochs.value = 4, 64, 1
    widget.validation_fraction.value = 0.0
    widget.color_mode.value = "color"
    assert widget.input_channels.value == 3
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    qtbot.waitUntil(lambda: "colour prediction" in viewer.layers, timeout=60_000)
    assert viewer.layers["colour prediction"].data.shape == (96, 96)  # the channel axis is not a frame axis
    errors = []
    record_errors(monkeypatch, errors)
    widget.reset_model()
    widget.color_mode.value = "mono"
    widget.input_channels.value = 2
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    assert "3 channel(s) but the model expects 2" in errors[0]
