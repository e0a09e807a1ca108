"""The settings left "auto" (Color / Mono, Down Scaling, Object Size) are chosen from the training data,
written into the run's config, and described in words."""

import numpy as np
import pytest
import tifffile
from skimage.draw import disk

from napari_mia.core import ConfigError, Trainer, TrainingConfig
from napari_mia.core.auto import Example, blob_diameters, is_colour, object_diameters, resolve
from napari_mia.core.cli import main
from napari_mia.core.io import load_model


def _disks(diameter: int, shape=(160, 160), centres=((40, 40), (40, 120), (120, 80))) -> np.ndarray:
    labels = np.zeros(shape, np.uint16)
    for value, centre in enumerate(centres, 1):
        labels[disk(centre, diameter / 2, shape=shape)] = value
    return labels


def _gaussian_blobs(sigma: float, centres, shape=(128, 128)) -> np.ndarray:
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    return sum(np.exp(-((rows - y) ** 2 + (columns - x) ** 2) / (2 * sigma**2)) for y, x in centres)


def test_color_as_soon_as_one_image_is_colour_and_grey_saved_as_rgb_is_not_colour():
    grey = np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)
    grey_rgb, colour = np.stack([grey] * 3, -1), np.stack([grey, grey // 2, grey], -1)
    assert not is_colour(grey_rgb, -1) and is_colour(colour, -1) and not is_colour(grey, None)
    config, (choice,) = resolve(TrainingConfig(downscale=1.0), [Example(grey_rgb, -1), Example(colour, -1),
                                                                Example(grey, None)])
    assert (config.color_mode, config.input_channels) == ("color", 3)
    assert choice.text == "auto (color: 1 of 3 images in colour)"
    config, (choice,) = resolve(TrainingConfig(downscale=1.0), [Example(grey_rgb, -1)])
    assert (config.color_mode, config.input_channels) == ("mono", 1)
    assert choice.text == "auto (mono: no colour among 1 images)"


def test_down_scaling_brings_the_median_object_towards_30_px_and_never_enlarges():
    image = np.zeros((160, 160), np.uint8)
    config, choices = resolve(TrainingConfig(color_mode="mono"), [Example(image, None, labels=_disks(60))])
    assert config.downscale == 0.5 and choices[0].text == "auto (0.5: median object 60 px)"
    config, _ = resolve(TrainingConfig(color_mode="mono"), [Example(image, None, labels=_disks(12))])
    assert config.downscale == 1.0
    config, choices = resolve(TrainingConfig(color_mode="mono"), [Example(image, None, labels=np.zeros_like(image))])
    assert config.downscale == 1.0 and choices[0].reason == "no labelled object to measure"


def test_objects_are_counted_per_connected_region_of_a_class_and_per_id():
    classes = (_disks(20) > 0).astype(np.uint8)  # three separate disks, all class 1
    assert len(object_diameters(classes)) == 3
    ids = np.zeros((60, 400), np.int32)
    for i in range(20):  # 20 touching objects: ids, not classes
        ids[:, 20 * i : 20 * (i + 1)] = i + 1
    np.testing.assert_allclose(object_diameters(ids), 2 * np.sqrt(1200 / np.pi))


def test_object_size_is_the_blob_scale_at_the_points_per_class_then_the_median():
    small, big = [(30, 30), (30, 90), (90, 30)], [(90, 95)]
    image = _gaussian_blobs(3.0, small) + _gaussian_blobs(12.0, big)
    diameters = blob_diameters(image, None, np.array(small + big, float))
    np.testing.assert_allclose(diameters, 2 * np.sqrt(2) * np.array([3.0, 3.0, 3.0, 12.0]))  # on the scale grid
    stack = np.stack([np.zeros_like(image), image])  # points on frame 1 are measured on frame 1
    np.testing.assert_allclose(blob_diameters(stack, None, np.array([[1, 30, 30]], float)), [2 * np.sqrt(2) * 3])
    config = TrainingConfig(application="detection", classes=["small", "big"], color_mode="mono")
    points = np.array(small + big, float)
    config, choices = resolve(config, [Example(image, None, points=points, point_classes=("small",) * 3 + ("big",))])
    assert config.object_size == round(np.median([2 * np.sqrt(2) * 3, 2 * np.sqrt(2) * 12]))
    assert "median of classes big 34, small 8 px" in choices[0].text
    # each class keeps its own size (in the config's class order) for its distance between peaks
    assert config.class_object_sizes == [8.0, 34.0]
    # Down Scaling for detection follows Object Size
    downscale = next(choice for choice in choices if choice.field == "downscale")
    assert config.downscale == 1.0 and downscale.reason == f"object size {config.object_size:g} px"
    one_class = TrainingConfig(application="detection", classes=["small"], color_mode="mono")
    config, _ = resolve(one_class, [Example(image, None, points=np.array(small, float))])
    assert config.class_object_sizes is None  # Object Size is that class's


def test_a_run_refuses_settings_still_auto_with_the_way_out():
    with pytest.raises(ConfigError, match="color_mode, downscale: 'auto' is chosen from the training data"):
        Trainer(TrainingConfig(), [])
    fixed = TrainingConfig(color_mode="mono", downscale=1.0)
    assert resolve(fixed, [Example(np.zeros((8, 8)), None)]) == (fixed, [])


def test_the_plain_cli_says_what_it_chose_and_the_model_keeps_it(tmp_path, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        label = _disks(60)
        tifffile.imwrite(labels / f"im{i}.tif", label)
        tifffile.imwrite(images / f"im{i}.tif", (label > 0) * 150 + rng.integers(0, 50, label.shape, np.uint8))
    model = tmp_path / "m.safetensors"
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(model), "--binarize",
                 "--epochs", "1", "--batch-size", "2", "--patch-size", "64", "--backbone", "resnet18"]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first == ("napari-mia: resnet18 from scratch (Pretrained Net off); Color/Mono auto (mono: no colour "
                     "among 2 images); Down Scaling auto (0.5: median object 60 px)")
    _, config, _ = load_model(model)
    assert (config.color_mode, config.downscale, config.pretrained) == ("mono", 0.5, False)


def test_sparse_labels_are_strokes_not_objects_so_auto_down_scaling_measures_none():
    """Brush strokes over large objects (and background strokes) would read as small objects."""
    from napari_mia.core.auto import Example, resolve
    from tests.configs import fixed_config

    strokes = np.zeros((200, 200), np.uint8)
    strokes[40:52, 20:180] = 2  # a broad foreground stroke across a large object
    strokes[150:162, 10:190] = 1  # a background stroke
    config = fixed_config(sparse_labels=True, downscale="auto")
    resolved, choices = resolve(config, [Example(np.zeros((200, 200), np.uint8), None, labels=strokes)])
    assert resolved.downscale == 1.0 and "sparse" in choices[0].reason


def test_float_labels_get_the_one_line_error_naming_the_file_not_a_traceback(tmp_path, capsys):
    import tifffile

    from napari_mia.core.cli import main

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((64, 64), np.uint8))
    ids = np.zeros((64, 64), np.float32)
    for number in range(20):  # object ids, as float: more values than classes
        ids[number * 3, :] = number + 1
    tifffile.imwrite(tmp_path / "labels" / "a.tif", ids)
    code = main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                 "--out", str(tmp_path / "m.safetensors"), "--epochs", "1"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "labels must be integers" in error and "float32" in error and "a.tif" in error
