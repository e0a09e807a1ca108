"""Instance segmentation, detection and classification from the widget: each trains, predicts, and
writes its own editable layer without touching the user's annotations."""

import numpy as np
import pandas as pd
import pytest
from napari.layers import Labels, Points

from napari_mia.gui.layers import is_prediction_layer, viewer_camera
from napari_mia.gui.widget import MiaWidget

from ..conftest import instance_blobs
from .conftest import record_errors, tiny_dock, wait_until_idle


def _shown(control) -> bool:
    """Set visible (the dock itself is not shown in headless tests)."""
    return not control.native.isHidden()


@pytest.fixture
def viewer_and_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    return viewer, tiny_dock(viewer, epochs=2)


@pytest.fixture
def viewer_and_learning_widget(make_napari_viewer):
    """The dock with its default network: for tests whose results need a model that learnt something."""
    viewer = make_napari_viewer()
    widget = MiaWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.epochs.value, widget.batch_size.value, widget.patch_size.value = 2, 4, 64
    widget.validation_fraction.value = 0.0
    return viewer, widget


def _train_and_predict(qtbot, widget):
    widget.predict_after.value = False
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    assert widget.model is not None, widget.status.value
    widget.predict_button.clicked()
    wait_until_idle(qtbot, widget)


def test_instance_segmentation_writes_object_ids(viewer_and_learning_widget, qtbot):
    viewer, widget = viewer_and_learning_widget
    image, instances, _ = instance_blobs((96, 96), n=6)
    viewer.add_image(image, name="cells")
    objects = viewer.add_labels(instances, name="nuclei")
    widget.application.value = "instance"
    assert widget.classes.value == "background, object" and _shown(widget.labels_layer)
    widget.labels_layer.value = objects
    _train_and_predict(qtbot, widget)
    prediction = viewer.layers["cells prediction"]
    assert isinstance(prediction, Labels) and is_prediction_layer(prediction)
    assert prediction.data.shape == (96, 96) and prediction.data.max() >= 3  # object ids, not classes
    assert prediction.data.dtype == np.uint16  # what they fit in: napari draws 16-bit labels fastest
    confidence = prediction.features.set_index("index")["confidence"]  # each object's, for napari's tools
    assert set(confidence.index) == set(np.unique(prediction.data[prediction.data > 0]))
    assert ((confidence >= 0) & (confidence <= 1)).all()
    np.testing.assert_array_equal(objects.data, instances)  # the user's labels are untouched
    assert widget.model_config.application == "instance"


def test_detection_writes_points_with_class_and_score(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    image, _, centres = instance_blobs((96, 96), n=6)
    viewer.add_image(image, name="cells")
    classes = ["big" if i % 2 else "small" for i in range(len(centres))]
    points = viewer.add_points(centres, name="marks", features=pd.DataFrame({"class": classes}))
    widget.application.value = "detection"
    assert _shown(widget.points_layer) and not _shown(widget.labels_layer)
    widget.points_layer.value = points
    assert widget.classes.value == "big, small"
    _train_and_predict(qtbot, widget)
    detections = viewer.layers["cells detections"]
    assert isinstance(detections, Points) and is_prediction_layer(detections)
    assert {"class", "score"} <= set(detections.features.columns)
    assert set(detections.features["class"]) <= {"big", "small"}
    assert "objects detected" in widget.status.value
    assert len(points.data) == len(centres)  # the user's points are untouched
    widget.use_prediction_button.clicked()  # the whole image was predicted: its detections are the points now
    assert widget.points_layer.value is points
    np.testing.assert_array_equal(points.data, detections.data)
    assert list(points.features["class"]) == list(detections.features["class"])


def test_classification_of_frames_and_objects(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    stack = np.stack([instance_blobs((64, 64), n=3, radius=r, seed=i)[0] for i, r in enumerate([4, 10] * 4)])
    viewer.add_image(stack, name="frames")
    widget.application.value = "classification"
    assert _shown(widget.frame_classes) and widget.architecture.value == "Standard"
    widget.frame_classes.value = "small, big, small, big, small, big, , big"  # frame 7 left out
    assert widget.classes.value == "big, small"
    widget.current_frame_only.value = False
    _train_and_predict(qtbot, widget)
    predicted = widget.predicted_frame_classes.split(", ")
    assert len(predicted) == 8 and set(predicted) <= {"big", "small"}
    widget.use_prediction_button.clicked()
    assert widget.frame_classes.value == widget.predicted_frame_classes

    image, instances, _ = instance_blobs((96, 96), n=4, radius=8, seed=1)
    viewer.add_image(image, name="field")
    objects = viewer.add_labels(instances, name="cells")
    widget.image_layer.value, widget.objects_layer.value = viewer.layers["field"], objects
    widget.predict_button.clicked()
    wait_until_idle(qtbot, widget)
    classified = viewer.layers["cells classes"]
    assert isinstance(classified, Labels) and is_prediction_layer(classified)
    table = classified.features.set_index("index")
    assert set(table.loc[[1, 2, 3, 4], "class"]) <= {"big", "small"}
    np.testing.assert_array_equal(objects.data, instances)


def test_unknown_frame_class_is_reported_not_trained(viewer_and_widget, qtbot, monkeypatch):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.zeros((3, 32, 32), np.uint8), name="frames")
    widget.application.value = "classification"
    widget.frame_classes.value = "a, b"  # two names for three frames
    errors = []
    record_errors(monkeypatch, errors)
    widget.train_button.clicked()
    assert widget.worker is None and "Frame classes lists 2 frame(s)" in errors[0] and "'frames'" in errors[0]


def test_visible_region_measurements_export_and_cancel(viewer_and_learning_widget, qtbot, tmp_path):
    import csv

    viewer, widget = viewer_and_learning_widget
    image, instances, _ = instance_blobs((256, 256), n=12, seed=2)
    viewer.add_image(image, name="cells")
    widget.application.value = "instance"
    widget.labels_layer.value = viewer.add_labels(instances, name="nuclei")
    widget.predict_after.value = False
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)

    camera = viewer_camera(viewer)
    camera.center = (64, 64)
    camera.zoom = 8 * max(viewer.canvas.size) / 256  # a sixteenth of the image across
    crop, _, index = widget._current_frame(viewer.layers["cells"], region=True)
    assert crop.shape[0] < 256 and crop.shape[1] < 256 and index[0].start < 64 < index[0].stop
    widget.visible_region_only.value = True
    widget.predict_button.clicked()
    wait_until_idle(qtbot, widget)
    prediction = viewer.layers["cells prediction"].data
    assert prediction.shape == (256, 256) and not prediction[200:, 200:].any()  # outside the view: untouched

    widget.export_measurements(tmp_path / "m.csv")
    with open(tmp_path / "m.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and rows[0]["image"] == "cells" and int(rows[0]["area"]) > 0

    widget.visible_region_only.value = False
    widget.model_config.tile_size, widget.model_config.tile_overlap = 64, 32  # many tiles: time to cancel
    widget.predict_button.clicked()
    assert widget.stop_button.enabled
    widget.stop_button.clicked()
    wait_until_idle(qtbot, widget)
    assert widget.status.value == "Prediction cancelled." and widget.train_button.enabled
