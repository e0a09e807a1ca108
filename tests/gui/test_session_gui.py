"""The dock as a view of the session: nothing painted is lost, one run at a time, the user's choices honoured."""

import imageio.v3 as iio
import numpy as np

from napari_mia.core.io import read_metadata, save_model
from napari_mia.core.models import build_model
from tests.configs import TINY_NETWORK, fixed_config

from ..conftest import blobs, instance_blobs
from .conftest import record_errors, tiny_dock, wait_until_idle


def _dock(viewer, application="instance"):
    return tiny_dock(viewer, application)


def _blob_folder(tmp_path, count=4):
    folder = tmp_path / "blobs"
    folder.mkdir()
    for number in range(1, count + 1):
        iio.imwrite(folder / f"blob{number}.png", instance_blobs((64, 64), n=3, seed=number)[0])
    config = fixed_config(application="instance", classes=["background", "object"], **TINY_NETWORK)
    save_model(folder / "napari-mia-model.safetensors", build_model(config), config)
    return folder


def _open(qtbot, widget, folder):
    widget.experiment_panel.open_folder(folder)
    qtbot.waitUntil(lambda: widget.experiment_panel.current is not None, timeout=30_000)
    wait_until_idle(qtbot, widget)


def _opened_blob_folder(make_napari_viewer, qtbot, tmp_path):
    """A folder of blobs with a model, open in a new viewer's dock: (folder, viewer, dock, folder view)."""
    folder = _blob_folder(tmp_path)
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    _open(qtbot, widget, folder)
    return folder, viewer, widget, widget.experiment_panel


def _go(qtbot, widget, step, name):
    widget.experiment_panel.step(step)
    qtbot.waitUntil(lambda: widget.experiment_panel.current.name == name, timeout=30_000)
    wait_until_idle(qtbot, widget)


def test_a_stroke_on_the_prediction_after_next_survives_next_previous_predict_all_and_reopening(
        make_napari_viewer, qtbot, tmp_path):
    folder, viewer, widget, panel = _opened_blob_folder(make_napari_viewer, qtbot, tmp_path)
    _go(qtbot, widget, 1, "blob2")
    prediction = viewer.layers["blob2 prediction"]
    qtbot.waitUntil(lambda: viewer.layers.selection.active is prediction)  # what the user paints on
    prediction.brush_size = 5
    prediction.paint((20, 20), 7)  # the user's stroke: napari's paint, as the brush does it
    stroke = np.array(prediction.data) == 7
    assert stroke.any()

    _go(qtbot, widget, 1, "blob3")
    _go(qtbot, widget, -1, "blob2")
    np.testing.assert_array_equal(viewer.layers["blob2 prediction"].data == 7, stroke)
    assert panel.current.corrected and not panel.current.teaches  # kept, but it teaches only once accepted
    panel.predict_all_button.clicked()
    wait_until_idle(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["blob2 prediction"].data == 7, stroke)
    viewer.close()

    again = make_napari_viewer()
    widget = _dock(again)
    _open(qtbot, widget, folder)
    widget.experiment_panel.show_entry(1)
    qtbot.waitUntil(lambda: widget.experiment_panel.current.name == "blob2", timeout=30_000)
    wait_until_idle(qtbot, widget)
    np.testing.assert_array_equal(again.layers["blob2 prediction"].data == 7, stroke)
    assert [row[2] for row in widget.experiment_panel.table.data.to_list()][1] == "corrected"


def test_while_training_the_application_stays_and_a_second_train_is_refused(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    image, labels = blobs((96, 96))
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="labels")
    widget = _dock(viewer, "semantic")
    widget.epochs.value = 3
    errors = []
    record_errors(monkeypatch, errors)
    widget.train_button.clicked()
    assert not widget.application.enabled and not widget.backbone.enabled  # fixed while the run builds the model
    widget.application.value = "detection"  # as a script or a stale click would
    assert widget.application.value == "semantic" and widget.session.state == "training"
    assert widget.stop_button.enabled and not widget.train_button.enabled
    widget.start_training()  # a second Train
    assert any("Cannot change the Application" in e for e in errors) and any("Cannot start" in e for e in errors)
    wait_until_idle(qtbot, widget)
    assert widget.model_config.application == "semantic" and len(widget.history) == 3


def test_with_a_folder_open_train_refuses_other_layers_until_the_folder_is_closed(make_napari_viewer, qtbot,
                                                                                   tmp_path, monkeypatch):
    folder = _blob_folder(tmp_path)
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    _open(qtbot, widget, folder)
    image, instances, _ = instance_blobs((96, 96), n=4, seed=9)
    other = viewer.add_image(image, name="other")
    other_labels = viewer.add_labels(instances, name="other labels")
    widget.image_layer.value, widget.labels_layer.value = other, other_labels
    errors = []
    record_errors(monkeypatch, errors)
    widget.train_button.clicked()
    assert widget.worker is None and "Close the folder to train on 'other'" in errors[0]

    widget.experiment_panel.close_button.clicked()
    assert widget.session.experiment is None and "blob1" not in viewer.layers
    widget.image_layer.value, widget.labels_layer.value = other, other_labels
    widget.predict_after.value = False
    widget.train_button.clicked()
    assert "'other'" in widget.status.value
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step >= 1, timeout=60_000)
    widget.stop_button.clicked()
    wait_until_idle(qtbot, widget)
    assert len(errors) == 1 and widget.model is not None
    assert not (folder / "models").exists()  # trained on the layers, not the folder


def test_stop_and_resume_in_a_folder_save_each_epoch_once(make_napari_viewer, qtbot, tmp_path):
    folder = _blob_folder(tmp_path)
    (folder / "napari-mia-model.safetensors").unlink()
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    widget.epochs.value, widget.batch_size.value = 20, 1
    _open(qtbot, widget, folder)
    viewer.layers["blob1 labels"].data = instance_blobs((64, 64), n=3, seed=1)[1]
    widget.experiment_panel.save_now()
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.epoch >= 2, timeout=120_000)
    widget.stop_button.clicked()
    wait_until_idle(qtbot, widget)
    assert widget.session.stopped and len(widget.history) < 20  # stopped part-way: Resume has work to do
    widget.epochs.value = 20
    widget.resume_button.clicked()
    wait_until_idle(qtbot, widget, timeout=300_000)
    import json

    saved = [e["epoch"] for e in json.loads(read_metadata(folder / "napari-mia-model.safetensors")["history"])]
    assert saved == list(range(20)) and [e.epoch for e in widget.history] == saved


def test_use_as_training_points_after_one_frame_keeps_the_users_points_of_the_other_frames(make_napari_viewer,
                                                                                          tmp_path):
    viewer = make_napari_viewer()
    stack = np.zeros((2, 64, 64), np.uint8)
    image = viewer.add_image(stack, name="stack")
    users = viewer.add_points(np.array([[0, 10, 10], [0, 30, 30], [1, 12, 12], [1, 40, 40]], float), name="mine",
                              features={"class": ["cell", "cell", "cell", "cell"]})
    widget = _dock(viewer, "detection")
    widget.points_layer.value = users
    config = fixed_config(application="detection", classes=["cell"], **TINY_NETWORK)
    widget.load_model(save_model(tmp_path / "m.safetensors", build_model(config), config))
    # Frame 1 predicted (Predict current frame only): one detection, where the user had two points.
    widget._show_points(image, (np.array([[20.0, 20.0]]), np.array([0]), np.array([0.9])), (1,))
    widget.use_prediction_button.clicked()
    assert widget.points_layer.value is users  # training stays on the user's points
    np.testing.assert_array_equal(np.asarray(users.data), [[0, 10, 10], [0, 30, 30], [1, 20, 20]])
    assert list(users.features["class"]) == ["cell"] * 3


def test_a_validation_pair_that_is_the_training_pair_is_named(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    image, labels = blobs((96, 96))
    layer = viewer.add_image(image, name="cells")
    painted = viewer.add_labels(labels, name="labels")
    widget = _dock(viewer, "semantic")
    widget.validation_image.value, widget.validation_labels.value = layer, painted
    errors = []
    record_errors(monkeypatch, errors)
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    assert len(errors) == 1 and "validation" in errors[0] and "'cells'" in errors[0]
    assert "no labelled pixels" not in errors[0] and widget.model is None


def test_the_user_chooses_which_of_the_folders_runs_is_the_model_in_use(make_napari_viewer, qtbot, tmp_path):
    import torch

    from napari_mia.core.experiment import Experiment
    from napari_mia.core.io import load_model

    folder = _blob_folder(tmp_path)
    config = fixed_config(application="instance", classes=["background", "object"], **TINY_NETWORK)
    experiment = Experiment.open(folder)
    models = []
    for number, score in ((1, 0.8), (2, 0.6)):  # run 2 scored worse: kept, not used
        torch.manual_seed(number)
        models.append(build_model(config))
        experiment.keep_run(number, models[-1], config, [], score, "ap50", ["blob1"], ["blob4"], in_use=number == 1)
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    panel = widget.experiment_panel
    _open(qtbot, widget, folder)
    assert [label for label, _ in panel._run_choices] == ["run 1: ap50 0.800, 1 image(s) (in use)",
                                                          "run 2: ap50 0.600, 1 image(s)"]
    assert panel.runs.value == 1 and panel.runs.enabled
    panel.runs.value = 2
    assert Experiment.open(folder).run_in_use == 2 and "(in use)" in panel._run_choices[1][0]
    in_use, _, _ = load_model(folder / "napari-mia-model.safetensors")
    for name, value in widget.model.state_dict().items():
        torch.testing.assert_close(value, models[1].state_dict()[name])
        torch.testing.assert_close(in_use.state_dict()[name], models[1].state_dict()[name])


def test_keys_accept_and_train_beside_mias_a_and_d(make_napari_viewer, qtbot, tmp_path):
    from app_model.types import KeyBinding

    folder, viewer, widget, panel = _opened_blob_folder(make_napari_viewer, qtbot, tmp_path)
    viewer.keymap[KeyBinding.from_str("D")](viewer)  # Next: predicted, ready to correct
    qtbot.waitUntil(lambda: panel.current.name == "blob2", timeout=30_000)
    wait_until_idle(qtbot, widget)
    viewer.keymap[KeyBinding.from_str("Shift+Enter")](viewer)  # Accept
    qtbot.waitUntil(lambda: panel.current.status == "accepted", timeout=10_000)
    viewer.keymap[KeyBinding.from_str("Shift+T")](viewer)  # Train
    assert widget.session.state == "training"
    assert "Shift-Enter" in panel.accept_button.tooltip and "Shift-T" in widget.train_button.tooltip
    wait_until_idle(qtbot, widget)


def test_the_folder_view_says_what_to_do_next(make_napari_viewer, qtbot, tmp_path):
    folder = _blob_folder(tmp_path)
    (folder / "napari-mia-model.safetensors").unlink()
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    panel = widget.experiment_panel
    _open(qtbot, widget, folder)
    assert panel.summary.value.startswith("Paint a few objects on this image, then Train (Shift+T).")
    assert "4 images: 0 annotated or accepted" in panel.summary.value
    viewer.layers["blob1 labels"].data = instance_blobs((64, 64), n=3, seed=1)[1]
    qtbot.waitUntil(lambda: panel.summary.value.startswith("Train (Shift+T)"), timeout=10_000)
    widget.predict_after.value = False
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    assert panel.summary.value.startswith("Next (D) predicts the next image")
    _go(qtbot, widget, 1, "blob2")
    assert panel.summary.value.startswith("Correct this prediction, then Accept (Shift+Enter)")


def _count_predictions(monkeypatch) -> list:
    """Every prediction of an image the dock makes when it opens it (not ahead)."""
    from napari_mia.core import infer

    calls, predict = [], infer.predict_with_uncertainty
    monkeypatch.setattr(infer, "predict_with_uncertainty", lambda *a, **k: calls.append(1) or predict(*a, **k))
    return calls


def test_the_next_image_is_predicted_ahead_and_next_shows_it_without_predicting(make_napari_viewer, qtbot, tmp_path,
                                                                               monkeypatch):
    folder, viewer, widget, panel = _opened_blob_folder(make_napari_viewer, qtbot, tmp_path)
    experiment = panel.experiment
    # While the user looks at blob1, the dock predicts blob2 (the image Next goes to), and only blob2.
    qtbot.waitUntil(lambda: experiment["blob2"].status == "predicted" and panel._ahead_worker is None,
                    timeout=30_000)
    assert widget.session.state == "idle" and [e.status for e in experiment][2:] == ["unlabelled"] * 2
    assert (folder / "predictions" / "blob2.tif").is_file()
    opened_with_prediction = _count_predictions(monkeypatch)
    _go(qtbot, widget, 1, "blob2")
    assert not opened_with_prediction  # Next read what was predicted ahead
    assert viewer.layers["blob2 prediction"].data.any()
    np.testing.assert_array_equal(viewer.layers["blob2 prediction"].data,
                                  iio.imread(folder / "predictions" / "blob2.tif"))
    qtbot.waitUntil(lambda: experiment["blob3"].status == "predicted", timeout=30_000)  # and so on


def test_next_during_the_look_ahead_of_that_image_waits_for_it_instead_of_predicting_twice(
        make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import threading

    from napari_mia.core import experiment as experiment_module

    released, ahead, real = threading.Event(), [], experiment_module.iter_predict_entry

    def slow_look_ahead(*args, **kwargs):  # the look-ahead, still predicting when the user clicks Next
        ahead.append(args[3].name)
        released.wait(30)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(experiment_module, "iter_predict_entry", slow_look_ahead)
    _, viewer, widget, panel = _opened_blob_folder(make_napari_viewer, qtbot, tmp_path)
    qtbot.waitUntil(lambda: ahead == ["blob2"], timeout=10_000)
    opened_with_prediction = _count_predictions(monkeypatch)
    panel.next_button.clicked()
    assert panel.summary.value == "Predicting blob2…" and panel.current.name == "blob1"
    released.set()
    qtbot.waitUntil(lambda: panel.current.name == "blob2", timeout=30_000)
    wait_until_idle(qtbot, widget)
    assert not opened_with_prediction and viewer.layers["blob2 prediction"].data.any()
    assert ahead[0] == "blob2" and "blob2" not in ahead[1:]  # predicted once


def test_a_stroke_on_the_prediction_just_after_accept_is_kept(make_napari_viewer, qtbot, tmp_path):
    folder, viewer, widget, panel = _opened_blob_folder(make_napari_viewer, qtbot, tmp_path)
    _go(qtbot, widget, 1, "blob2")
    prediction = viewer.layers["blob2 prediction"]
    panel.accept_button.clicked()
    prediction.brush_size = 3
    prediction.paint((30, 30), 9)  # before napari's next turn: the accepted prediction is not emptied yet
    qtbot.wait(300)
    assert prediction.data[30, 30] == 9  # the stroke stays on the screen...
    panel.step(1)
    qtbot.waitUntil(lambda: panel.current.name == "blob3", timeout=30_000)
    wait_until_idle(qtbot, widget)
    assert iio.imread(folder / "predictions" / "blob2.tif")[30, 30] == 9  # ...and on disk
