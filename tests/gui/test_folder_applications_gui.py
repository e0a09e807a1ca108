"""The folder loop for detection (points) and classification (a class per image), as a user works it on
real images: open, annotate, Train, Next, correct, Accept, Train again, close, reopen."""

import csv
import shutil

import numpy as np
import pytest
import tifffile

from napari_mia.core.cli import main

from ..conftest import SHARED_DATA, instance_blobs
from .conftest import tiny_dock, wait_until_idle

BCCD = SHARED_DATA / "bccd_blood_cells"
DSB = SHARED_DATA / "dsb2018_nuclei" / "train"
TINY_FLAGS = ("--backbone", "tu-test_efficientnet", "--no-pretrained")


def _dock(viewer, application, classes):
    return tiny_dock(viewer, application, color_mode="color", downscale="0.5", batch_size=2, classes=classes,
                     predict_after=False)


def _open(qtbot, widget, folder):
    widget.experiment_panel.open_folder(folder)
    qtbot.waitUntil(lambda: widget.experiment_panel.current is not None, timeout=30_000)
    wait_until_idle(qtbot, widget)


def _next(qtbot, widget, name):
    widget.experiment_panel.next_button.clicked()
    qtbot.waitUntil(lambda: widget.experiment_panel.current.name == name, timeout=120_000)
    wait_until_idle(qtbot, widget)


def _train(qtbot, widget, trained_samples, count):
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: len(trained_samples) == count, timeout=120_000)
    wait_until_idle(qtbot, widget, timeout=300_000)


def test_detection_points_are_clicked_predicted_corrected_accepted_and_reopened(make_napari_viewer, qtbot,
                                                                                tmp_path, trained_samples):
    if not BCCD.is_dir():
        pytest.skip("BCCD (shared/data) is not on this machine")
    rows = list(csv.DictReader(open(BCCD / "annotations.csv")))
    names = sorted({r["image"] for r in rows})[:4]
    folder = tmp_path / "blood"
    folder.mkdir()
    for name in names:
        shutil.copy(BCCD / "JPEGImages" / name, folder / name)
    truth = {}
    for r in rows:
        if r["image"] in names[:2] and r["label"] in ("WBC", "Platelets"):
            centre = [(int(r["ymin"]) + int(r["ymax"])) / 2, (int(r["xmin"]) + int(r["xmax"])) / 2]
            truth.setdefault(r["image"][:-4], []).append((centre, r["label"]))
    viewer = make_napari_viewer()
    widget = _dock(viewer, "detection", "Platelets, WBC")
    panel = widget.experiment_panel
    added = []
    viewer.layers.events.inserted.connect(lambda event: added.append(event.value.name))
    _open(qtbot, widget, folder)
    first = names[0][:-4]
    assert panel.current.name == first and f"{first} points" in viewer.layers
    assert widget.points_layer.value is viewer.layers[f"{first} points"]
    points = viewer.layers[f"{first} points"]
    for centre, label in truth[first]:  # the user clicks the cells, each with its class
        points.feature_defaults = {"class": label, "score": 1.0}
        points.add(np.array([centre]))
    qtbot.waitUntil(lambda: (folder / "points.csv").is_file() and panel.current.status == "labelled",
                    timeout=10_000)
    widget.predict_after.value = True  # the open image predicted when training ends: into its detections layer
    _train(qtbot, widget, trained_samples, 1)
    assert sum(len(s.truth) for s in trained_samples[0]) == len(truth[first])
    assert [layer.name for layer in viewer.layers] == [first, f"{first} points", f"{first} detections"]
    assert widget.model is not None and widget.worker is None
    widget.predict_after.value = False

    second = names[1][:-4]
    _next(qtbot, widget, second)  # the next image arrives with the model's detections to correct
    detections = viewer.layers[f"{second} detections"]
    assert panel.current.status == "predicted" and (folder / "predictions" / "points.csv").is_file()
    points_column = panel.table.column_headers.index("Points")
    assert panel.table.data[1, points_column] == f"({len(detections.data)}?)"  # the model's count
    # The first image's layers took the second's name and data (adding layers would freeze the window).
    assert added == [first, f"{first} points", f"{first} detections"]
    assert viewer.layers[f"{second} points"] is points and len(points.data) == 0
    assert viewer.layers.selection.active is detections and widget.points_layer.value is points
    corrected = np.array([c for c, _ in truth[second]])
    detections.data = corrected  # the user's correction: the right cells
    detections.features = {"class": [label for _, label in truth[second]], "score": [1.0] * len(corrected)}
    panel.accept_button.clicked()
    qtbot.waitUntil(lambda: panel.current.status == "accepted", timeout=10_000)
    np.testing.assert_allclose(viewer.layers[f"{second} points"].data, corrected)
    _train(qtbot, widget, trained_samples, 2)
    assert sorted(len(s.truth) for s in trained_samples[1]) == sorted(len(truth[n]) for n in (first, second))
    viewer.close()

    again = make_napari_viewer()
    widget = _dock(again, "detection", "Platelets, WBC")
    _open(qtbot, widget, folder)
    assert [e.status for e in widget.experiment_panel.experiment] == ["labelled", "accepted", "unlabelled",
                                                                      "unlabelled"]
    np.testing.assert_allclose(again.layers[f"{first} points"].data, [c for c, _ in truth[first]], atol=0.01)
    assert list(again.layers[f"{first} points"].features["class"]) == [label for _, label in truth[first]]
    assert widget.model is not None and widget.model_config.application == "detection"
    # The command line trains on the folder the dock wrote, unchanged: the two annotated images.
    assert main(["train", "--application", "detection", "--images", str(folder), "--points",
                 str(folder / "points.csv"), "--out", str(tmp_path / "cli.safetensors"), "--epochs", "1",
                 "--batch-size", "2", "--patch-size", "64", "--validation-fraction", "0", *TINY_FLAGS, "--color",
                 "--downscale", "0.5", "--object-size", "40"]) == 0
    assert len(trained_samples[-1]) == 2


def test_classification_classes_are_chosen_predicted_accepted_and_reopened(make_napari_viewer, qtbot, tmp_path,
                                                                          trained_samples):
    if not DSB.is_dir():
        pytest.skip("DSB2018 (shared/data) is not on this machine")
    rows = list(csv.DictReader(open(DSB / "index.csv")))
    grey = [r["image_id"] for r in rows if r["is_grayscale"] == "1"][:3]
    colour = [r["image_id"] for r in rows if r["is_grayscale"] == "0"][:3]
    folder = tmp_path / "stains"
    folder.mkdir()
    kinds = {}
    for number, (image_id, kind) in enumerate(zip([grey[0], colour[0], grey[1], colour[1], grey[2]],
                                                  ["fluorescence", "histology"] * 2 + ["fluorescence"]), start=1):
        shutil.copy(DSB / "images" / f"{image_id}.png", folder / f"slide{number}.png")
        kinds[f"slide{number}"] = kind
    viewer = make_napari_viewer()
    widget = _dock(viewer, "classification", "fluorescence, histology")
    widget.patch_size.value = 64
    panel = widget.experiment_panel
    _open(qtbot, widget, folder)
    assert not panel.class_choice.native.isHidden()
    for name in ("slide1", "slide2"):  # the user gives two images their class
        if panel.current.name != name:
            _next(qtbot, widget, name)
        panel.class_choice.value = kinds[name]
        qtbot.waitUntil(lambda: panel.current.status == "labelled", timeout=10_000)
    _train(qtbot, widget, trained_samples, 1)
    assert sorted(int(s.labels) for s in trained_samples[0]) == [0, 1]

    _next(qtbot, widget, "slide3")  # predicted: the table shows the guess
    assert panel.current.status == "predicted" and "predicted" in panel.summary.value
    assert [layer.name for layer in viewer.layers] == ["slide3"]  # the image layer reused, and selected
    assert viewer.layers.selection.active is viewer.layers["slide3"] and widget.image_layer.value.name == "slide3"
    assert panel.table.data.to_list()[2][3].startswith("(")
    panel.class_choice.value = kinds["slide3"]  # the user's correction (or agreement)
    panel.accept_button.clicked()
    qtbot.waitUntil(lambda: panel.current.status == "accepted", timeout=10_000)
    _train(qtbot, widget, trained_samples, 2)
    assert len(trained_samples[1]) == 3
    viewer.close()

    again = make_napari_viewer()
    widget = _dock(again, "classification", "fluorescence, histology")
    _open(qtbot, widget, folder)
    experiment = widget.experiment_panel.experiment
    assert [e.status for e in experiment] == ["labelled", "labelled", "accepted", "unlabelled", "unlabelled"]
    assert [row[3] for row in widget.experiment_panel.table.data.to_list()][:3] == [
        kinds["slide1"], kinds["slide2"], kinds["slide3"]]
    assert widget.model is not None and widget.model_config.application == "classification"
    assert main(["train", "--application", "classification", "--images", str(folder), "--classes",
                 str(folder / "classes.csv"), "--out", str(tmp_path / "cli.safetensors"), "--epochs", "1",
                 "--batch-size", "2", "--patch-size", "64", "--validation-fraction", "0", *TINY_FLAGS, "--color"]) == 0
    assert len(trained_samples[-1]) == 3


def test_semantic_membranes_are_painted_predicted_corrected_accepted_and_reopened(make_napari_viewer, qtbot,
                                                                                  tmp_path, trained_samples):
    import imageio.v3 as iio

    em = SHARED_DATA / "isbi2012_em_membranes"
    if not em.is_dir():
        pytest.skip("ISBI 2012 (shared/data) is not on this machine")
    folder = tmp_path / "em"
    folder.mkdir()
    truth = {}
    for index in range(4):  # 128x128 crops of four slices: membrane (1) and the rest (0)
        iio.imwrite(folder / f"slice{index}.png", iio.imread(em / "images" / f"{index:02d}.png")[:128, :128])
        truth[f"slice{index}"] = (iio.imread(em / "labels" / f"{index:02d}.png")[:128, :128] == 0).astype(np.uint8)
    viewer = make_napari_viewer()
    widget = _dock(viewer, "semantic", "background, membrane")
    widget.color_mode.value, widget.downscale.value = "mono", "1"
    panel = widget.experiment_panel
    _open(qtbot, widget, folder)
    viewer.layers["slice0 labels"].data = truth["slice0"]  # the user paints slice 0
    qtbot.waitUntil(lambda: panel.current.status == "labelled", timeout=10_000)
    _train(qtbot, widget, trained_samples, 1)
    assert len(trained_samples[0]) == 1

    _next(qtbot, widget, "slice1")
    assert panel.current.status == "predicted"
    viewer.layers["slice1 prediction"].data = truth["slice1"]  # the corrected prediction
    panel.accept_button.clicked()
    qtbot.waitUntil(lambda: panel.current.status == "accepted", timeout=10_000)
    _train(qtbot, widget, trained_samples, 2)
    assert len(trained_samples[1]) == 2 and sorted(int((s.labels == 1).sum()) for s in trained_samples[1]) == sorted(
        int(truth[n].sum()) for n in ("slice0", "slice1"))
    viewer.close()

    again = make_napari_viewer()
    widget = _dock(again, "semantic", "background, membrane")
    _open(qtbot, widget, folder)
    assert [e.status for e in widget.experiment_panel.experiment] == ["labelled", "accepted", "unlabelled",
                                                                      "unlabelled"]
    np.testing.assert_array_equal(again.layers["slice0 labels"].data, truth["slice0"])
    assert widget.model is not None and widget.model_config.application == "semantic"


def test_points_clicked_just_before_next_and_just_after_belong_to_their_own_images(make_napari_viewer, qtbot,
                                                                                  tmp_path):
    """Next hands the points layer to the next image (renamed, new data): a click made just before (not yet
    saved) stays the first image's, one made just after is the second's; Previous shows each its own."""
    folder = tmp_path / "cells"
    folder.mkdir()
    for number in (1, 2, 3):
        tifffile.imwrite(folder / f"field{number}.tif", instance_blobs((64, 64), seed=number)[0])
    viewer = make_napari_viewer()
    widget = _dock(viewer, "detection", "cell")
    panel = widget.experiment_panel
    _open(qtbot, widget, folder)
    points = viewer.layers["field1 points"]
    points.add(np.array([[10.0, 12.0]]))  # clicked, and Next at once: the autosave has not run yet
    _next(qtbot, widget, "field2")
    assert viewer.layers["field2 points"] is points and len(points.data) == 0
    points.add(np.array([[30.0, 40.0]]))
    panel.previous_button.clicked()
    qtbot.waitUntil(lambda: panel.current.name == "field1", timeout=30_000)
    wait_until_idle(qtbot, widget)
    np.testing.assert_allclose(viewer.layers["field1 points"].data, [[10.0, 12.0]])
    experiment = panel.experiment
    positions = {name: np.asarray(experiment.read_annotation(experiment[name])[0]) for name in ("field1", "field2")}
    np.testing.assert_allclose(positions["field1"], [[10.0, 12.0]])
    np.testing.assert_allclose(positions["field2"], [[30.0, 40.0]])
    assert [entry.status for entry in experiment] == ["labelled", "labelled", "unlabelled"]
