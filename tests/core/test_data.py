import numpy as np
import pytest

from napari_mia.core.data import (
    IGNORE,
    DataError,
    PatchDataset,
    Sample,
    frame_weights,
    make_samples,
    normalize,
    split_frames,
    split_train_validation,
)
from tests.configs import fixed_config


def test_split_frames_grey_rgb_and_stack():
    assert [f.shape for f in split_frames(np.zeros((5, 7)))] == [(1, 5, 7)]
    assert [f.shape for f in split_frames(np.zeros((5, 7, 4)), channel_axis=-1)] == [(4, 5, 7)]
    assert [f.shape for f in split_frames(np.zeros((3, 5, 7)))] == [(1, 5, 7)] * 3
    assert [f.shape for f in split_frames(np.zeros((2, 3, 5, 7)), channel_axis=1)] == [(3, 5, 7)] * 2


def test_normalize_maps_percentiles_to_unit_range_for_any_dtype():
    for dtype in (np.uint8, np.uint16, np.float32):
        frame = np.linspace(0, 200, 10_000).reshape(1, 100, 100).astype(dtype)
        out = normalize(frame, (0, 100))
        assert out.dtype == np.float32
        assert out.min() == pytest.approx(0) and out.max() == pytest.approx(1)


def test_nan_images_are_refused():
    with pytest.raises(DataError, match="NaN"):
        normalize(np.full((1, 4, 4), np.nan, np.float32), (1, 99))


def test_rgba_mono_and_color_conversion():
    rgba = np.random.default_rng(0).integers(0, 255, (32, 40, 4), dtype=np.uint8)
    labels = np.zeros((32, 40), np.uint8)
    labels[:4] = 1
    mono = make_samples(rgba, labels, fixed_config(), channel_axis=-1)
    color = make_samples(rgba, labels, fixed_config(color_mode="color"), channel_axis=-1)
    assert mono[0].image.shape == (1, 32, 40)
    assert color[0].image.shape == (3, 32, 40)
    grey_as_color = make_samples(rgba[..., 0], labels, fixed_config(color_mode="color"))
    assert grey_as_color[0].image.shape == (3, 32, 40)


def test_downscaling_resizes_image_and_labels():
    image, labels = np.zeros((100, 60), np.uint8), np.zeros((100, 60), np.uint8)
    labels[:50] = 1
    [sample] = make_samples(image, labels, fixed_config(downscale=0.5))
    assert sample.image.shape == (1, 50, 30) and sample.labels.shape == (50, 30)
    assert set(np.unique(sample.labels)) == {0, 1}


def test_sparse_labels_make_zero_unlabelled_and_drop_empty_frames():
    config = fixed_config(sparse_labels=True)
    stack = np.zeros((3, 16, 16), np.uint8)
    labels = np.zeros((3, 16, 16), np.uint8)
    labels[1, :4] = 1  # background strokes
    labels[1, -4:] = 2  # object strokes
    [sample] = make_samples(stack, labels, config)
    assert sample.labels[0, 0] == 0 and sample.labels[-1, 0] == 1 and sample.labels[8, 0] == IGNORE


def test_label_problems_are_named():
    image = np.zeros((8, 8), np.uint8)
    with pytest.raises(DataError, match="class id 5"):
        make_samples(image, np.full((8, 8), 5, np.uint8), fixed_config())
    with pytest.raises(DataError, match="integers"):
        make_samples(image, np.zeros((8, 8), np.float32), fixed_config())
    with pytest.raises(DataError, match="do not match"):
        make_samples(image, np.zeros((8, 9), np.uint8), fixed_config())


def test_validation_split_is_by_frame_and_seeded():
    samples = [Sample(np.zeros((1, 4, 4), np.float32), np.full((4, 4), i, np.int16)) for i in range(20)]
    train, validation = split_train_validation(samples, 0.25, seed=3)
    assert len(train) == 15 and len(validation) == 5
    again = split_train_validation(samples, 0.25, seed=3)[1]
    assert [v.labels[0, 0] for v in validation] == [v.labels[0, 0] for v in again]


def test_patches_pad_small_frames_with_ignore_and_prefer_objects():
    config = fixed_config(patch_size=64, foreground_sampling=1.0, batch_size=2)
    labels = np.zeros((40, 200), np.int16)
    labels[10:14, 150:154] = 1
    dataset = PatchDataset([Sample(np.zeros((1, 40, 200), np.float32), labels)], config)
    assert len(dataset) == 1 * 4
    for index in range(len(dataset)):
        image, patch_labels = dataset[index]
        assert image.shape == (1, 64, 64) and patch_labels.shape == (64, 64)
        assert (patch_labels[40:] == IGNORE).all()  # padding is never trained as background
        assert (patch_labels == 1).any()  # centred near the object


def test_colour_and_grey_frames_are_drawn_half_the_time_each():
    rng = np.random.default_rng(0)
    grey = [Sample(np.repeat(rng.random((1, 64, 64), np.float32), 3, axis=0), np.zeros((64, 64), np.int16))
            for _ in range(3)]
    colour = Sample(rng.random((3, 32, 32), np.float32), np.zeros((32, 32), np.int16))
    samples = [*grey, colour]
    assert frame_weights(samples, 0.5)[-1] == pytest.approx(1 / 13)  # by area: 32² against 3 × 64²
    balanced = frame_weights(samples, 0.5, colour=np.array([False, False, False, True]))
    assert balanced[-1] == pytest.approx(0.5) and balanced[:3] == pytest.approx([1 / 6] * 3)
    assert frame_weights(grey, 0.5, colour=np.zeros(3, bool)) == pytest.approx([1 / 3] * 3)  # one look: by area
    assert PatchDataset(samples, fixed_config(balance_looks=False)).frame_weights[-1] == pytest.approx(1 / 13)
    balancing = PatchDataset(samples, fixed_config())  # on by default, the looks told from the channels
    assert balancing.frame_weights[-1] == pytest.approx(0.5) and balancing.colour_frames == 1
    grey[0].new = True  # a corrected image still gets its share among the rest
    with_new = frame_weights(samples, 0.5, colour=np.array([False, False, False, True]))
    assert with_new[0] == pytest.approx(0.5) and with_new[-1] == pytest.approx(0.3)  # 0.5 of the old 5/6
