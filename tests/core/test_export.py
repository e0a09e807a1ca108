"""Models that travel: ONNX/TorchScript export matched to PyTorch, bioimage.io packages, big images."""

import numpy as np
import pytest
import torch

from napari_mia.core.cli import main
from napari_mia.core.config import TrainingConfig
from napari_mia.core.export import export, read_exported_config
from napari_mia.core.infer import predict
from napari_mia.core.io import save_model
from napari_mia.core.measure import measure_objects, objects_of_classes
from napari_mia.core.models import build_model


def _model(**settings):
    torch.manual_seed(0)
    config = TrainingConfig(patch_size=64, **settings)
    return build_model(config).eval(), config


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_exported_models_match_pytorch_and_carry_the_config(tmp_path, format):
    model, config = _model(classes=["bg", "a", "b"])
    path, difference = export(model, config, format, tmp_path / f"m.{'onnx' if format == 'onnx' else 'pt'}")
    assert difference < 1e-4  # checked on two batches, one of another image size
    assert read_exported_config(path).classes == ["bg", "a", "b"]


def test_classifier_exports_to_onnx(tmp_path):
    model, config = _model(application="classification", classes=["x", "y"])
    _, difference = export(model, config, "onnx", tmp_path / "c.onnx")
    assert difference < 1e-4


def test_bioimageio_package_validates_runs_and_imports_back(tmp_path):
    from napari_mia.core.bioimageio import load_bioimageio, validate_bioimageio

    model, config = _model(application="instance")
    saved = save_model(tmp_path / "m.safetensors", model, config)
    assert main(["export", "--model", str(saved), "--format", "bioimageio", "--out", str(tmp_path / "p.zip")]) == 0
    assert validate_bioimageio(tmp_path / "p.zip") in ("valid-format", "passed")
    from bioimageio.core import test_model

    assert test_model(str(tmp_path / "p.zip"), weight_format="onnx").status == "passed"
    loaded, loaded_config, _ = load_bioimageio(tmp_path / "p.zip")
    assert loaded_config == config
    for mine, theirs in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(mine, theirs)


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
