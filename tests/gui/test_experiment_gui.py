"""The loop over a folder of images, as a user works it: open, paint, train, next, correct, accept, retrain,
close, reopen another day."""

import csv
import shutil
import threading

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from qtpy.QtCore import QLocale

from napari_mia.core.cli import main
from napari_mia.core.experiment import Experiment
from napari_mia.core.io import save_model
from napari_mia.core.models import build_model
from tests.configs import fixed_config

from ..conftest import SHARED_DATA, instance_blobs
from .conftest import tiny_dock, wait_until_idle

DSB = SHARED_DATA / "dsb2018_nuclei" / "train"


def _dsb_folder(tmp_path, count=6):
    """``count`` grey DSB2018 images, alternately 256x256 and 256x320, and their ground truth."""
    import csv

    if not DSB.is_dir():
        pytest.skip("DSB2018 (shared/data) is not on this machine")
    rows = list(csv.DictReader(open(DSB / "index.csv")))
    sizes = [("256", "256"), ("256", "320")]
    chosen = [next(r for r in rows[i:] if (r["height"], r["width"]) == sizes[i % 2] and r["is_grayscale"] == "1")
              for i in range(count)]
    folder, truth = tmp_path / "nuclei", {}
    folder.mkdir()
    for number, row in enumerate(chosen, start=1):
        shutil.copy(DSB / "images" / f"{row['image_id']}.png", folder / f"nuclei{number}.png")
        truth[f"nuclei{number}"] = tifffile.imread(DSB / "labels" / f"{row['image_id']}.tif")
    return folder, truth


def _dock(viewer):
    return tiny_dock(viewer, "instance")


def _open(qtbot, widget, folder):
    widget.experiment_panel.open_folder(folder)
    qtbot.waitUntil(lambda: widget.experiment_panel.current is not None, timeout=30_000)
    wait_until_idle(qtbot, widget)


def test_open_folder_adds_each_layer_hidden_unselected_and_shows_it_in_later_turns(make_napari_viewer, qtbot,
                                                                                  tmp_path):
    """napari's adding of a layer, its building of a Labels layer's brush and polygon overlays, its switching
    of the layer controls and its first drawing would be one freeze: the first image's layers are added
    hidden, overlays unbuilt, the selection untouched, and shown in later turns; the layer to correct is
    selected once; a layer the user hid stays hidden on Next."""
    for number in (1, 2):
        tifffile.imwrite(tmp_path / f"field{number}.tif", instance_blobs((64, 64), seed=number)[0])
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    visible_when_added, overlays_when_added, selected_when_added, activated = [], [], [], []
    viewer.layers.events.inserted.connect(lambda event: (
        visible_when_added.append(event.value.visible),
        overlays_when_added.extend(overlay.visible for overlay in event.value._overlays.values()),
        selected_when_added.append(event.value in viewer.layers.selection)))
    viewer.layers.selection.events.active.connect(lambda event: activated.append(event.value))
    _open(qtbot, widget, tmp_path)
    names = ("field1", "field1 labels", "field1 prediction")
    assert visible_when_added == [False, False, False]
    assert not any(overlays_when_added) and not any(selected_when_added)
    assert all(viewer.layers[name].visible for name in names)
    for name in names[1:]:  # the brush and the polygon outline are there to paint with
        assert {"polygon", "brush_stroke"} <= {key for key, overlay in viewer.layers[name]._overlays.items()
                                               if overlay.visible}
    assert activated == [viewer.layers["field1 labels"]] and viewer.layers.selection == {activated[0]}

    viewer.layers["field1 labels"].visible = False
    widget.experiment_panel.next_button.clicked()
    qtbot.waitUntil(lambda: widget.experiment_panel.current.name == "field2", timeout=30_000)
    wait_until_idle(qtbot, widget)
    assert not viewer.layers["field2 labels"].visible and viewer.layers["field2"].visible
    assert len(visible_when_added) == 3  # the layers are reused, not added again


def test_a_refresh_changes_only_the_cells_that_changed(make_napari_viewer, qtbot, tmp_path):
    """Each save of a few brush strokes refreshes the table: rebuilding it froze the window."""
    for number in (1, 2, 3):
        tifffile.imwrite(tmp_path / f"field{number}.tif", instance_blobs((64, 64), seed=number)[0])
    (tmp_path / "predictions").mkdir()  # field2 was predicted by the command line
    predicted = instance_blobs((64, 64), n=4, seed=5)[1]
    tifffile.imwrite(tmp_path / "predictions" / "field2.tif", predicted)
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    _open(qtbot, widget, tmp_path)
    panel, table = widget.experiment_panel, widget.experiment_panel.table.native
    items = [[table.item(row, column) for column in range(table.columnCount())] for row in range(3)]
    objects = panel.table.column_headers.index("Objects")  # an instance experiment counts objects
    viewer.layers["field1 labels"].paint((32, 32), 1)
    viewer.layers["field1 labels"].paint((8, 8), 2)
    panel.save_now()
    panel.refresh()
    assert panel.table.data[0, objects] == 2  # the painted image's count is shown
    assert "objects" in table.horizontalHeaderItem(objects).toolTip()
    assert [[table.item(row, column) for column in range(table.columnCount())] for row in range(3)
            if row != 0] == items[1:]  # the other rows' cells are the same items, not a new table
    assert panel.table.data[0, 0] == "field1" and "(64 × 64 px)" in table.item(0, 0).toolTip()
    painted = np.count_nonzero(viewer.layers["field1 labels"].data)
    assert panel.table.data[1, 1:objects + 1] == ["train", "predicted", ""]  # counted once it is read
    panel.next_button.clicked()
    qtbot.waitUntil(lambda: panel.current.name == "field2", timeout=30_000)
    wait_until_idle(qtbot, widget)
    assert panel.table.data[1, objects] == f"({len(np.unique(predicted[predicted > 0]))}?)"

    widget.application.value = "semantic"  # the same label files: pixels are what a semantic table counts
    assert panel.table.column_headers[objects] == "Labelled"
    assert "pixels" in table.horizontalHeaderItem(objects).toolTip()
    assert panel.table.data[0, objects] == painted > 2
    assert panel.export_counts_button.native.isHidden()  # pixels are no count to export


def test_a_folder_is_labelled_trained_corrected_accepted_and_reopened(make_napari_viewer, qtbot, tmp_path,
                                                                       trained_samples):
    folder, truth = _dsb_folder(tmp_path)
    runs = trained_samples
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    panel = widget.experiment_panel
    _open(qtbot, widget, folder)
    assert panel.current.name == "nuclei1" and "nuclei1 labels" in viewer.layers
    assert widget.image_layer.value.name == "nuclei1" and widget.labels_layer.value.name == "nuclei1 labels"

    viewer.layers["nuclei1 labels"].data = truth["nuclei1"]  # the user paints image 1
    qtbot.waitUntil(lambda: (folder / "labels" / "nuclei1.tif").is_file(), timeout=10_000)  # saved by itself
    widget.train_button.clicked()
    qtbot.waitUntil(lambda: (folder / "napari-mia-model.safetensors").is_file(), timeout=300_000)
    wait_until_idle(qtbot, widget)
    first_labels = (folder / "labels" / "nuclei1.tif").read_bytes()

    panel.next_button.clicked()  # image 2 arrives with a prediction to correct
    qtbot.waitUntil(lambda: "nuclei2 prediction" in viewer.layers, timeout=60_000)
    wait_until_idle(qtbot, widget)
    assert panel.current.name == "nuclei2" and panel.current.status == "predicted"
    objects, row = panel.table.column_headers.index("Objects"), 1
    prediction = viewer.layers["nuclei2 prediction"].data
    found = len(np.unique(prediction[prediction > 0]))
    assert panel.table.data[row, objects] == f"({found}?)"  # the model's count, until the user accepts
    viewer.layers["nuclei2 prediction"].data = truth["nuclei2"]  # the user's correction
    panel.accept_button.clicked()
    qtbot.waitUntil(lambda: (folder / "labels" / "nuclei2.tif").is_file(), timeout=10_000)
    # The prediction is the labels now: its layer is emptied (a turn later) for the next image.
    qtbot.waitUntil(lambda: not viewer.layers["nuclei2 prediction"].data.any(), timeout=10_000)
    assert panel.current.status == "accepted"
    assert panel.table.data[row, objects] == len(np.unique(truth["nuclei2"])) - 1  # the accepted objects
    np.testing.assert_array_equal(viewer.layers["nuclei2 labels"].data, truth["nuclei2"])

    widget.train_button.clicked()
    qtbot.waitUntil(lambda: len(runs) == 2, timeout=60_000)
    wait_until_idle(qtbot, widget)
    second = runs[1]
    # The two annotated images, each at its own scale (Down Scaling auto: their nuclei brought to one width).
    assert _unscaled_shapes(second) == [(256, 256), (256, 320)]
    assert sorted(int(s.truth.max()) for s in second) == sorted(int(truth[n].max()) for n in ("nuclei1", "nuclei2"))
    assert (folder / "labels" / "nuclei1.tif").read_bytes() == first_labels
    viewer.close()

    again = make_napari_viewer()
    widget = _dock(again)
    _open(qtbot, widget, folder)
    statuses = [(e.name, e.status, e.role) for e in widget.experiment_panel.experiment][:3]
    assert statuses == [("nuclei1", "labelled", "train"), ("nuclei2", "accepted", "train"),
                        ("nuclei3", "unlabelled", "train")]
    np.testing.assert_array_equal(again.layers["nuclei1 labels"].data, truth["nuclei1"])
    assert widget.model is not None and widget.model_config.application == "instance"
    assert len(widget.history) == 2  # both runs' epochs came back with the model

    # The command line trains on the folder the dock wrote, unchanged.
    assert main(["train", "--application", "instance", "--images", str(folder), "--labels", str(folder / "labels"),
                 "--out", str(tmp_path / "cli.safetensors"), "--epochs", "1", "--batch-size", "2",
                 "--patch-size", "64", "--validation-fraction", "0"]) == 0
    assert _unscaled_shapes(runs[-1]) == [(256, 256), (256, 320)]


def _unscaled_shapes(samples) -> list[tuple[int, int]]:
    """The image sizes the training samples were made from, each sample resized by its own scale."""
    return sorted(tuple(round(side / sample.scale) for side in sample.image.shape[1:]) for sample in samples)


def test_predict_all_stopped_half_way_says_how_many_were_done(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_mia.core import experiment

    folder = tmp_path / "blobs"
    folder.mkdir()
    for number in range(1, 7):
        iio.imwrite(folder / f"blob{number}.png", instance_blobs((64, 64), n=3, seed=number)[0])
    config = fixed_config(application="instance", classes=["background", "object"],
                            decoder_channels=(16, 16, 16, 16, 16))
    save_model(folder / "napari-mia-model.safetensors", build_model(config), config)
    calls, stop_clicked, real_predict = [], threading.Event(), experiment.predict_entry

    def predict_until_stopped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the user clicks Stop while the third image is being predicted
            stop_clicked.wait(30)
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(experiment, "predict_entry", predict_until_stopped)
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    _open(qtbot, widget, folder)
    assert widget.model is not None and widget.experiment_panel.predict_all_button.enabled
    widget.experiment_panel.predict_all_button.clicked()
    qtbot.waitUntil(lambda: len(calls) == 3, timeout=30_000)
    widget.stop_button.clicked()
    stop_clicked.set()
    wait_until_idle(qtbot, widget)
    table = widget.experiment_panel.table
    assert table.column_headers == ("Image", "Role", "Status", "Objects", "Unsure", "Scale")
    assert table.shape == (6, 6)
    assert [row[2] for row in table.data.to_list()] == ["predicted"] * 3 + ["unlabelled"] * 3
    assert sorted(p.name for p in (folder / "predictions").iterdir()) == ["blob1.tif", "blob2.tif", "blob3.tif"]
    found = [len(np.unique(ids[ids > 0])) for ids in map(tifffile.imread, sorted((folder / "predictions").iterdir()))]
    assert f"stopped: 3 of 6 images predicted, {sum(found)} objects found" in widget.status.value
    assert [row[3] for row in table.data.to_list()][:3] == [f"({count}?)" for count in found]
    panel = widget.experiment_panel
    assert not panel.export_counts_button.native.isHidden() and panel.export_counts_button.enabled
    panel.export_counts(tmp_path / "counts.csv")  # the folder's counts, as a microscopist takes them away
    qtbot.waitUntil(lambda: (tmp_path / "counts.csv").is_file(), timeout=10_000)
    with open(tmp_path / "counts.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["image", "status", "counted_by", "objects"]
    assert rows[1:] == [[f"blob{n}", "predicted", "model", str(count)] for n, count in enumerate(found, 1)] + [
        [f"blob{n}", "unlabelled", "", ""] for n in (4, 5, 6)]
    assert [e.status for e in Experiment.open(folder)] == ["predicted"] * 3 + ["unlabelled"] * 3
    assert not list(folder.rglob(".*"))  # no half-written file

    # The user steps through the results: D (MIA's key for the next image) and a click on a table row.
    from app_model.types import KeyBinding

    viewer.keymap[KeyBinding.from_str("D")](viewer)
    qtbot.waitUntil(lambda: widget.experiment_panel.current.name == "blob2", timeout=30_000)
    wait_until_idle(qtbot, widget)
    assert "blob2 prediction" in viewer.layers and "blob1" not in viewer.layers  # its saved prediction
    widget.experiment_panel.table.native.cellClicked.emit(5, 0)
    qtbot.waitUntil(lambda: widget.experiment_panel.current.name == "blob6", timeout=30_000)
    wait_until_idle(qtbot, widget)
    assert not viewer.layers["blob6 prediction"].data.any()  # not predicted: its prediction layer is empty
    qtbot.waitUntil(lambda: viewer.layers.selection.active is viewer.layers["blob6 labels"])  # to paint
    assert len(viewer.layers) == 3  # one image open at a time: its image, labels and prediction
    painted = instance_blobs((64, 64), n=3, seed=6)[1]
    viewer.layers["blob6 labels"].data = painted  # painting it saves it
    qtbot.waitUntil(lambda: widget.experiment_panel.current.status == "labelled", timeout=10_000)  # once written
    assert (folder / "labels" / "blob6.tif").is_file() and not (folder / "labels" / "blob2.tif").exists()
    widget.experiment_panel.accept_button.clicked()  # nothing predicted: the labels as painted are accepted
    qtbot.waitUntil(lambda: widget.experiment_panel.current.status == "accepted", timeout=10_000)
    wait_until_idle(qtbot, widget)
    np.testing.assert_array_equal(tifffile.imread(folder / "labels" / "blob6.tif"), painted)
    viewer.keymap[KeyBinding.from_str("A")](viewer)
    qtbot.waitUntil(lambda: widget.experiment_panel.current.name == "blob5", timeout=30_000)


def test_next_goes_to_the_most_uncertain_image_and_the_camera_visits_the_least_sure_objects(
        make_napari_viewer, qtbot, tmp_path):
    import torch

    from napari_mia.core import Trainer

    folder = tmp_path / "blobs"
    folder.mkdir()
    truth = {}
    for number in range(1, 6):
        # blob4 holds three times as many discs: the most object edges, where the model is least sure
        image, truth[f"blob{number}"], _ = instance_blobs((96, 96), n=15 if number == 4 else 5, seed=number)
        iio.imwrite(folder / f"blob{number}.png", image)
    experiment = Experiment.open(folder)
    experiment.save_labels(experiment["blob1"], truth["blob1"])
    config = fixed_config(application="instance", classes=["background", "object"], epochs=25, batch_size=4,
                            patch_size=64, validation_fraction=0.0, decoder_channels=(16, 16, 16, 16, 16))
    torch.manual_seed(0)
    trainer = Trainer(config, *experiment.samples(config))
    for _ in trainer.run():
        pass
    save_model(experiment.model_path, trainer.model, trainer.config)

    viewer = make_napari_viewer()
    widget = _dock(viewer)
    panel = widget.experiment_panel
    _open(qtbot, widget, folder)
    panel.predict_all_button.clicked()
    wait_until_idle(qtbot, widget)
    scores = {e.name: e.uncertainty for e in panel.experiment}
    assert scores["blob1"] is None and all(isinstance(scores[f"blob{n}"], float) for n in range(2, 6))
    shown = {row[0]: row[4] for row in panel.table.data.to_list()}
    assert not shown["blob1"] and float(shown["blob3"]) == pytest.approx(scores["blob3"], abs=5e-3)
    table = panel.table.native  # shown as written (magicgui's cells would show 0.08 as 8.000e-02)
    cell = table.item(2, 4)
    assert table.itemDelegateForIndex(table.indexFromItem(cell)).displayText(cell.text(), QLocale()) == shown["blob3"]
    # The scale each image was predicted at (a model with one Down Scaling: that, 1 here), as written.
    scales = {row[0]: row[5] for row in panel.table.data.to_list()}
    assert not scales.pop("blob1") and scales == {f"blob{n}": "1.00" for n in range(2, 6)}  # blob1: labelled
    cell = table.item(2, 5)
    assert table.itemDelegateForIndex(table.indexFromItem(cell)).displayText(cell.text(), QLocale()) == "1.00"
    assert "scale the model saw the image at" in table.horizontalHeaderItem(5).toolTip()

    panel.order.value = "most uncertain"
    panel.next_button.clicked()
    most = max((n for n in scores if scores[n] is not None), key=scores.get)
    assert most == "blob4"  # not the next in file order (blob2)
    qtbot.waitUntil(lambda: panel.current.name == most, timeout=30_000)
    wait_until_idle(qtbot, widget)
    prediction = viewer.layers[f"{most} prediction"]
    qtbot.waitUntil(lambda: viewer.layers.selection.active is prediction)  # what Accept takes, ready to correct
    confidence = dict(zip(prediction.features["index"], prediction.features["confidence"]))
    assert len(confidence) >= 2 and set(confidence) == set(np.unique(prediction.data[prediction.data > 0]))

    visited = []
    for _ in range(4):
        panel.unsure_button.clicked()
        object_id = prediction.selected_label
        centre = np.argwhere(prediction.data == object_id).mean(axis=0)
        np.testing.assert_allclose(viewer.camera.center[-2:], centre, atol=1e-6)  # the camera went there
        visited.append(object_id)
    assert len(set(visited)) == 4  # four objects, the least sure first
    assert [confidence[i] for i in visited] == sorted(confidence.values())[:4]
    assert "least sure first" in panel.summary.value

    panel.show_uncertainty.value = True
    np.testing.assert_array_equal(viewer.layers[f"{most} uncertainty"].data,
                                  Experiment.open(folder).read_uncertainty(Experiment.open(folder)[most]))
