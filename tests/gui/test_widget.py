import numpy as np
import pytest
from qtpy.QtWidgets import QPushButton

from napari_mia.gui import layers
from napari_mia.gui.layers import is_prediction_layer
from napari_mia.gui.sample_data import nuclei_sample
from napari_mia.gui.widget import MiaWidget

from ..conftest import blobs
from .conftest import record_errors, wait_until_idle


def _small_settings(widget):
    widget.backbone.value, widget.pretrained.value = "tu-test_efficientnet", False  # the loop, not accuracy
    widget.epochs.value = 2
    widget.batch_size.value = 4
    widget.patch_size.value = 64
    widget.validation_fraction.value = 0.0


@pytest.fixture
def widget_with_data(make_napari_viewer):
    viewer = make_napari_viewer()
    image, labels = blobs(shape=(128, 128), n=8)
    viewer.add_image(image, name="cells")
    user_labels = viewer.add_labels(labels, name="my labels")
    widget = MiaWidget(viewer)
    viewer.window.add_dock_widget(widget)
    _small_settings(widget)
    return viewer, widget, user_labels


def test_the_dock_builds_while_it_opens_what_the_first_labels_layer_would_build_at_open_folder(make_napari_viewer):
    """vispy builds the dash patterns of a Labels layer's polygon overlay once per process, at the first
    Labels layer on the canvas: Open folder's first image froze the window for that."""
    from vispy.visuals.line import dash_atlas

    viewer = make_napari_viewer()
    dash_atlas._make_pattern.cache_clear()  # as in a new napari process
    MiaWidget(viewer)
    built = dash_atlas._make_pattern.cache_info().misses
    assert built > 0
    viewer.add_labels(np.zeros((8, 8), np.int32))
    assert dash_atlas._make_pattern.cache_info().misses == built


def test_the_dock_scrolls_instead_of_forcing_a_window_taller_than_the_screen(widget_with_data, qtbot):
    viewer, widget, _ = widget_with_data
    window = viewer.window._qt_window
    window.resize(1000, 600)
    qtbot.waitUntil(lambda: window.height() == 600)
    controls = widget.root_native_widget.widget()
    assert widget.native is widget.root_native_widget  # napari docks the scroll area, not what is inside it
    assert controls.minimumSizeHint().height() > 600 and widget.native.verticalScrollBar().maximum() > 0


class SteppedClock:
    """Stands for the widget module's ``time``: reads what the test sets, a few seconds as on a machine
    booted moments ago (``time.perf_counter`` counts from boot on Linux)."""

    def __init__(self, seconds=5.0):
        self.seconds = seconds

    def perf_counter(self):
        return self.seconds


@pytest.fixture
def clock(monkeypatch):
    from napari_mia.gui import widget as widget_module

    stepped = SteppedClock()
    monkeypatch.setattr(widget_module, "time", stepped)
    return stepped


def test_dock_status_repaints_at_most_every_interval_and_shows_the_last_event(widget_with_data, monkeypatch, clock):
    from napari_mia.core.events import BatchEnd, TrainingDone
    from napari_mia.gui import widget as widget_module

    _, widget, _ = widget_with_data
    monkeypatch.setattr(widget_module, "_STATUS_INTERVAL", 30.0)  # longer than the clock has run
    widget.progress.max = 10
    repaints, set_text = [], widget.status.native.setText
    monkeypatch.setattr(widget.status.native, "setText", lambda text: (repaints.append(text), set_text(text)))

    def batch(step):
        return BatchEnd(epoch=0, batch=step, batches_per_epoch=10, step=step, loss=1.0 / step,
                        learning_rate=1e-3, images_per_second=5.0)

    widget._on_training_event(batch(1))  # the first update shows, however young the clock
    clock.seconds += 1.0
    widget._on_training_event(batch(2))
    widget._on_training_event(batch(3))
    assert len(repaints) == 1 and "batch 1/10" in widget.status.value and widget.progress.value == 1
    clock.seconds += widget_module._STATUS_INTERVAL
    widget._on_training_event(batch(4))
    assert len(repaints) == 2 and "batch 4/10" in widget.status.value and widget.progress.value == 4
    widget._on_training_event(batch(5))
    widget._on_training_event(TrainingDone(reason="stopped", epochs_completed=0, steps=5, seconds=1.0))
    assert len(repaints) == 3 and widget.progress.value == 5
    assert widget.status.value == "Training stopped after 5 batches (1 s)."  # a Stop shows no notification


def test_dock_stays_still_while_train_data_shows_the_run_and_speaks_again_once_it_is_closed(
        widget_with_data, qtbot, clock):
    """Every repaint of the dock recomposites napari's whole OpenGL window (20-50 ms on a software
    renderer while PyTorch runs): Train Data, a window of its own, is the live view while it is open."""
    from napari_mia.core.events import BatchEnd
    from napari_mia.gui import widget as widget_module

    _, widget, _ = widget_with_data
    widget.progress.max = 10
    window = widget._open_train_data()
    qtbot.waitUntil(window.isVisible)
    for step in (1, 2):
        clock.seconds += widget_module._STATUS_INTERVAL
        widget._on_training_event(BatchEnd(0, step, 10, step, 1.0, 1e-3, 5.0))
    assert "batch" not in widget.status.value and widget.progress.value != 2
    assert window.steps == [1, 2]

    window.parent().findChild(QPushButton, "QTitleBarCloseButton").click()  # napari keeps the widget
    qtbot.waitUntil(lambda: not window.isVisible())
    clock.seconds += widget_module._STATUS_INTERVAL
    widget._on_training_event(BatchEnd(0, 3, 10, 3, 1.0, 1e-3, 5.0))
    assert "batch 3/10" in widget.status.value and widget.progress.value == 3
    assert widget._open_train_data() is window and window.parent() is not None  # Train opens it again
    qtbot.waitUntil(window.isVisible)


def test_train_predict_correct_retrain_loop(widget_with_data, qtbot):
    viewer, widget, user_labels = widget_with_data
    assert widget.image_layer.value.name == "cells" and widget.labels_layer.value is user_labels
    assert widget.classes.value == "background, foreground"

    widget.train_button.clicked()
    assert widget.stop_button.enabled and not widget.train_button.enabled
    wait_until_idle(qtbot, widget)  # training; predicting afterwards starts its own worker
    qtbot.waitUntil(lambda: "cells prediction" in viewer.layers, timeout=120_000)
    wait_until_idle(qtbot, widget)
    prediction = viewer.layers["cells prediction"]
    assert is_prediction_layer(prediction) and prediction.data.shape == (128, 128)
    assert prediction.data.dtype == np.uint16
    assert widget.train_button.enabled and widget.predict_button.enabled and not widget.stop_button.enabled
    assert widget.history and widget.history[-1].epoch == 1

    # The user corrects the prediction in place, accepts it into their labels and trains again.
    prediction.data[:10, :10] = 1
    model_before = widget.model
    widget.use_prediction_button.clicked()
    assert widget.labels_layer.value is user_labels  # their labels layer stays the one that trains
    np.testing.assert_array_equal(user_labels.data, prediction.data)
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    qtbot.waitUntil(lambda: widget.train_button.enabled, timeout=120_000)
    assert widget.model is model_before
    assert [layer.name for layer in viewer.layers].count("cells prediction") == 1


def test_accepting_the_prediction_of_one_frame_keeps_the_other_frames_painted(make_napari_viewer, qtbot):
    """Predict current frame only, then Accept: only that frame's labels change; the frames the user
    painted keep their strokes, and frames never painted stay unlabelled (they do not teach background)."""
    viewer = make_napari_viewer()
    image, labels = blobs(shape=(64, 64), n=3)
    viewer.add_image(np.stack([image] * 3), name="stack")
    painted = np.zeros((3, 64, 64), np.uint8)
    painted[0] = labels
    user_labels = viewer.add_labels(painted.copy(), name="strokes")
    widget = MiaWidget(viewer)
    viewer.window.add_dock_widget(widget)
    _small_settings(widget)
    viewer.dims.set_current_step(0, 0)
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: "stack prediction" in viewer.layers, timeout=120_000)
    wait_until_idle(qtbot, widget)
    assert widget._predicted_index == (0,)
    viewer.dims.set_current_step(0, 1)
    widget.predict_button.clicked()
    qtbot.waitUntil(lambda: widget._predicted_index == (1,), timeout=60_000)
    wait_until_idle(qtbot, widget)
    prediction = viewer.layers["stack prediction"]
    prediction.data[1, :5, :5] = 1  # the user's correction
    widget.use_prediction_button.clicked()
    np.testing.assert_array_equal(user_labels.data[0], painted[0])
    np.testing.assert_array_equal(user_labels.data[1], prediction.data[1])
    assert not user_labels.data[2].any()


def test_stop_and_resume(widget_with_data, qtbot):
    viewer, widget, _ = widget_with_data
    widget.epochs.value = 50
    widget.predict_after.value = False
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step >= 1, timeout=60_000)
    widget.stop_button.clicked()
    wait_until_idle(qtbot, widget)
    qtbot.waitUntil(lambda: widget.resume_button.enabled, timeout=10_000)
    stopped_at = widget.trainer.step
    assert stopped_at < 50 * widget.trainer.batches_per_epoch
    widget.resume_button.clicked()
    qtbot.waitUntil(lambda: widget.trainer.step > stopped_at, timeout=60_000)
    widget.stop_button.clicked()
    wait_until_idle(qtbot, widget)


def test_prediction_never_replaces_a_user_layer_of_the_same_name(widget_with_data, qtbot, tmp_path):
    viewer, widget, _ = widget_with_data
    mine = viewer.add_labels(np.full((128, 128), 7, np.uint8), name="cells prediction")
    widget.predict_after.value = False
    widget.epochs.value = 1
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    qtbot.waitUntil(lambda: widget.predict_button.enabled, timeout=60_000)
    widget.save_model(tmp_path / "m.safetensors")
    widget.reset_model()
    widget.load_model(tmp_path / "m.safetensors")
    widget.predict_button.clicked()
    wait_until_idle(qtbot, widget)
    qtbot.waitUntil(lambda: len(viewer.layers) == 4, timeout=60_000)
    assert (mine.data == 7).all()
    assert is_prediction_layer(viewer.layers[-1]) and viewer.layers[-1] is not mine


def test_test_time_augmentation_checkbox_averages_flipped_tiles(widget_with_data, qtbot, monkeypatch):
    from napari_mia.core import infer

    viewer, widget, _ = widget_with_data
    widget.predict_after.value = False
    widget.epochs.value = 1
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    flips_used, forward = [], infer._forward
    monkeypatch.setattr(infer, "_forward", lambda *args: flips_used.append(args[3]) or forward(*args))
    for checked in (True, False):
        widget.test_time_augmentation.value = checked
        widget.predict_button.clicked()
        wait_until_idle(qtbot, widget)
        assert flips_used and set(flips_used) == {checked}
        flips_used.clear()
    assert widget.model_config.test_time_augmentation is False  # a prediction option, not saved in the model


def test_bad_labels_are_reported_and_nothing_is_lost(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.uint8), name="img")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="wrong size")
    widget = MiaWidget(viewer)
    messages = []
    record_errors(monkeypatch, messages)
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: bool(messages), timeout=30_000)
    wait_until_idle(qtbot, widget)
    assert "wrong size" in messages[0] and "do not match" in messages[0] and widget.model is None
    assert viewer.layers["wrong size"].data.shape == (32, 32)


def test_current_frame_of_a_stack_is_predicted(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([blobs(seed=s)[0] for s in range(3)])
    labels = np.stack([blobs(seed=s)[1] for s in range(3)])
    viewer.add_image(stack, name="stack")
    viewer.add_labels(labels, name="stack labels")
    widget = MiaWidget(viewer)
    _small_settings(widget)
    widget.epochs.value = 1
    viewer.dims.set_current_step(0, 2)
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: "stack prediction" in viewer.layers, timeout=120_000)
    prediction = viewer.layers["stack prediction"]
    assert prediction.data.shape == stack.shape
    assert not prediction.data[0].any() and not prediction.data[1].any()


def test_sample_data_and_manifest(make_napari_viewer):
    (image, image_meta, image_kind), (labels, _, labels_kind) = nuclei_sample()
    assert image_kind == "image" and labels_kind == "labels" and image.shape == labels.shape
    assert set(np.unique(labels)) == {0, 1}
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mia", "nuclei")
    assert [layer.name for layer in viewer.layers] == ["nuclei", "nuclei labels"]
    _, widget = viewer.window.add_plugin_dock_widget("napari-mia", "MIA Training")
    assert isinstance(widget, MiaWidget)


def test_a_prediction_layer_is_written_in_place_recoloured_and_widened_when_ids_outgrow_it(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((8, 8), np.float32), name="cells")
    empty = layers.write_prediction(viewer, image, np.zeros((8, 8), np.uint16), (), None)  # before a model
    classes = np.zeros((8, 8), np.uint16)
    classes[:4] = 2
    same = layers.write_prediction(viewer, image, classes, (), ["#000000", "#ff0000", "#00ff00"])
    assert same is empty and same.data.dtype == np.uint16  # new data, not a new layer
    np.testing.assert_allclose(same.colormap.map(2)[..., :3].ravel(), [0, 1, 0])  # the class colours now
    many = np.arange(64, dtype=np.uint32).reshape(8, 8) + 70_000
    wider = layers.write_prediction(viewer, image, many, (), None)
    assert [layer.name for layer in viewer.layers] == ["cells", "cells prediction"]  # replaced, not doubled
    assert wider.data.dtype == np.uint32 and wider.data.max() == many.max()


def test_the_dock_offers_the_registries_keys(make_napari_viewer):
    from napari_mia.core.config import APPLICATIONS
    from napari_mia.core.losses import losses_for
    from napari_mia.core.optimizers import OPTIMIZERS

    widget = MiaWidget(make_napari_viewer())
    assert widget.application.choices == tuple(APPLICATIONS)
    assert widget.settings["optimizer"].choices == tuple(OPTIMIZERS)
    for application in APPLICATIONS:
        widget.application.value = application
        assert widget.settings["loss"].choices == tuple(losses_for(application))
