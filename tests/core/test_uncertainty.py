"""Uncertainty from the model's own probabilities: per pixel, per object, per image (no Qt)."""

import numpy as np
import pytest
import torch

from napari_mia.core.experiment import Experiment, predict_all
from napari_mia.core.infer import predict, predict_with_uncertainty
from napari_mia.core.models import build_model
from napari_mia.core.uncertainty import (
    image_score,
    least_confident,
    object_confidence,
    object_score,
    pixel_uncertainty,
)
from tests.configs import fixed_config

from .test_experiment import TINY, _folder


def _two_classes(p_first: np.ndarray) -> np.ndarray:
    return np.stack([p_first, 1 - p_first]).astype(np.float32)


def test_pixel_uncertainty_is_the_normalised_entropy_and_higher_where_classes_are_closer():
    p = np.array([[1.0, 0.9, 0.7, 0.5]])
    uncertainty = pixel_uncertainty(_two_classes(p))
    expected = [-(q * np.log(q) + (1 - q) * np.log(1 - q)) / np.log(2) if 0 < q < 1 else 0 for q in p[0]]
    np.testing.assert_allclose(uncertainty[0], expected, atol=1e-5)
    assert uncertainty[0, 0] == pytest.approx(0, abs=1e-5) and uncertainty[0, 3] == pytest.approx(1)
    assert np.all(np.diff(uncertainty[0]) > 0)  # the closer the two classes, the higher
    three = np.full((3, 1, 1), 1 / 3, np.float32)
    assert pixel_uncertainty(three)[0, 0] == pytest.approx(1)  # all classes equally likely: 1, whatever K
    heatmap = np.array([[[0.02, 0.5]], [[0.9, 0.01]]], np.float32)  # two sigmoid channels
    sigmoid = pixel_uncertainty(heatmap, "sigmoid")
    binary = lambda q: -(q * np.log2(q) + (1 - q) * np.log2(1 - q))  # noqa: E731
    np.testing.assert_allclose(sigmoid[0], [binary(0.9), 1.0], atol=1e-5)  # the most unsure channel


def test_object_confidence_is_one_minus_the_mean_uncertainty_of_its_pixels():
    labels = np.array([[1, 1, 0, 2], [1, 1, 0, 2], [0, 0, 0, 5]])
    uncertainty = np.array([[0.0, 0.2, 0.9, 0.6], [0.2, 0.4, 0.9, 0.8], [0.5, 0.5, 0.5, 0.1]], np.float32)
    ids, confidence = object_confidence(labels, uncertainty)
    assert ids.tolist() == [1, 2, 5]
    np.testing.assert_allclose(confidence, [1 - 0.2, 1 - 0.7, 1 - 0.1], atol=1e-6)
    assert least_confident(labels, uncertainty) == [(2, pytest.approx(0.3)), (1, pytest.approx(0.8)),
                                                    (5, pytest.approx(0.9))]
    assert image_score(uncertainty) == pytest.approx(uncertainty.mean())
    row_by_row = object_confidence(labels, uncertainty, rows=1)  # how big (zarr) predictions are read
    assert row_by_row[0].tolist() == ids.tolist() and np.allclose(row_by_row[1], confidence)
    assert image_score(uncertainty, rows=1) == pytest.approx(uncertainty.mean())
    with pytest.raises(ValueError, match="same pixels"):
        object_confidence(labels[:2], uncertainty)


def _objects_with_unsure_edges(count: int, inner: float) -> tuple[np.ndarray, np.ndarray]:
    """``count`` 10-px squares on a 96-px image: edges at uncertainty 0.8, insides at ``inner``."""
    labels, uncertainty = np.zeros((96, 96), np.int32), np.zeros((96, 96), np.float32)
    for i in range(count):
        top, left = 12 * (i // 8), 12 * (i % 8)
        labels[top : top + 10, left : left + 10] = i + 1
        uncertainty[top : top + 10, left : left + 10] = 0.8
        uncertainty[top + 2 : top + 8, left + 2 : left + 8] = inner
    return labels, uncertainty


def test_the_per_object_score_ranks_a_few_unsure_objects_above_many_sure_ones():
    crowded, unsure = _objects_with_unsure_edges(40, 0.0), _objects_with_unsure_edges(3, 0.9)
    assert image_score(crowded[1]) > image_score(unsure[1])  # every edge counts: the crowded image wins
    assert object_score(*unsure) > object_score(*crowded)
    assert object_score(*crowded) == pytest.approx(0.8 * 64 / 100)  # 64 of each object's 100 pixels are edge
    assert object_score(np.zeros((8, 8), np.int32), np.zeros((8, 8), np.float32)) == 1.0  # nothing found


def test_prediction_writes_its_uncertainty_from_the_same_probabilities():
    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 4000, (2, 70, 90), dtype=np.uint16)
    for config in (fixed_config(), fixed_config(downscale=0.5), TINY):
        model = build_model(config).eval()
        labels, uncertainty = predict_with_uncertainty(model, image, config)
        np.testing.assert_array_equal(labels, predict(model, image, config))  # the same labels as without it
        assert uncertainty.shape == image.shape and uncertainty.dtype == np.float32
        assert 0 <= uncertainty.min() and uncertainty.max() <= 1 and uncertainty.std() > 0


def test_a_model_is_surer_of_an_image_once_it_learnt_it(tmp_path):
    from napari_mia.core import Trainer

    folder, truth = _folder(tmp_path, names=("a",), shapes=((64, 64),))
    experiment = Experiment.open(folder)
    experiment.save_labels(experiment["a"], truth["a"])
    config = TINY.replace(epochs=30, batch_size=4, patch_size=64, learning_rate=3e-3)
    torch.manual_seed(0)
    trainer = Trainer(config, *experiment.samples(config))
    image, _ = experiment.read_image(experiment["a"])
    before = image_score(predict_with_uncertainty(trainer.model, image, config)[1])
    for _ in trainer.run():
        pass
    after = image_score(predict_with_uncertainty(trainer.model, image, config)[1])
    assert after < before / 2


def test_predict_all_saves_each_images_map_and_score_and_next_goes_to_the_most_uncertain(tmp_path):
    folder, truth = _folder(tmp_path, names=("a", "b", "c", "d"), shapes=((64, 64),) * 4)
    experiment = Experiment.open(folder)
    experiment.save_labels(experiment["a"], truth["a"])
    torch.manual_seed(0)
    events = list(predict_all(build_model(TINY), TINY, experiment, experiment.entries[1:]))
    for event in events:
        entry = experiment[event.name]
        saved = experiment.read_uncertainty(entry)
        np.testing.assert_array_equal(saved, event.uncertainty)
        assert entry.uncertainty == pytest.approx(image_score(saved))
    reopened = Experiment.open(folder)
    scores = {e.name: e.uncertainty for e in reopened}
    assert scores["a"] is None and all(scores[n] == pytest.approx(experiment[n].uncertainty) for n in "bcd")
    most = max("bcd", key=scores.get)
    first = reopened["a"]
    assert reopened.next_entry(first, "most uncertain").name == most
    assert reopened.next_entry(first, "file order").name == "b"
    reopened.accept(reopened[most], truth[most])  # accepted: not where Next sends the user any more
    second = reopened.next_entry(reopened[most], "most uncertain")
    assert second.name == max(set("bcd") - {most}, key=scores.get)
    reopened.save_prediction(reopened["b"], truth["b"])  # a prediction without a map: no stale score
    assert reopened["b"].uncertainty is None and reopened.read_uncertainty(reopened["b"]) is None
    with pytest.raises(ValueError, match="order"):
        reopened.next_entry(first, "random")


def test_predict_uncertainty_writes_the_maps_and_a_table_most_uncertain_first(tmp_path, capsys):
    import csv

    import tifffile
    import zarr

    from napari_mia.core.cli import main
    from napari_mia.core.io import save_model

    folder, _ = _folder(tmp_path, names=("a", "b", "c"), shapes=((64, 64), (64, 80), (80, 64)))
    torch.manual_seed(0)
    model = tmp_path / "m.safetensors"
    save_model(model, build_model(TINY), TINY)
    assert main(["predict", "--model", str(model), "--images", str(folder), "--out", str(tmp_path / "out"),
                 "--uncertainty"]) == 0
    with open(tmp_path / "out" / "uncertainty.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "uncertainty", "objects", "mean_object_confidence", "least_object_confidence"]
    scores = [float(r["uncertainty"]) for r in rows]
    assert sorted(r["image"] for r in rows) == ["a", "b", "c"] and scores == sorted(scores, reverse=True)
    for row in rows:
        labels = tifffile.imread(tmp_path / "out" / f"{row['image']}.tif")
        uncertainty = tifffile.imread(tmp_path / "out" / f"{row['image']}_uncertainty.tif")
        assert uncertainty.shape == labels.shape and uncertainty.dtype == np.float32
        assert float(row["uncertainty"]) == pytest.approx(image_score(uncertainty), abs=1e-4)
        assert int(row["objects"]) == len(np.unique(labels[labels > 0]))
    assert "most uncertain first" in capsys.readouterr().err

    assert main(["predict", "--model", str(model), "--images", str(folder / "a.tif"), "--out", str(tmp_path / "z"),
                 "--uncertainty", "--out-format", "zarr"]) == 0
    on_disk = zarr.open_array(str(tmp_path / "z" / "a_uncertainty.zarr"), mode="r")
    assert on_disk.shape == (64, 64) and on_disk.dtype == np.float32 and float(np.asarray(on_disk).max()) > 0

    detector = TINY.replace(application="detection", classes=["cell"], loss="heatmap_focal")
    save_model(tmp_path / "d.safetensors", build_model(detector), detector)
    assert main(["predict", "--model", str(tmp_path / "d.safetensors"), "--images", str(folder),
                 "--out", str(tmp_path / "d"), "--uncertainty"]) == 2
    assert "--uncertainty maps label images" in capsys.readouterr().err
