"""The session: the one owner of the user's work (experiment, model, history, what runs), without Qt."""

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_mia.core.auto import resolve
from napari_mia.core.events import EpochEnd, TrainingDone
from napari_mia.core.experiment import Experiment
from napari_mia.core.io import load_model, read_metadata
from napari_mia.core.session import RunKept, Session, SessionBusy, TrainerReady
from tests.configs import TINY_NETWORK, fixed_config

from ..conftest import blobs

SEMANTIC = fixed_config(epochs=6, batch_size=4, patch_size=64, validation_fraction=0.0, seed=1,
                        decoder_channels=(16, 16, 16, 16, 16), learning_rate=3e-3)


def _folder(tmp_path, count=4):
    folder = tmp_path / "experiment"
    folder.mkdir()
    truth = {}
    for index in range(count):
        image, labels = blobs((96, 96), n=5, seed=index)
        tifffile.imwrite(folder / f"cells{index + 1}.tif", image)
        truth[f"cells{index + 1}"] = labels
    return folder, truth


def _builder(experiment, config):
    def build():
        resolved, choices = resolve(config, experiment.auto_examples())
        return resolved, choices, *experiment.samples(resolved)
    return build


def _run(job):
    """Every event of a job, and what it returned."""
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            return events, stop.value


def test_a_running_session_refuses_a_second_run_and_changes_to_what_the_model_fixes(tmp_path):
    folder, truth = _folder(tmp_path)
    quick = SEMANTIC.replace(**TINY_NETWORK)
    session = Session()
    experiment = session.open_folder(folder)
    experiment.save_labels(experiment["cells1"], truth["cells1"])
    job = session.start_training(_builder(experiment, quick.replace(epochs=1)))
    assert session.state == "training"  # at once, before the worker built anything
    for refused in (lambda: session.start_training(_builder(experiment, SEMANTIC)), session.reset_model,
                    lambda: session.check_change("application"), session.close_folder,
                    lambda: session.open_folder(folder), lambda: session.begin("predicting")):
        with pytest.raises(SessionBusy, match="training"):
            refused()
    session.check_change("epochs")  # not fixed by the model: applies to the next run
    events, done = _run(job)
    assert isinstance(events[0], TrainerReady) and isinstance(done, TrainingDone)
    assert session.state == "idle" and session.model is not None
    session.reset_model()
    assert session.model is None


def test_stop_then_resume_keeps_each_epoch_once_in_the_history_and_the_folder_model(tmp_path):
    folder, truth = _folder(tmp_path)
    session = Session()
    experiment = session.open_folder(folder)
    experiment.save_labels(experiment["cells1"], truth["cells1"])
    job = session.start_training(_builder(experiment, SEMANTIC.replace(epochs=4, batch_size=1, **TINY_NETWORK)))
    for event in job:
        if isinstance(event, EpochEnd) and event.epoch == 1:
            session.request_stop()
    stopped_after = [e.epoch for e in session.history]
    assert session.stopped and stopped_after[:2] == [0, 1] and len(stopped_after) < 4
    assert [e["epoch"] for e in json.loads(read_metadata(experiment.model_path)["history"])] == stopped_after
    _run(session.resume_training())
    assert [e.epoch for e in session.history] == [0, 1, 2, 3]
    saved = json.loads(read_metadata(experiment.model_path)["history"])
    assert [e["epoch"] for e in saved] == [0, 1, 2, 3]
    _run(session.start_training(_builder(experiment, SEMANTIC.replace(epochs=2, **TINY_NETWORK))))  # a second run
    assert [e.epoch for e in session.history] == [0, 1, 2, 3, 0, 1]


def test_a_worse_retrain_leaves_the_better_model_in_use_and_both_on_disk(tmp_path):
    folder, truth = _folder(tmp_path)
    session = Session()
    experiment = session.open_folder(folder)
    for name in ("cells1", "cells2"):
        experiment.save_labels(experiment[name], truth[name])
    experiment.save_labels(experiment["cells4"], truth["cells4"])
    experiment.set_role(experiment["cells4"], "validation")
    events, _ = _run(session.start_training(_builder(experiment, SEMANTIC.replace(epochs=12))))  # resnet18: learns
    first = next(e for e in events if isinstance(e, RunKept))
    assert first.in_use and first.run.score > 0.5 and first.run.validation == ("cells4",)
    assert set(first.run.images) == {"cells1", "cells2"}
    good_weights = {k: v.clone() for k, v in session.model.state_dict().items()}

    experiment.save_labels(experiment["cells3"], truth["cells3"])
    # A learning rate that wrecks what the network learnt: the run ends worse on cells4.
    ruin = SEMANTIC.replace(epochs=3, learning_rate=1.0, retrain_lr_factor=1.0, lr_schedule="constant",
                            keep_best=False)
    events, _ = _run(session.start_training(_builder(experiment, session.config.replace(
        **{k: getattr(ruin, k) for k in ("epochs", "learning_rate", "retrain_lr_factor", "lr_schedule",
                                         "keep_best")}))))
    second = next(e for e in events if isinstance(e, RunKept))
    assert not second.in_use and second.run.score < first.run.score and second.previous_score == pytest.approx(
        first.run.score, abs=1e-6)
    assert "below the model before it" in second.message
    for name, value in session.model.state_dict().items():  # the better weights are the ones in use
        torch.testing.assert_close(value, good_weights[name])
    assert first.run.path.is_file() and second.run.path.is_file()
    in_use, _, _ = load_model(experiment.model_path)
    for name, value in in_use.state_dict().items():
        torch.testing.assert_close(value, good_weights[name])

    reopened = Session()
    again = reopened.open_folder(folder)
    assert [r.number for r in again.runs] == [1, 2] and again.run_in_use == 1
    reopened.use_run(2)  # the user prefers it after all
    assert Experiment.open(folder).run_in_use == 2
    ruined, _, _ = load_model(second.run.path)
    for name, value in reopened.model.state_dict().items():
        torch.testing.assert_close(value, ruined.state_dict()[name])


def test_export_leaves_the_model_in_use_as_it_was(tmp_path):
    from napari_mia.core.models import build_model

    config = fixed_config(epochs=1, patch_size=64, decoder_channels=(16, 16, 16, 16, 16))
    session = Session()
    model = build_model(config).train()  # a model in the middle of training
    session.set_model(model, config)
    before = [p for p in model.parameters()]
    job = session.export("torchscript", tmp_path / "m.pt")
    assert session.state == "exporting"
    _, (path, difference) = _run(job)
    assert path.is_file() and difference < 1e-3 and session.state == "idle"
    assert model.training and all(a is b for a, b in zip(model.parameters(), before))


def _session_with_a_model(tmp_path, count=4):
    from napari_mia.core.models import build_model

    folder, truth = _folder(tmp_path, count)
    config = SEMANTIC.replace(**TINY_NETWORK)
    session = Session()
    experiment = session.open_folder(folder)
    session.set_model(build_model(config).train(), config)  # a model in the middle of training
    return session, experiment


def test_the_look_ahead_predicts_the_image_next_goes_to_with_a_copy_of_the_model(tmp_path):
    session, experiment = _session_with_a_model(tmp_path)
    first, second = experiment.entries[:2]
    weights = [p.detach().clone() for p in session.model.parameters()]
    entry, job = session.look_ahead(first, "file order")
    assert entry is second and session.state == "idle"  # not a job: the user goes on meanwhile
    events, returned = _run(job)
    assert returned is second and events  # progress between tiles, where it can be stopped
    assert second.status == "predicted" and experiment.read_prediction(second) is not None
    assert first.status == "unlabelled" and experiment.read_prediction(first) is None
    assert not session.needs_prediction(second)  # Next shows it as it is
    assert session.model.training  # the model in use was not touched: the copy predicted
    assert all(torch.equal(a, b) for a, b in zip(session.model.parameters(), weights))
    assert session.look_ahead(first, "file order") is None  # nothing left to predict for Next


def test_a_prediction_made_ahead_by_an_older_model_is_made_again_unless_the_user_saw_it(tmp_path):
    from napari_mia.core.models import build_model

    session, experiment = _session_with_a_model(tmp_path)
    first, second, third = experiment.entries[:3]
    _run(session.look_ahead(first, "file order")[1])
    session.set_model(build_model(session.config), session.config)  # e.g. a run ended: another model
    assert session.needs_prediction(second)
    entry, job = session.look_ahead(first, "file order")
    assert entry is second
    _run(job)
    session.shown(second)  # the user saw it: theirs now, as any prediction
    _run(session.look_ahead(second, "file order")[1])
    assert third.status == "predicted"
    session.set_model(build_model(session.config), session.config)
    assert not session.needs_prediction(second) and session.needs_prediction(third)


def test_any_job_stops_the_look_ahead_before_it_saves(tmp_path):
    session, experiment = _session_with_a_model(tmp_path)
    first, second = experiment.entries[:2]
    _, job = session.look_ahead(first, "file order")
    next(job)  # predicting, between two tiles
    session.begin("opening")  # the user opens another image (or trains, predicts, exports)
    events, returned = _run(job)
    assert returned is None and second.status == "unlabelled" and experiment.read_prediction(second) is None
    session.end()
    assert session.needs_prediction(second)


def test_the_session_trains_from_layers_held_in_memory():
    image, labels = blobs((96, 96), n=5, seed=3)
    session = Session()
    layers = Experiment()
    layers.add_array("cells", image, None, labels)
    _, done = _run(session.start_training(_builder(layers, SEMANTIC.replace(epochs=1))))
    assert done.reason == "finished" and session.model is not None and len(session.history) == 1
    assert np.count_nonzero(layers.read_labels(layers["cells"])) == np.count_nonzero(labels)


def _application_folder(tmp_path, application):
    """Four images and what a user would give them in ``application``: label images, points at the discs'
    centres, or a class per image (small or large discs)."""
    from ..conftest import instance_blobs

    folder = tmp_path / application
    folder.mkdir()
    annotations = {}
    for index in range(4):
        radius = 5 if application == "classification" and index % 2 else 9
        image, instances, centres = instance_blobs((96, 96), n=5, radius=radius, seed=index)
        tifffile.imwrite(folder / f"im{index + 1}.tif", image)
        annotations[f"im{index + 1}"] = {
            "semantic": (instances > 0).astype(np.uint8), "instance": instances,
            "detection": (centres, ["cell"] * len(centres), np.ones(len(centres))),
            "classification": ("small" if radius == 5 else "large", 1.0)}[application]
    return folder, annotations


APPLICATION_CONFIGS = {
    "semantic": fixed_config(**TINY_NETWORK),
    "instance": fixed_config(application="instance", **TINY_NETWORK),
    "detection": fixed_config(application="detection", classes=["cell"], object_size=18.0, **TINY_NETWORK),
    "classification": fixed_config(application="classification", classes=["large", "small"], **TINY_NETWORK),
}


@pytest.mark.parametrize("application", list(APPLICATION_CONFIGS))
def test_every_application_works_through_a_folder_and_comes_back(tmp_path, application):
    from napari_mia.core.config import APPLICATIONS
    from napari_mia.core.experiment import predict_entry

    folder, given = _application_folder(tmp_path, application)
    kind = APPLICATIONS[application].annotations
    config = APPLICATION_CONFIGS[application].replace(epochs=2, batch_size=2, patch_size=64, validation_fraction=0)
    session = Session()
    experiment = session.open_folder(folder, annotations=kind)
    for name in ("im1", "im2"):
        experiment.save_annotation(experiment[name], given[name])
    _run(session.start_training(_builder(experiment, config)))
    assert {e.name for e in experiment.last_used} == {"im1", "im2"}

    third = experiment["im3"]
    prediction, _ = predict_entry(session.model, session.config, experiment, third)
    assert third.status == "predicted" and experiment.read_annotation(third) is None
    assert not third.teaches  # a prediction never teaches before it is accepted
    if kind != "classes":  # the table's bracketed count: the model's objects or points
        found = len(prediction[0]) if kind == "points" else len(np.unique(prediction[prediction > 0]))
        assert third.predicted == found
    experiment.save_annotation(third, experiment.read_predicted(third), "accepted")
    _run(session.start_training(_builder(experiment, config)))
    assert {e.name for e in experiment.last_used} == {"im1", "im2", "im3"}

    reopened = Session()
    again = reopened.open_folder(folder, annotations=kind)
    assert [e.status for e in again] == ["labelled", "labelled", "accepted", "unlabelled"]
    assert reopened.model is not None and reopened.config.application == application
    assert [r.number for r in again.runs] == [1, 2] and len(reopened.history) == 4
    kept = again.read_annotation(again["im1"])
    if kind == "labels":
        np.testing.assert_array_equal(kept, given["im1"])
    elif kind == "points":
        np.testing.assert_allclose(kept[0], given["im1"][0], atol=0.01)
        assert kept[1] == given["im1"][1]
    else:
        assert kept[0] == given["im1"][0]


@pytest.mark.parametrize("application", ["detection", "classification"])
def test_the_command_line_trains_on_a_points_or_classes_folder_as_it_was_written(tmp_path, application,
                                                                                  trained_samples):
    from napari_mia.core.cli import main
    from napari_mia.core.config import APPLICATIONS

    folder, given = _application_folder(tmp_path, application)
    kind = APPLICATIONS[application].annotations
    experiment = Experiment.open(folder, annotations=kind)
    for name in ("im1", "im2"):
        experiment.save_annotation(experiment[name], given[name])
    table = folder / ("points.csv" if kind == "points" else "classes.csv")
    assert main(["train", "--application", application, "--images", str(folder), f"--{kind}", str(table),
                 "--out", str(tmp_path / "m.safetensors"), "--epochs", "1", "--batch-size", "2",
                 "--patch-size", "64", "--validation-fraction", "0", "--backbone", "resnet18", "--no-pretrained",
                 "--mono", "--downscale", "1"]) == 0
    (samples,), config = trained_samples, load_model(tmp_path / "m.safetensors")[1]
    assert len(samples) == 2  # the two annotated images, not the two the user left alone
    if kind == "points":
        assert config.classes == ["cell"] and sum(len(s.truth) for s in samples) == 10
    else:
        assert config.classes == ["large", "small"] and sorted(int(s.labels) for s in samples) == [0, 1]
