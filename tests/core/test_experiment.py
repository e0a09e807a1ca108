"""The experiment (a folder of images with what the user painted and accepted), without Qt."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile

from napari_mia.core.cli import main
from napari_mia.core.experiment import Experiment, predict_all
from napari_mia.core.files import read_labels
from napari_mia.core.models import build_model
from tests.configs import fixed_config

from ..conftest import instance_blobs

TINY = fixed_config(application="instance", classes=["background", "object"], epochs=1, batch_size=2,
                      patch_size=32, validation_fraction=0.0, decoder_channels=(16, 16, 16, 16, 16))


def _folder(tmp_path, names=("im1", "im2", "im10"), shapes=((96, 96), (64, 80), (80, 64))):
    folder = tmp_path / "experiment"
    folder.mkdir()
    truth = {}
    for index, (name, shape) in enumerate(zip(names, shapes)):
        image, instances, _ = instance_blobs(shape, n=3, seed=index)
        tifffile.imwrite(folder / f"{name}.tif", image)
        truth[name] = instances
    return folder, truth


def _hidden_files(folder):
    return [p for p in folder.rglob(".*")]


def test_a_folder_opens_in_natural_order_with_nothing_labelled(tmp_path):
    folder, _ = _folder(tmp_path)
    experiment = Experiment.open(folder)
    assert [e.name for e in experiment] == ["im1", "im2", "im10"]
    assert {e.status for e in experiment} == {"unlabelled"} and {e.role for e in experiment} == {"train"}
    assert experiment.annotated_entries() == []


def test_labels_roles_and_statuses_come_back_when_the_folder_is_reopened(tmp_path):
    folder, truth = _folder(tmp_path)
    experiment = Experiment.open(folder)
    experiment.save_labels(experiment["im1"], truth["im1"])
    experiment.accept(experiment["im2"], truth["im2"])
    experiment.set_role(experiment["im10"], "test")
    again = Experiment.open(folder)
    assert [(e.status, e.role) for e in again] == [("labelled", "train"), ("accepted", "train"), ("unlabelled", "test")]
    np.testing.assert_array_equal(again.read_labels(again["im2"]), truth["im2"])
    assert (folder / "labels" / "im1.tif").is_file() and not _hidden_files(folder)
    assert json.loads((folder / "napari-mia.json").read_text())["images"]["im10"]["role"] == "test"


def test_saved_labels_are_counted_in_pixels_and_objects_and_the_counts_come_back(tmp_path):
    """The table shows labelled pixels (semantic) or objects (instance) without reading a label file."""
    folder, truth = _folder(tmp_path)
    experiment = Experiment.open(folder)
    assert experiment["im1"].objects is None  # nothing counted yet: the table leaves the cell empty
    experiment.save_labels(experiment["im1"], truth["im1"])
    counts = (np.count_nonzero(truth["im1"]), len(np.unique(truth["im1"])) - 1)
    assert counts[1] == 3 and (experiment["im1"].annotated, experiment["im1"].objects) == counts
    again = Experiment.open(folder)["im1"]
    assert (again.annotated, again.objects) == counts

    predicted = truth["im2"].copy()
    experiment.save_predicted(experiment["im2"], predicted)  # the model's objects, shown until accepted
    predicted[predicted == 1] = 0
    experiment.save_predicted(experiment["im2"], predicted, corrected=True)  # the user deleted one
    assert Experiment.open(folder)["im2"].predicted == 2


@pytest.mark.parametrize("labels", [
    np.zeros((3, 3), np.uint8), np.array([[0, 5, 5], [7, 0, 1]], np.uint16), np.array([[True, False]]),
    np.array([[0, 2**40, 3]], np.uint64), np.array([[-1, 2, 2, 3]], np.int32), np.array([[0.0, 2.0, 2.0]]),
    np.zeros((0, 4), np.int32)], ids=["empty", "ids", "bool", "ids-beyond-size", "negative", "float", "no-pixel"])
def test_objects_are_the_distinct_ids_above_0(labels):
    from napari_mia.core.experiment import count_objects

    assert count_objects(labels) == len(np.unique(labels[labels > 0]))


def test_the_count_table_holds_every_image_with_whose_count_it_is(tmp_path):
    """Yours where you annotated or accepted, else the model's (corrections included); label files that
    were never counted (written by hand) are read."""
    import csv

    folder, truth = _folder(tmp_path, names=("im1", "im2", "im3", "im4"), shapes=((64, 64),) * 4)
    (folder / "labels").mkdir()
    tifffile.imwrite(folder / "labels" / "im4.tif", truth["im4"])  # by hand: no count in the state file
    experiment = Experiment.open(folder)
    experiment.save_labels(experiment["im1"], truth["im1"])
    corrected = np.where(truth["im2"] == 1, 0, truth["im2"])
    experiment.save_predicted(experiment["im2"], truth["im2"])
    experiment.save_predicted(experiment["im2"], corrected, corrected=True)
    header, rows = Experiment.open(folder).count_table()
    assert header == ["image", "status", "counted_by", "objects"]
    assert rows == [["im1", "labelled", "you", 3], ["im2", "corrected", "model", 2],
                    ["im3", "unlabelled", "", ""], ["im4", "labelled", "you", 3]]
    assert experiment.write_count_table(folder / "counts.csv") == 3
    with open(folder / "counts.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [header, *([str(cell) for cell in row] for row in rows)]


def test_the_count_table_of_points_counts_each_class(tmp_path):
    folder, _ = _folder(tmp_path)
    experiment = Experiment.open(folder, annotations="points")
    experiment.save_annotation(experiment["im1"], (np.array([[5.0, 5.0], [9.0, 9.0], [20.0, 20.0]]),
                                                   ["RBC", "RBC", "WBC"], np.ones(3)))
    experiment.save_predicted(experiment["im2"], (np.array([[7.0, 7.0]]), ["Platelets"], np.array([0.8])))
    header, rows = experiment.count_table()
    assert header == ["image", "status", "counted_by", "points", "Platelets", "RBC", "WBC"]
    assert rows == [["im1", "labelled", "you", 3, 0, 2, 1], ["im2", "predicted", "model", 1, 1, 0, 0],
                    ["im10", "unlabelled", "", "", "", "", ""]]
    with pytest.raises(ValueError, match="class, not a count"):
        Experiment.open(folder, annotations="classes").count_table()


def test_a_label_file_without_a_state_file_still_counts(tmp_path):
    """Labels written by hand (or by a session that crashed before its state file) teach."""
    folder, truth = _folder(tmp_path)
    (folder / "labels").mkdir()
    tifffile.imwrite(folder / "labels" / "im2.tif", truth["im2"])
    assert [e.name for e in Experiment.open(folder).annotated_entries()] == ["im2"]


def test_painting_over_png_labels_saves_a_tiff_and_leaves_the_png_as_it_was(tmp_path):
    import imageio.v3 as iio

    folder, truth = _folder(tmp_path)
    (folder / "labels").mkdir()
    iio.imwrite(folder / "labels" / "im1.png", truth["im1"].astype(np.uint8))
    before = (folder / "labels" / "im1.png").read_bytes()
    experiment = Experiment.open(folder)
    np.testing.assert_array_equal(experiment.read_labels(experiment["im1"]), truth["im1"])
    experiment.save_labels(experiment["im1"], truth["im1"] * 2)
    assert (folder / "labels" / "im1.png").read_bytes() == before
    np.testing.assert_array_equal(Experiment.open(folder).read_labels(experiment["im1"]), truth["im1"] * 2)


def test_samples_come_from_every_painted_or_accepted_image_of_any_size(tmp_path):
    folder, truth = _folder(tmp_path)
    experiment = Experiment.open(folder)
    experiment.save_labels(experiment["im1"], truth["im1"])
    experiment.accept(experiment["im2"], truth["im2"])
    experiment.save_prediction(experiment["im10"], truth["im10"])  # a prediction nobody accepted
    train, validation = experiment.samples(TINY)
    assert sorted(s.image.shape for s in train) == [(1, 64, 80), (1, 96, 96)] and validation == []
    assert experiment["im10"].status == "predicted" and not experiment["im10"].teaches


def test_an_accepted_image_touched_up_afterwards_stays_accepted(tmp_path):
    folder, truth = _folder(tmp_path)
    experiment = Experiment.open(folder)
    experiment.accept(experiment["im1"], truth["im1"])
    experiment.save_labels(experiment["im1"], np.zeros_like(truth["im1"]))  # everything erased, on purpose
    assert Experiment.open(folder)["im1"].status == "accepted"
    [sample], _ = experiment.samples(TINY)  # it now teaches that the image holds no object
    assert not sample.truth.any()


def test_painting_a_test_image_makes_it_a_training_image(tmp_path):
    folder, truth = _folder(tmp_path)
    experiment = Experiment.open(folder)
    experiment.set_role(experiment["im1"], "test")
    experiment.save_labels(experiment["im1"], truth["im1"])
    assert experiment["im1"].role == "train" and experiment["im1"].teaches


def test_validation_is_by_whole_images_a_role_first(tmp_path):
    folder, truth = _folder(tmp_path)
    experiment = Experiment.open(folder)
    for name in truth:
        experiment.save_labels(experiment[name], truth[name])
    experiment.set_role(experiment["im2"], "validation")
    train, validation = experiment.samples(TINY)
    assert [s.image.shape for s in validation] == [(1, 64, 80)] and len(train) == 2
    experiment.set_role(experiment["im2"], "train")
    train, validation = experiment.samples(TINY.replace(validation_fraction=0.34))
    assert len(validation) == 1 and len(train) == 2
    assert {s.image.shape for s in train + validation} == {(1, 96, 96), (1, 64, 80), (1, 80, 64)}


def test_frames_of_a_stack_never_painted_do_not_teach_background(tmp_path):
    image, instances, _ = instance_blobs((64, 64), n=3)
    stack, labels = np.stack([image] * 4), np.zeros((4, 64, 64), np.int32)
    labels[2] = instances
    experiment = Experiment()
    experiment.add_array("stack", stack, labels=labels)
    train, _ = experiment.samples(TINY)
    assert len(train) == 1 and train[0].truth.max() == 3


def test_an_image_accepted_with_no_object_teaches_that_it_holds_none(tmp_path):
    folder, _ = _folder(tmp_path)
    experiment = Experiment.open(folder)
    experiment.save_labels(experiment["im1"], np.zeros((96, 96), np.uint16))  # painted, then erased
    assert experiment.samples(TINY)[0] == []
    experiment.accept(experiment["im1"], np.zeros((96, 96), np.uint16))
    [sample], _ = experiment.samples(TINY)
    assert not sample.truth.any()


def test_predict_all_stopped_half_way_keeps_every_finished_image(tmp_path):
    folder, _ = _folder(tmp_path, names=("a", "b", "c", "d"), shapes=((64, 64),) * 4)
    experiment = Experiment.open(folder)
    events = predict_all(build_model(TINY), TINY, experiment, list(experiment))
    done = [next(events), next(events)]
    events.close()  # what a worker's Stop does between two images
    assert [e.done for e in done] == [1, 2] and done[0].total == 4
    assert sorted(p.name for p in (folder / "predictions").iterdir()) == ["a.tif", "b.tif"]
    assert read_labels(folder / "predictions" / "b.tif").shape == (64, 64)
    reopened = Experiment.open(folder)
    assert [e.status for e in reopened] == ["predicted", "predicted", "unlabelled", "unlabelled"]
    assert reopened.annotated_entries() == [] and not _hidden_files(folder)


def test_the_command_line_trains_on_the_folder_with_its_roles(tmp_path, capsys):
    folder, truth = _folder(tmp_path)
    experiment = Experiment.open(folder)
    for name in truth:
        experiment.save_labels(experiment[name], truth[name])
    experiment.set_role(experiment["im10"], "validation")
    model, settings = tmp_path / "model.safetensors", tmp_path / "settings.json"
    settings.write_text('{"min_batches": 15}')
    assert main(["train", "--application", "instance", "--images", str(folder), "--labels",
                 str(folder / "labels"), "--out", str(model), "--epochs", "1", "--batch-size", "2",
                 "--patch-size", "32", "--config", str(settings)]) == 0
    told = capsys.readouterr().err
    assert "2 training and 1 validation frames" in told and model.is_file()
    epochs, batches = map(int, re.search(r"(\d+) epochs of (\d+) batches \(Epochs 1: at least 15 batches\)",
                                         told).groups())
    assert epochs == -(-15 // batches) > 1


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from napari_mia.core.experiment import Experiment
    experiment = Experiment.open(sys.argv[1])
    entry = experiment["im1"]
    for value in range(1, 10_000):
        experiment.save_labels(entry, np.full((96, 96), value, np.uint16))
        print(value, flush=True)
""")


def test_a_process_killed_while_saving_leaves_the_last_saved_labels_intact(tmp_path):
    folder, _ = _folder(tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        saved = [int(writer.stdout.readline()) for _ in range(5)]  # it is saving, again and again
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    labels = read_labels(folder / "labels" / "im1.tif")  # whole, whatever moment the kill hit
    assert labels.shape == (96, 96) and len(np.unique(labels)) == 1 and labels[0, 0] >= saved[-1]
    reopened = Experiment.open(folder)
    assert reopened["im1"].status == "labelled"


@pytest.mark.parametrize("content", ["{", "[]"])
def test_a_broken_state_file_is_named(tmp_path, content):
    folder, _ = _folder(tmp_path)
    (folder / "napari-mia.json").write_text(content)
    with pytest.raises(ValueError, match="napari-mia.json: not a napari-mia experiment file"):
        Experiment.open(folder)


def test_images_new_since_the_last_run_get_their_share_of_the_patches(tmp_path):
    from napari_mia.core.data import PatchDataset

    folder, truth = _folder(tmp_path, names=[f"im{i}" for i in range(10)], shapes=[(64, 64)] * 10)
    experiment = Experiment.open(folder)
    for name in list(truth)[:9]:
        experiment.save_labels(experiment[name], truth[name])
    experiment.samples(TINY)
    experiment.mark_trained(experiment.last_used)
    experiment.accept(experiment["im9"], truth["im9"])  # one corrected image among nine trained ones
    reopened = Experiment.open(folder)  # what was trained is remembered
    train, _ = reopened.samples(TINY)
    assert [s.new for s in train] == [False] * 9 + [True]
    assert PatchDataset(train, TINY.replace(new_image_share=0.0)).frame_weights[-1] == pytest.approx(0.1)  # by area
    weights = PatchDataset(train, TINY.replace(new_image_share=0.5)).frame_weights
    assert weights[-1] == pytest.approx(0.5) and weights[:9] == pytest.approx([0.5 / 9] * 9)


def test_images_that_share_a_stem_keep_their_own_labels_predictions_and_state(tmp_path):
    folder, truth = _folder(tmp_path, names=("a",), shapes=((64, 64),))
    image, instances, _ = instance_blobs((64, 64), n=2, seed=7)
    import imageio.v3 as iio

    iio.imwrite(folder / "a.png", image)
    experiment = Experiment.open(folder)
    assert [e.name for e in experiment] == ["a.png", "a.tif"]
    experiment.save_labels(experiment["a.png"], instances)
    experiment.save_prediction(experiment["a.tif"], truth["a"])
    experiment.set_role(experiment["a.tif"], "validation")
    again = Experiment.open(folder)
    assert [(e.status, e.role) for e in again] == [("labelled", "train"), ("predicted", "validation")]
    np.testing.assert_array_equal(again.read_labels(again["a.png"]), instances)
    assert again.read_labels(again["a.tif"]) is None
    np.testing.assert_array_equal(again.read_prediction(again["a.tif"]), truth["a"])
    assert again.read_prediction(again["a.png"]) is None


def test_a_corrected_prediction_is_kept_left_by_predict_all_and_teaches_only_once_accepted(tmp_path):
    folder, truth = _folder(tmp_path)
    experiment = Experiment.open(folder)
    entry = experiment["im2"]
    experiment.save_prediction(entry, np.zeros_like(truth["im2"]))
    experiment.save_corrected_prediction(entry, truth["im2"])
    again = Experiment.open(folder)
    corrected = again["im2"]
    assert corrected.corrected and corrected.status == "predicted" and not corrected.teaches
    np.testing.assert_array_equal(again.read_prediction(corrected), truth["im2"])
    assert [e.name for e in again.entries_to_predict()] == ["im1", "im10"]
    assert again.annotated_entries() == []


def test_a_random_validation_image_stays_one_as_the_experiment_grows(tmp_path):
    """Runs are compared on validation images none of them learnt from."""
    names = tuple(f"im{i}" for i in range(8))
    folder, truth = _folder(tmp_path, names=names, shapes=[(64, 64)] * len(names))
    experiment = Experiment.open(folder)
    config = TINY.replace(validation_fraction=0.2)
    chosen = []
    for name in names:
        experiment.save_labels(experiment[name], truth[name])
        if len(experiment.annotated_entries()) > 1:
            experiment.samples(config)
            chosen.append({e.name for e in experiment.last_validation})
    for before, after in zip(chosen, chosen[1:]):
        assert len(before - after) <= 1  # only an image added since can take a validation image's place
    learnt_from = set()
    for validation, count in zip(chosen, range(2, len(names) + 1)):
        assert len(validation) == max(1, round(0.2 * count))
        learnt_from |= set(names[:count]) - validation
    assert chosen[-1] - learnt_from  # the last split still holds an image no split trained on


def test_a_drawn_validation_image_never_takes_the_only_image_of_a_class(tmp_path):
    """Two images, one of each class, the default Validation split: both train (the split would have left
    one class, and the run would have been refused with 'every image has the same class')."""
    folder, _ = _folder(tmp_path, names=("slide1", "slide2"), shapes=((64, 64), (64, 64)))
    experiment = Experiment.open(folder, annotations="classes")
    experiment.save_annotation(experiment["slide1"], ("fluorescence", 1.0))
    experiment.save_annotation(experiment["slide2"], ("histology", 1.0))
    config = fixed_config(application="classification", classes=["fluorescence", "histology"], patch_size=32)
    assert config.validation_fraction > 0
    training, validation = experiment.samples(config)
    assert sorted(int(s.labels) for s in training) == [0, 1] and validation == []
    assert experiment.last_validation == [] and len(experiment.last_used) == 2
    for name in ("slide3", "slide4"):  # with more images of each class the split draws one again
        (folder / f"{name}.tif").write_bytes((folder / "slide1.tif").read_bytes())
    experiment = Experiment.open(folder, annotations="classes")
    experiment.save_annotation(experiment["slide3"], ("fluorescence", 1.0))
    experiment.save_annotation(experiment["slide4"], ("histology", 1.0))
    training, validation = experiment.samples(config.replace(validation_fraction=0.25))
    assert len(validation) == 1 and {int(s.labels) for s in training} == {0, 1}
