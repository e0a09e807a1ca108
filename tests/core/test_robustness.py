"""Bad input, faults and hostile files: a clear error or a result, never anything else, nothing lost."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_mia.core import (
    ConfigError,
    DataError,
    Trainer,
    TrainingDone,
    load_model,
    make_samples,
    predict,
    save_model,
)
from napari_mia.core.cli import main
from napari_mia.core.models import build_model
from tests.configs import fixed_config

from ..conftest import blobs

TINY = fixed_config(epochs=1, batch_size=2, patch_size=32, validation_fraction=0.0,
                      decoder_channels=(16, 16, 16, 16, 16))
THREE_CLASSES = ["background", "a", "b"]
_MODEL = build_model(TINY.replace(classes=THREE_CLASSES))


@pytest.mark.parametrize(
    ("image", "labels", "message"),
    [
        (np.zeros((8, 8)), np.zeros((8, 9), np.uint8), "do not match"),
        (np.zeros((8, 8)), np.zeros((8, 8), np.float32), "integers"),
        (np.zeros((8, 8)), np.full((8, 8), 3, np.uint8), "class id 3"),
        (np.zeros((8, 8)), np.full((8, 8), -1, np.int8), "negative"),
        (np.full((8, 8), np.nan), np.zeros((8, 8), np.uint8), "NaN"),
        (np.full((8, 8), np.inf), np.zeros((8, 8), np.uint8), "NaN or infinite"),
        (np.zeros(8), np.zeros(8, np.uint8), "at least 2D"),
        (np.zeros((0, 8)), np.zeros((0, 8), np.uint8), "non-empty"),
        (np.zeros((8, 8, 2)), np.zeros((8, 8), np.uint8), "2 channel"),
    ],
)
def test_bad_data_is_named(image, labels, message):
    channel_axis = -1 if image.ndim == 3 else None
    with pytest.raises(DataError, match=message):
        make_samples(image, labels, fixed_config(), channel_axis)


@pytest.mark.parametrize(
    ("labels", "message"),
    [(np.zeros((32, 32), np.uint8), "no labelled pixels"),
     (np.ones((32, 32), np.uint8), "only class 1 \\(foreground\\)")],
)
def test_unpainted_or_single_class_labels_are_refused(labels, message):
    with pytest.raises(DataError, match=message):
        Trainer(TINY, make_samples(np.zeros((32, 32)), labels, TINY))


def test_sparse_labels_with_nothing_painted_are_refused():
    config = TINY.replace(sparse_labels=True)
    with pytest.raises(DataError, match="no labelled"):
        Trainer(config, make_samples(np.zeros((32, 32)), np.zeros((32, 32), np.uint8), config))


dtypes = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, bool])


@st.composite
def image_and_labels(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=ndim, max_size=ndim)))
    if ndim == 4:
        shape = (min(shape[0], 2), min(shape[1], 2), *shape[2:])
    image = draw(arrays(np.int64, shape, elements=st.integers(0, 255))).astype(draw(dtypes))
    label_shape = draw(st.sampled_from([shape, shape[::-1], shape[-2:] if ndim >= 2 else shape]))
    labels = draw(arrays(np.int64, label_shape, elements=st.integers(0, 3))).astype(draw(dtypes))
    return image, labels


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_and_labels(), st.booleans())
def test_data_path_trains_and_predicts_or_raises_the_documented_error(pair, sparse):
    image, labels = pair
    config = TINY.replace(sparse_labels=sparse, classes=THREE_CLASSES)
    try:
        samples = make_samples(image, labels, config)
        trainer = Trainer(config, samples, model=_MODEL)
    except (DataError, ConfigError):
        return
    events = list(trainer.run())
    assert isinstance(events[-1], TrainingDone)
    predicted = predict(trainer.model, image, config)
    assert predicted.shape == image.shape and predicted.dtype == np.uint16


def test_out_of_memory_stops_cleanly_with_advice_and_keeps_the_weights(monkeypatch):
    config = TINY.replace(epochs=3)
    trainer = Trainer(config, make_samples(*blobs(), config))
    run = trainer.run()
    next(run)  # one good batch
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def exhausted(images, labels):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "_train_step", exhausted)
    done = list(run)[-1]
    assert done.reason == "out of memory" and "lower Batch Size or Patch size" in done.message
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_other_errors_inside_training_are_not_swallowed(monkeypatch):
    trainer = Trainer(TINY, make_samples(*blobs(), TINY))
    monkeypatch.setattr(trainer, "_train_step", lambda *a: (_ for _ in ()).throw(ValueError("bug")))
    with pytest.raises(ValueError, match="bug"):
        list(trainer.run())


def test_cli_out_of_memory_saves_the_last_good_weights_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    import tifffile

    (tmp_path / "i").mkdir(), (tmp_path / "l").mkdir()
    image, labels = blobs()
    tifffile.imwrite(tmp_path / "i" / "a.tif", image), tifffile.imwrite(tmp_path / "l" / "a.tif", labels)

    def exhausted(self, images, labels):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(Trainer, "_train_step", exhausted)
    code = main(["train", "--images", str(tmp_path / "i"), "--labels", str(tmp_path / "l"),
                 "--out", str(tmp_path / "m.safetensors"), "--patch-size", "32", "--batch-size", "2"])
    assert code == 3 and "lower Batch Size" in capsys.readouterr().err
    load_model(tmp_path / "m.safetensors")


def _kill_when_busy(command, ready, seconds):
    """Start ``command``, wait until it prints a line holding ``ready`` (it is then doing the work the
    test interrupts, however slow the machine), and kill it ``seconds`` later."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if ready in line:
            break
    else:
        raise AssertionError(f"{command[-1][:60]!r} ended before printing {ready!r}")
    time.sleep(seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_training_and_killed_saves_leave_the_previous_model_loadable(tmp_path):
    config = fixed_config(backbone="resnet50", classes=["bg", "fg"])
    torch.manual_seed(0)
    model = build_model(config)
    path = save_model(tmp_path / "model.safetensors", model, config)
    reference = load_model(path)[0].state_dict()

    # A process that saves the same model file over and over, killed at arbitrary moments.
    saver = f"""
import torch
from napari_mia.core import TrainingConfig, save_model
from napari_mia.core.models import build_model
config = TrainingConfig(pretrained=False, color_mode="mono", downscale=1.0, backbone="resnet50", classes=["bg", "fg"])
model = build_model(config)
print("saving", flush=True)
while True:
    save_model({str(path)!r}, model, config)
"""
    for delay in (0.05, 0.5, 1.1):
        _kill_when_busy([sys.executable, "-c", saver], "saving", delay)
        loaded = load_model(path)[0]  # old or new, never broken
        assert set(loaded.state_dict()) == set(reference)

    # Training through the CLI, killed mid-epoch, writing to the same path.
    import tifffile

    (tmp_path / "i").mkdir(), (tmp_path / "l").mkdir()
    for index in range(4):
        image, labels = blobs(shape=(128, 128), seed=index)
        tifffile.imwrite(tmp_path / "i" / f"{index}.tif", image)
        tifffile.imwrite(tmp_path / "l" / f"{index}.tif", labels)
    before = path.read_bytes()
    _kill_when_busy([sys.executable, "-m", "napari_mia", "train", "--images", str(tmp_path / "i"), "--labels",
                     str(tmp_path / "l"), "--out", str(path), "--epochs", "1000", "--backbone", "resnet50"],
                    "training and", 2.0)
    assert path.read_bytes() == before
    load_model(path)
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".part")]
    assert len(leftovers) <= 3  # temporary files of killed saves, never the model itself
