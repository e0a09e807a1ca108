"""Models that travel: ONNX/TorchScript export matched to PyTorch, bioimage.io packages, big images."""

import errno
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_mia
from napari_mia.core.cli import main
from napari_mia.core.events import EpochEnd
from napari_mia.core.export import export, read_exported_config
from napari_mia.core.infer import predict
from napari_mia.core.io import save_model
from napari_mia.core.measure import measure_objects, objects_of_classes
from napari_mia.core.models import build_model
from tests.configs import fixed_config


def _model(**settings):
    torch.manual_seed(0)
    config = fixed_config(patch_size=64, **settings)
    return build_model(config).eval(), config


@pytest.mark.parametrize("file_format", ["onnx", "torchscript"])
def test_exported_models_match_pytorch_and_carry_the_config(tmp_path, file_format):
    model, config = _model(classes=["bg", "a", "b"])
    suffix = "onnx" if file_format == "onnx" else "pt"
    path, difference = export(model, config, file_format, tmp_path / f"m.{suffix}")
    assert difference < 1e-4  # checked on two batches, one of another image size
    assert read_exported_config(path).classes == ["bg", "a", "b"]


def test_exports_are_compared_on_probabilities_with_relative_and_absolute_tolerance():
    from napari_mia.core.export import disagreement

    config = fixed_config(classes=["bg", "a", "b"])
    logits = np.random.default_rng(0).normal(0, 8, (1, 3, 16, 16)).astype(np.float32)
    reordered = logits + np.float32(3e-4) * np.sign(logits)  # float32 reordering in a deep network
    difference, agree = disagreement(logits, reordered, config)
    assert agree and difference < 2e-4  # logits moved by up to 6e-4 between classes
    wrong = logits.copy()
    wrong[0, :, 3, 3] = wrong[0, ::-1, 3, 3]  # one pixel's classes swapped: a real difference
    difference, agree = disagreement(logits, wrong, config)
    assert not agree and difference > 0.1
    heatmaps = fixed_config(application="detection", classes=["cell"])
    assert not disagreement(logits[:, :1], logits[:, :1] + 0.05, heatmaps)[1]  # sigmoid per class


def test_a_trained_resnet18_unet_exports_to_onnx(tmp_path):
    from napari_mia.core.data import make_samples
    from napari_mia.core.train import Trainer

    from ..conftest import blobs

    config = fixed_config(backbone="resnet18", patch_size=128, batch_size=4, epochs=3,
                            validation_fraction=0.0, learning_rate=3e-3)
    samples = [s for seed in range(4) for s in make_samples(*blobs((192, 192), n=12, seed=seed), config)]
    trainer = Trainer(config, samples, [])
    for _ in trainer.run():
        pass
    _, difference = export(trainer.model, config, "onnx", tmp_path / "trained.onnx")
    assert (tmp_path / "trained.onnx").is_file() and difference < 1e-3


def test_classifier_exports_to_onnx(tmp_path):
    model, config = _model(application="classification", classes=["x", "y"])
    _, difference = export(model, config, "onnx", tmp_path / "c.onnx")
    assert difference < 1e-4


def test_bioimageio_package_validates_runs_and_imports_back(tmp_path, monkeypatch):
    import tempfile

    from napari_mia.core.bioimageio import load_bioimageio, validate_bioimageio

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the export and the import work

    model, config = _model(application="instance")
    history = [EpochEnd(epoch=0, epochs=1, train_loss=0.5, learning_rate=1e-3, seconds=2.0)]
    saved = save_model(tmp_path / "m.safetensors", model, config, history)
    assert main(["export", "--model", str(saved), "--format", "bioimageio", "--out", str(tmp_path / "p.zip"),
                 "--author", "Ada Lovelace", "--author", "Grace Hopper"]) == 0
    assert validate_bioimageio(tmp_path / "p.zip") in ("valid-format", "passed")
    from bioimageio.spec import load_description

    description = load_description(str(tmp_path / "p.zip"))
    assert str(description.license) == "BSD-3-Clause"  # napari-mia's license unless --license says otherwise
    assert [author.name for author in description.authors] == ["Ada Lovelace", "Grace Hopper"]
    with zipfile.ZipFile(tmp_path / "p.zip") as package:
        documentation = package.read("README.md").decode()
    assert f"napari-mia {napari_mia.__version__}" in documentation and "https://github.com/)" not in documentation
    from bioimageio.core import test_model

    assert test_model(str(tmp_path / "p.zip"), weight_format="onnx").status == "passed"
    loaded, loaded_config, loaded_history = load_bioimageio(tmp_path / "p.zip")
    assert loaded_config == config and loaded_history == history
    for mine, theirs in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(mine, theirs)
    assert [p.name for p in scratch.iterdir() if p.name.startswith("napari-mia")] == []  # no work folder left


def test_zarr_prediction_streams_and_matches_in_memory(tmp_path):
    import tifffile
    import zarr

    model, config = _model(tile_size=256, tile_overlap=64)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (600, 700), dtype=np.uint8)
    stored = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape, chunks=(128, 128), dtype="u1")
    stored[:] = image
    expected = predict(model, image, config)
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="w", shape=image.shape, chunks=(256, 256), dtype="u2")
    predict(model, zarr.open_array(str(tmp_path / "in.zarr"), mode="r"), config, out=out)
    np.testing.assert_array_equal(out[:], expected)
    # The command line reads a zarr folder lazily and writes a zarr label image as it goes.
    saved = save_model(tmp_path / "m.safetensors", model, config)
    folder = tmp_path / "images"
    folder.mkdir()
    (tmp_path / "in.zarr").rename(folder / "big.zarr")
    tifffile.imwrite(folder / "small.tif", image[:100, :100])
    assert main(["predict", "--model", str(saved), "--images", str(folder), "--out", str(tmp_path / "o")]) == 0
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o" / "big.zarr"), mode="r")[:], expected)
    assert (tmp_path / "o" / "small.tif").is_file()


def test_test_time_augmentation_is_flip_invariant():
    model, config = _model(test_time_augmentation=True)
    image = np.random.default_rng(1).integers(0, 255, (96, 128), dtype=np.uint8)
    from napari_mia.core.infer import frame_probabilities, run

    probabilities = run(frame_probabilities(model, image[None], config, "cpu"))
    flipped = run(frame_probabilities(model, image[None, :, ::-1].copy(), config, "cpu"))
    np.testing.assert_allclose(probabilities, flipped[:, :, ::-1], atol=1e-5)


def test_measurements_match_hand_computed_objects():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:6, 2:6] = 1  # one 4x4 object of class 1
    labels[10:12, 10:15] = 2  # one 2x5 object of class 2
    labels[15:17, 2:4] = 1  # a second class-1 object
    image = np.zeros((20, 20), np.float32)
    image[2:6, 2:6] = 10
    objects, class_of = objects_of_classes(labels)
    rows = measure_objects(objects, image, ["background", "round", "long"], class_of)
    assert sorted((r["class"], r["area"]) for r in rows) == [("long", 10), ("round", 4), ("round", 16)]
    square = next(r for r in rows if r["area"] == 16)
    assert (square["centroid_y"], square["centroid_x"], square["mean_intensity"]) == (3.5, 3.5, 10.0)
    assert square["perimeter"] > 0


def test_foreign_bioimageio_package_is_refused_with_a_clear_message(tmp_path):
    import zipfile

    from napari_mia.core.bioimageio import load_bioimageio
    from napari_mia.core.export import ExportError

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as package:
        package.writestr("rdf.yaml", "type: model\n")
    with pytest.raises(ExportError, match="only packages exported by napari-mia"):
        load_bioimageio(tmp_path / "other.zip")


def test_exporting_a_model_does_not_move_it_or_change_its_mode(tmp_path):
    """The dock's model may be on a GPU and training (Stop, then Resume): export works on a copy."""
    from napari_mia.core.export import export
    from napari_mia.core.models import build_model
    from tests.configs import fixed_config

    config = fixed_config(patch_size=64, decoder_channels=(16, 16, 16, 16, 16))
    model = build_model(config).train()
    parameters = list(model.parameters())
    export(model, config, "torchscript", tmp_path / "m.pt")
    assert model.training and all(a is b for a, b in zip(model.parameters(), parameters))


FULL_DISK = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full, a disk always full")


@pytest.mark.parametrize("file_format", ["onnx", "torchscript"])
@FULL_DISK
def test_a_full_disk_is_an_error_the_dock_reports_not_an_abort(file_format):
    """PyTorch's TorchScript writer aborted the whole process (napari and the user's unsaved work with it)
    when the disk was full; the export must raise an OSError that the dock and the CLI show."""
    model, config = _model()
    with pytest.raises(OSError) as raised:
        export(model, config, file_format, "/dev/full")
    assert raised.value.errno == errno.ENOSPC


@FULL_DISK
def test_the_command_line_says_which_file_a_full_disk_stopped(tmp_path, capsys):
    model, config = _model()
    save_model(tmp_path / "m.safetensors", model, config)
    assert main(["export", "--model", str(tmp_path / "m.safetensors"), "--format", "torchscript",
                 "--out", "/dev/full"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "No space left on device" in message and "/dev/full" in message
