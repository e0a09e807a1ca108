"""Scale per image (instance segmentation, Down Scaling auto): training brings every image's objects to the
size the model learns, prediction finds each image's object size in a first pass."""

import numpy as np
import pytest
from skimage.draw import disk

from napari_mia.core import TrainingConfig, infer
from napari_mia.core.auto import Example, object_diameters, resolve
from napari_mia.core.data import make_samples
from napari_mia.core.experiment import Experiment, predict_entry
from tests.configs import fixed_config


def _discs(diameter: float, shape=(192, 192), step=48) -> np.ndarray:
    """Object ids: discs of ``diameter`` px on a grid."""
    labels = np.zeros(shape, np.uint16)
    centres = [(y, x) for y in range(step // 2, shape[0], step) for x in range(step // 2, shape[1], step)]
    for value, centre in enumerate(centres, 1):
        labels[disk(centre, diameter / 2, shape=shape)] = value
    return labels


def _image(labels: np.ndarray) -> np.ndarray:
    return ((labels > 0) * 150 + 40).astype(np.uint8)


def test_auto_down_scaling_of_an_instance_set_keeps_its_median_object_width_as_the_size_every_image_reaches():
    image = np.zeros((192, 192), np.uint8)
    examples = [Example(image, None, labels=_discs(12)), Example(image, None, labels=_discs(20)),
                Example(image, None, labels=_discs(40))]
    config, choices = resolve(TrainingConfig(application="instance", color_mode="mono"), examples)
    assert config.downscale == 1.0 and config.object_diameter == pytest.approx(20, abs=0.6)
    (downscale,) = [c for c in choices if c.field == "downscale"]
    assert "each image rescaled to bring its median object to" in downscale.text
    # Large objects: the set's median is brought to 30 px, and every image to that.
    config, _ = resolve(TrainingConfig(application="instance", color_mode="mono"),
                        [Example(image, None, labels=_discs(60, step=64))])
    assert config.downscale == 0.5 and config.object_diameter == pytest.approx(30, abs=0.6)
    # A Down Scaling given, another application, sparse labels: one factor for all images, as before.
    for given in (TrainingConfig(application="instance", color_mode="mono", downscale=1.0),
                  TrainingConfig(color_mode="mono"), TrainingConfig(color_mode="mono", sparse_labels=True)):
        assert resolve(given, examples)[0].object_diameter is None


def test_training_samples_bring_every_images_objects_to_the_learned_width():
    config = fixed_config(application="instance", object_diameter=20.0)
    widths = []
    for diameter in (14, 20, 40):
        labels = _discs(diameter)
        (sample,) = make_samples(_image(labels), labels, config)
        assert sample.scale == pytest.approx(20 / np.median(object_diameters(labels)), rel=0.01)
        assert sample.image.shape[1:] == sample.truth.shape == sample.labels.shape
        widths.append(np.median(object_diameters(sample.truth)))
    assert widths == pytest.approx([20, 20, 20], abs=1.5)
    # Without a learned width (a number given for Down Scaling): every image at Down Scaling.
    labels = _discs(40)
    (sample,) = make_samples(_image(labels), labels, fixed_config(application="instance"))
    assert sample.scale == 1.0 and sample.image.shape[1:] == labels.shape


def _thresholding_network(monkeypatch, seen_at: list):
    """The network as a threshold of the prepared image: interior where bright (the subject here is the
    choice of scale, not what a network learns); records each shape it is given."""
    def probabilities(model, frame, config, device, tile=None, scale=None):
        prepared = infer.prepare_image(frame, config, scale)
        seen_at.append(prepared.shape[1:])
        foreground = (prepared[0] > 0.5).astype(np.float32)
        return np.stack([1 - foreground, foreground, np.zeros_like(foreground)])
        yield  # a generator, as the real one

    monkeypatch.setattr(infer, "frame_probabilities", probabilities)


def test_prediction_finds_each_images_object_size_and_predicts_again_at_the_scale_that_fits(monkeypatch):
    config = fixed_config(application="instance", object_diameter=20.0, min_object_size=0)
    seen_at = []
    _thresholding_network(monkeypatch, seen_at)
    labels = _discs(40)
    scales = []
    predicted = infer.run(infer.iter_predict(None, _image(labels), config, scales=scales))
    assert scales == [pytest.approx(0.5, abs=0.02)]
    assert seen_at == [(192, 192), (96, 96)]  # the first pass at Down Scaling, the second at the image's scale
    assert predicted.shape == labels.shape and predicted.max() == labels.max()
    assert np.median(object_diameters(predicted)) == pytest.approx(40, abs=3)
    # Objects already near the learned width: one pass.
    seen_at.clear()
    scales = []
    infer.run(infer.iter_predict(None, _image(_discs(22)), config, scales=scales))
    assert scales == [1.0] and len(seen_at) == 1


def test_the_scale_an_image_was_predicted_at_is_kept_with_the_experiment(monkeypatch, tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "large.tif", _image(_discs(40)))
    _thresholding_network(monkeypatch, [])
    config = fixed_config(application="instance", object_diameter=20.0, min_object_size=0)
    experiment = Experiment.open(tmp_path, annotations="labels")
    predict_entry(None, config, experiment, experiment["large"])
    assert experiment["large"].scale == pytest.approx(0.5, abs=0.02)
    assert Experiment.open(tmp_path, annotations="labels")["large"].scale == experiment["large"].scale
