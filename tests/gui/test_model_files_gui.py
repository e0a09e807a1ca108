"""A model's config and history survive the dock: Load, Train, Save, Load gives back what the file held."""

import json
import sys

import numpy as np
import pytest
import tifffile

from napari_mia.core import load_model, save_model
from napari_mia.core.cli import main
from napari_mia.core.models import build_model
from napari_mia.gui.widget import MiaWidget
from tests.configs import fixed_config

from ..conftest import blobs, instance_blobs
from .conftest import record_errors, wait_until_idle


@pytest.fixture
def cli_model(tmp_path):
    """A model the command line trained with settings the dock does not show."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    for index in range(2):
        image, label = blobs(shape=(96, 96), seed=index)
        tifffile.imwrite(images / f"{index}.tif", image), tifffile.imwrite(labels / f"{index}.tif", label)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"decoder_channels": [64, 32, 16, 16, 8], "normalize_percentiles": [2.0, 99.0],
                                    "class_colors": ["#101010", "#ff00ff"], "min_object_size": 7,
                                    "tile_overlap": 32, "optimizer": "adamw"}))
    path = tmp_path / "cli.safetensors"
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(path), "--epochs", "1",
                 "--batch-size", "2", "--patch-size", "64", "--validation-fraction", "0", "--config",
                 str(settings), "--classes", "bg,nucleus"]) == 0
    return path


def test_load_train_save_load_keeps_every_setting_and_the_history(make_napari_viewer, qtbot, tmp_path, cli_model):
    viewer = make_napari_viewer()
    image, labels = blobs(shape=(96, 96), seed=5)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="labels")
    widget = MiaWidget(viewer)
    _, trained, history = load_model(cli_model)
    widget.load_model(cli_model)
    assert widget.history == history and len(history) == 1
    assert not widget.backbone.enabled and not widget.classes.enabled  # fixed by the model, as in MIA
    assert "Reset model" in widget.backbone.tooltip
    assert widget.config().to_dict() == trained.to_dict()  # nothing the dock does not show is lost

    widget.predict_after.value = False
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    qtbot.waitUntil(lambda: widget.save_button.enabled, timeout=60_000)
    widget.save_model(tmp_path / "again.safetensors")
    _, saved, saved_history = load_model(tmp_path / "again.safetensors")  # the weights fit the settings
    assert saved.to_dict() == trained.to_dict()
    assert saved_history[:1] == history and len(saved_history) == 2  # the earlier run, then the dock's

    widget.reset_model()
    assert widget.backbone.enabled and widget.classes.enabled


def test_a_retrained_detection_model_keeps_its_calibrated_thresholds(make_napari_viewer, qtbot, tmp_path,
                                                                        monkeypatch):
    viewer = make_napari_viewer()
    image, _, centres = instance_blobs((96, 96), n=6)
    viewer.add_image(image, name="cells")
    points = viewer.add_points(centres, name="marks")
    config = fixed_config(application="detection", classes=["nucleus"], peak_thresholds=[0.42],
                            batch_size=2, patch_size=64, epochs=1, validation_fraction=0.0)
    save_model(tmp_path / "detector.safetensors", build_model(config), config)
    widget = MiaWidget(viewer)
    widget.load_model(tmp_path / "detector.safetensors")
    widget.points_layer.value = points
    widget.predict_after.value = False
    notified = []
    monkeypatch.setattr("napari_mia.gui.widget.show_info", notified.append)
    widget.train_button.clicked()  # no validation frames: nothing to calibrate on
    wait_until_idle(qtbot, widget)
    assert widget.trainer.history and widget.model_config.peak_thresholds == [0.42]
    assert len(widget.model_config.mass_per_object) == 1  # measured on the training frames all the same
    # the notification says how new images will be counted
    qtbot.waitUntil(lambda: any("Points counted by each class's heatmap mass (no validation frame" in n
                                for n in notified), timeout=2000)


@pytest.fixture
def dock_with_a_model(make_napari_viewer, monkeypatch):
    """A dock holding an untrained model, and the error messages it shows."""
    widget = MiaWidget(make_napari_viewer())
    config = fixed_config(patch_size=64)
    widget.session.set_model(build_model(config).eval(), config)
    errors = []
    record_errors(monkeypatch, errors)
    return widget, errors


def test_onnx_export_without_onnx_installed_says_what_to_install(dock_with_a_model, qtbot, tmp_path, monkeypatch):
    widget, errors = dock_with_a_model
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the export extra were not installed
    widget.export_model(tmp_path / "m.onnx")
    wait_until_idle(qtbot, widget)
    assert len(errors) == 1 and 'pip install "napari-mia[export]"' in errors[0]
    assert not (tmp_path / "m.onnx").exists() and widget.session.state == "idle"


def test_export_runs_in_a_worker_and_leaves_the_model_in_use_as_it_was(dock_with_a_model, qtbot, tmp_path):
    """The model may be on a GPU and part-trained (Stop, then Resume): a copy is exported, off the GUI thread."""
    widget, errors = dock_with_a_model
    model = widget.model.train()
    parameters = list(model.parameters())
    widget.export_model(tmp_path / "m.pt")
    assert widget.session.state == "exporting" and not widget.train_button.enabled  # the click returned at once
    wait_until_idle(qtbot, widget)
    assert (tmp_path / "m.pt").is_file() and not errors and widget.train_button.enabled
    assert model.training and all(a is b for a, b in zip(model.parameters(), parameters))


def test_a_failing_save_is_reported_and_the_model_kept(dock_with_a_model, tmp_path):
    widget, errors = dock_with_a_model
    (tmp_path / "file").write_text("not a folder")
    widget.save_model(tmp_path / "file" / "m.safetensors")
    assert len(errors) == 1 and "Cannot save the model to" in errors[0] and widget.model is not None


def test_no_prediction_follows_a_run_that_ran_out_of_memory(make_napari_viewer, qtbot, monkeypatch):
    import torch

    from napari_mia.core.train import Trainer

    viewer = make_napari_viewer()
    image, labels = blobs(shape=(96, 96))
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="labels")
    widget = MiaWidget(viewer)
    widget.batch_size.value, widget.patch_size.value, widget.epochs.value = 2, 64, 1
    widget.validation_fraction.value = 0.0
    errors = []
    record_errors(monkeypatch, errors)
    monkeypatch.setattr(Trainer, "_train_step", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    assert errors and "cells prediction" not in viewer.layers and widget.predict_button.enabled
    assert np.array_equal(viewer.layers["labels"].data, labels)
