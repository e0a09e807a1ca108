"""Each Settings/Augmentations option changes what training does."""

import math

import numpy as np
import pytest
import torch

from napari_mia.core import EpochEnd, Sample, Trainer, make_samples
from napari_mia.core.augment import build_train_transform, geometric_transforms, preview_patches, stain_jitter
from napari_mia.core.config import Augmentations
from napari_mia.core.data import IGNORE, PatchDataset
from napari_mia.core.events import Preview, TrainingDone
from napari_mia.core.losses import build_loss, class_weights
from tests.configs import fixed_config

from ..conftest import blobs


def test_auto_class_weights_are_inverse_frequency_with_mean_one():
    labels = np.array([[0, 0, 0, 1], [0, 0, 0, IGNORE]], np.int16)  # 6 background, 1 foreground
    sample = Sample(np.zeros((1, 2, 4), np.float32), labels)
    weights = class_weights(fixed_config(class_weighting="auto"), [sample])
    # inverse frequency 7/6 and 7/1, scaled to mean 1
    assert weights == pytest.approx([2 * (7 / 6) / (7 / 6 + 7), 2 * 7 / (7 / 6 + 7)])
    manual = fixed_config(class_weighting="manual", class_weights=[1, 3])
    assert class_weights(manual, [sample]) == pytest.approx([0.5, 1.5])
    assert class_weights(fixed_config(), [sample]) is None


def test_instance_class_weights_weigh_background_and_object_over_the_three_maps():
    targets = np.array([[0, 0, 0, 2], [0, 0, 1, IGNORE]], np.int16)  # 5 background, 2 object (rim + interior)
    sample = Sample(np.zeros((1, 2, 4), np.float32), targets)
    auto = class_weights(fixed_config(application="instance", class_weighting="auto"), [sample])
    background, obj = 2 * (7 / 5) / (7 / 5 + 7 / 2), 2 * (7 / 2) / (7 / 5 + 7 / 2)
    assert auto == pytest.approx([background, obj, obj])
    manual = fixed_config(application="instance", class_weighting="manual", class_weights=[1, 3])
    assert class_weights(manual, [sample]) == pytest.approx([0.5, 1.5, 1.5])
    image, labels = blobs(shape=(64, 64), n=4)
    config = manual.replace(epochs=1, batch_size=2, patch_size=32, validation_fraction=0)
    events = list(Trainer(config, make_samples(image, labels, config)).run())  # three maps, three weights
    assert isinstance(events[-1], TrainingDone)


def test_cross_entropy_value_and_class_weights_on_a_known_input():
    logits = torch.tensor([[[[2.0]], [[0.0]]], [[[0.0]], [[1.0]]]])  # two pixels, two classes
    target = torch.tensor([[[0]], [[1]]])
    p0 = math.exp(2) / (math.exp(2) + 1)
    p1 = math.exp(1) / (math.exp(1) + 1)
    config = fixed_config(loss="cross_entropy")
    assert float(build_loss(config)(logits, target)) == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-5)
    weighted = float(build_loss(config, [1.0, 3.0])(logits, target))
    assert weighted == pytest.approx(-(math.log(p0) + 3 * math.log(p1)) / 4, rel=1e-5)
    ignored = torch.tensor([[[0]], [[IGNORE]]])
    assert float(build_loss(config)(logits, ignored)) == pytest.approx(-math.log(p0), rel=1e-5)


@pytest.mark.parametrize("loss", ["ce_dice", "dice", "focal", "jaccard", "lovasz"])
def test_every_loss_is_finite_ignores_unlabelled_and_is_lower_for_a_better_prediction(loss):
    target = torch.tensor([[[0, 1], [1, IGNORE]]])
    good = torch.tensor([[[[5.0, -5], [-5, 0]], [[-5.0, 5], [5, 0]]]])
    function = build_loss(fixed_config(loss=loss))
    assert float(function(good, target)) < float(function(-good, target))
    assert np.isfinite(float(function(good, target)))


def _asymmetric_pair():
    labels = np.zeros((64, 64), np.int16)
    labels[8:40, 10:18] = 1  # an "L": no flip or turn maps it onto itself
    labels[32:40, 10:50] = 1
    return labels.astype(np.float32)[None], labels


@pytest.mark.parametrize("name", ["flip_horizontal", "flip_vertical", "rotate90", "affine", "elastic"])
def test_geometric_augmentations_keep_image_and_labels_aligned(name):
    only = {f: False for f in ("flip_horizontal", "flip_vertical", "rotate90")}
    if name in only:
        only[name] = True
    aug = Augmentations(**only, brightness_contrast_probability=0.0,
                        affine_probability=1.0 if name == "affine" else 0.0,
                        elastic_probability=1.0 if name == "elastic" else 0.0)
    assert len(geometric_transforms(aug)) == 1
    transform = build_train_transform(fixed_config(augmentations=aug))
    image, labels = _asymmetric_pair()
    moved = 0
    for _ in range(8):
        out_image, out_labels = transform(image, labels)
        moved += not np.array_equal(out_labels, labels)
        agreement = np.mean((out_image[0] > 0.5) == (out_labels == 1))
        assert agreement > 0.98, agreement
    assert moved  # the transform really ran


def test_intensity_augmentations_leave_labels_alone_and_disabling_turns_all_off():
    aug = Augmentations(flip_horizontal=False, flip_vertical=False, rotate90=False, blur_probability=1.0,
                        noise_probability=1.0, gamma_probability=1.0, brightness_contrast_probability=1.0)
    image, labels = _asymmetric_pair()
    out_image, out_labels = build_train_transform(fixed_config(augmentations=aug))(image, labels)
    np.testing.assert_array_equal(out_labels, labels)
    assert not np.allclose(out_image, image) and np.isfinite(out_image).all()
    assert build_train_transform(fixed_config(augmentations=Augmentations(enabled=False))) is None


def test_stain_jitter_changes_each_stains_amount_and_nothing_else():
    rng = np.random.default_rng(0)
    image = rng.uniform(0.1, 1.0, (3, 16, 16))
    np.testing.assert_allclose(stain_jitter(image, 0.0, rng), image, atol=1e-6)  # no jitter: the image
    from skimage.color import hed_from_rgb

    def stains(rgb):
        return -np.log(np.clip(np.moveaxis(rgb, 0, -1), 1 / 255, None)) @ hed_from_rgb

    jittered = stain_jitter(image, 0.2, rng)
    # Every pixel's stains move by the same scale and shift: a straight line per stain, not noise.
    for before, after in zip(np.moveaxis(stains(image), -1, 0), np.moveaxis(stains(jittered), -1, 0)):
        slope, intercept = np.polyfit(before.ravel(), after.ravel(), 1)
        assert 0.8 <= slope <= 1.2 and abs(intercept) <= 0.2
        np.testing.assert_allclose(after, slope * before + intercept, atol=1e-6)
    assert not np.allclose(jittered, image)


def test_stain_and_inversion_augmentations_change_colour_patches_only_as_asked():
    image, labels = _asymmetric_pair()
    colour = np.repeat(image, 3, axis=0)
    inverted = build_train_transform(fixed_config(augmentations=Augmentations(
        flip_horizontal=False, flip_vertical=False, rotate90=False, brightness_contrast_probability=0.0,
        invert_probability=1.0)))(colour, labels)[0]
    np.testing.assert_allclose(inverted, 1 - colour, atol=1e-6)
    stained = Augmentations(flip_horizontal=False, flip_vertical=False, rotate90=False,
                            brightness_contrast_probability=0.0, stain_probability=1.0)
    out_image, out_labels = build_train_transform(fixed_config(augmentations=stained))(colour, labels)
    assert not np.allclose(out_image, colour) and np.array_equal(out_labels, labels)
    # A one-channel image has no stains to jitter.
    np.testing.assert_array_equal(build_train_transform(fixed_config(augmentations=stained))(image, labels)[0], image)


def test_augmentation_preview_gives_aligned_patches():
    config = fixed_config(patch_size=32)
    dataset = PatchDataset(make_samples(*blobs(), config), config, build_train_transform(config))
    images, labels = preview_patches(dataset, count=5)
    assert images.shape == (5, 1, 32, 32) and labels.shape == (5, 32, 32)


def _samples(config, n=2):
    return [s for seed in range(n) for s in make_samples(*blobs(seed=seed), config)]


def test_early_stopping_and_keep_best_weights(tiny_config, monkeypatch):
    config = tiny_config.replace(epochs=20, early_stopping_patience=2, keep_best=True)
    trainer = Trainer(config, _samples(config), _samples(config, 1))
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    snapshots = []

    def fake_validate():
        snapshots.append(trainer.model.segmentation_head[0].bias.detach().clone())
        return {"loss": 1.0, "foreground_iou": next(scores)}

    monkeypatch.setattr(trainer, "validate", fake_validate)
    events = list(trainer.run())
    done = events[-1]
    assert isinstance(done, TrainingDone) and done.reason == "early stopping"
    assert done.epochs_completed == 4 and done.best_epoch == 1
    torch.testing.assert_close(trainer.model.segmentation_head[0].bias, snapshots[1])


def test_preview_every_n_epochs(tiny_config):
    config = tiny_config.replace(epochs=4, preview_every=2)
    image, _ = blobs()
    events = list(Trainer(config, _samples(config), preview_image=(image, None)).run())
    previews = [e for e in events if isinstance(e, Preview)]
    assert [p.epoch for p in previews] == [1, 3]
    assert previews[0].labels.shape == image.shape
    epoch_ends = [e.epoch for e in events if isinstance(e, EpochEnd)]
    assert epoch_ends == [0, 1, 2, 3]


def test_cpu_mixed_precision_times_both_precisions_and_keeps_the_faster(tiny_config, monkeypatch):
    from napari_mia.core import models
    from napari_mia.core.train import PrecisionChoice

    cpu = torch.device("cpu")
    monkeypatch.setattr(models, "cpu_has_bf16_units", lambda: False)
    assert PrecisionChoice(cpu, mixed_precision=True).next() is False  # no bf16 units: plain fp32, no trials
    monkeypatch.setattr(models, "cpu_has_bf16_units", lambda: True)
    assert PrecisionChoice(cpu, mixed_precision=False).next() is False
    for bf16_seconds, keeps_bf16 in ((0.5, True), (2.0, False)):
        choice = PrecisionChoice(cpu, mixed_precision=True)
        tried = []
        for _ in range(6):  # a warm-up step in each precision, then two timed steps each
            bf16 = choice.next()
            tried.append(bf16)
            choice.record(bf16, bf16_seconds if bf16 else 1.0)
        assert tried == [False, True] * 3
        assert [choice.next() for _ in range(3)] == [keeps_bf16] * 3

    config = tiny_config.replace(epochs=8)
    trainer = Trainer(config, _samples(config))
    autocast_per_step = []
    trainer.model.register_forward_hook(lambda *_: autocast_per_step.append(torch.is_autocast_enabled("cpu")))
    list(trainer.run())
    assert len(autocast_per_step) >= 9 and autocast_per_step[:6] == [False, True] * 3
    assert set(autocast_per_step[6:]) == {trainer.precision.bf16}
    assert trainer.model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
