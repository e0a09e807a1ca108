"""Scale per image (instance segmentation, Down Scaling auto): training brings every image's objects to the
size the model learns, prediction finds each image's object size in a first pass."""

import numpy as np
import pytest
from skimage.draw import disk

from napari_mia.core import TrainingConfig, infer
from napari_mia.core.auto import Example, median_width, object_widths, resolve
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
    for diameter in (20, 30, 40):
        labels = _discs(diameter)
        (sample,) = make_samples(_image(labels), labels, config)
        assert sample.scale == pytest.approx(20 / median_width(labels), rel=0.01)
        assert sample.image.shape[1:] == sample.truth.shape == sample.labels.shape
        widths.append(median_width(sample.truth))
    assert widths == pytest.approx([20, 20, 20], rel=0.15)
    # Smaller objects than learned: never enlarged, as Down Scaling never is.
    labels = _discs(12)
    (sample,) = make_samples(_image(labels), labels, config)
    assert sample.scale == 1.0 and sample.image.shape[1:] == labels.shape
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
    assert median_width(predicted) == pytest.approx(40, abs=3)
    # Objects already near the learned width: one pass.
    seen_at.clear()
    scales = []
    infer.run(infer.iter_predict(None, _image(_discs(22)), config, scales=scales))
    assert scales == [1.0] and len(seen_at) == 1


def test_a_frame_called_foreground_almost_everywhere_keeps_down_scaling(monkeypatch):
    """A network early in training calls nearly everything foreground: its 'objects' are the frame, so no
    width is measured from them and the frame is not shrunk into one object."""
    config = fixed_config(application="instance", object_diameter=20.0, min_object_size=0)
    seen_at = []
    _thresholding_network(monkeypatch, seen_at)
    labels = np.repeat(np.arange(1, 5, dtype=np.uint16), 48)[None].repeat(192, axis=0)  # four 48-px bands
    labels[:, ::48] = 0  # with thin gaps, as an undertrained network splits a sheet of foreground
    assert np.count_nonzero(labels) > 0.9 * labels.size
    scales = []
    predicted = infer.run(infer.iter_predict(None, _image(labels), config, scales=scales))
    assert scales == [1.0] and seen_at == [(192, 192)] and predicted.max() > 1


def test_the_scale_an_image_was_predicted_at_is_kept_with_the_experiment(monkeypatch, tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "large.tif", _image(_discs(40)))
    _thresholding_network(monkeypatch, [])
    config = fixed_config(application="instance", object_diameter=20.0, min_object_size=0)
    experiment = Experiment.open(tmp_path, annotations="labels")
    predict_entry(None, config, experiment, experiment["large"])
    assert experiment["large"].scale == pytest.approx(0.5, abs=0.02)
    assert Experiment.open(tmp_path, annotations="labels")["large"].scale == experiment["large"].scale


def test_the_command_line_writes_each_images_scale_and_says_their_range(monkeypatch, tmp_path, capsys):
    import tifffile

    from napari_mia.core.cli import main
    from napari_mia.core.io import save_model
    from napari_mia.core.models import build_model
    from tests.configs import TINY_NETWORK

    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "large.tif", _image(_discs(40)))
    tifffile.imwrite(images / "learned.tif", _image(_discs(20)))
    config = fixed_config(application="instance", object_diameter=20.0, min_object_size=0, **TINY_NETWORK)
    save_model(tmp_path / "m.safetensors", build_model(config), config)
    _thresholding_network(monkeypatch, [])
    assert main(["predict", "--model", str(tmp_path / "m.safetensors"), "--images", str(images),
                 "--out", str(tmp_path / "out")]) == 0
    rows = (tmp_path / "out" / "scales.csv").read_text().splitlines()
    assert rows[0] == "image,scale" and rows[2] == "learned,1.000"
    assert rows[1].startswith("large,0.4") or rows[1].startswith("large,0.5")
    said = capsys.readouterr().err.splitlines()[-1]
    assert said.startswith("napari-mia: images seen at scales 0.") and "to 1.00 (median" in said
    assert "20 px the model learned" in said


def test_an_objects_width_holds_when_a_prediction_cuts_it_into_pieces():
    whole = _discs(60, shape=(96, 96), step=96)
    pieces = whole.copy()
    pieces[:48] *= 2  # the top half another object
    pieces[:, :48] += (3 * (pieces[:, :48] > 0)).astype(pieces.dtype)  # each half cut again: four pieces
    assert len(np.unique(pieces)) == 5
    assert median_width(pieces) == median_width(whole) == pytest.approx(60, abs=2)
    widths, areas = object_widths(pieces)
    assert len(widths) == 1 and areas[0] == np.count_nonzero(whole)  # one region: the pieces touch


def test_specks_of_noise_in_a_prediction_do_not_decide_its_width():
    labels = _discs(40)
    specks = labels.copy()
    specks[::6, ::6] = np.where(specks[::6, ::6] == 0, 99, specks[::6, ::6])  # many 1-px objects
    assert median_width(specks) == median_width(labels)
