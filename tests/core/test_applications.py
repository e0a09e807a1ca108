"""Instance segmentation, detection and classification: targets, post-processing, metrics, training."""

import numpy as np
import pytest
import torch

from napari_mia.core.config import ConfigError, TrainingConfig
from napari_mia.core.data import (
    instance_targets,
    make_class_samples,
    make_point_samples,
    make_samples,
    points_heatmaps,
)
from napari_mia.core.infer import iter_predict, iter_predict_points, predict_classes, predict_object_classes, run
from napari_mia.core.losses import heatmap_focal_loss, masked_mse
from napari_mia.core.metrics import (
    InstanceScore,
    PointScore,
    average_precision,
    classification_metrics,
    detection_scores,
    instance_iou,
    match_counts,
    match_points,
)
from napari_mia.core.postprocess import instances_from_probabilities, points_from_heatmaps
from napari_mia.core.train import Trainer
from tests.configs import fixed_config

from ..conftest import instance_blobs


def two_touching_discs(radius=12, shape=(48, 72)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    instances = np.zeros(shape, np.int32)
    left = (yy - 24) ** 2 + (xx - 24) ** 2 <= radius**2
    right = (yy - 24) ** 2 + (xx - 24 - 2 * radius + 2) ** 2 <= radius**2  # overlapping by 2 px: touching
    instances[left] = 1
    instances[right & ~left] = 2
    return instances


def one_hot(targets, n=3, smooth=0.05):
    probabilities = np.full((n, *targets.shape), smooth / (n - 1), np.float32)
    for k in range(n):
        probabilities[k][targets == k] = 1 - smooth
    return probabilities


def test_watershed_splits_two_touching_discs():
    truth = two_touching_discs()
    probabilities = one_hot(instance_targets(truth))
    instances = instances_from_probabilities(probabilities)
    assert instances.max() == 2
    iou = instance_iou(truth, instances)
    assert np.sort(iou.max(axis=1)).tolist() == pytest.approx([1.0, 1.0], abs=0.06)
    # Even from the foreground alone (no boundary class), the distance seeds split them at the waist.
    foreground_only = one_hot((truth > 0).astype(np.int16))
    split = instances_from_probabilities(foreground_only)
    assert split.max() == 2 and instance_iou(truth, split).max(axis=1).min() > 0.9
    # One disc stays one object: no over-splitting.
    assert instances_from_probabilities(one_hot(instance_targets((truth == 1).astype(np.int32)))).max() == 1


def test_unseeded_small_objects_survive_and_min_size_drops_them():
    probabilities = one_hot(np.zeros((20, 20), np.int16))
    probabilities[:, 5:7, 5:7] = [[[0.1]], [[0.2]], [[0.7]]]  # boundary only: no interior seed
    assert instances_from_probabilities(probabilities).max() == 1
    assert instances_from_probabilities(probabilities, min_size=5).max() == 0


def test_instance_targets_mark_inner_rims():
    truth = two_touching_discs()
    targets = instance_targets(truth)
    assert set(np.unique(targets)) == {0, 1, 2}
    assert (targets[truth == 0] == 0).all()
    assert targets[24, 24] == 1 and targets[24, 12] == 2  # centre interior, left edge boundary


def test_instance_targets_widen_the_boundary_where_objects_touch():
    truth = np.zeros((12, 20), np.int32)
    truth[2:10, 2:10], truth[2:10, 10:18] = 1, 2  # two squares sharing an edge at column 9/10
    targets = instance_targets(truth)
    assert (targets[5, 8:12] == 2).all()  # 2 px on each side of the contact
    assert targets[5, 7] == 1 and targets[5, 12] == 1
    assert targets[5, 2] == 2 and targets[5, 3] == 1  # away from the contact: the 1-px rim
    alone = instance_targets((truth == 1).astype(np.int32))
    assert alone[5, 8] == 1 and alone[5, 9] == 2  # nothing touches: the 1-px rim


def test_instance_metrics_match_hand_computed_cases():
    truth = np.zeros((10, 10), np.int32)
    truth[0:4, 0:4] = 1  # 16 px
    truth[6:10, 6:10] = 2  # 16 px
    prediction = np.zeros_like(truth)
    prediction[0:4, 0:3] = 5  # 12 px inside object 1: IoU 12/16
    prediction[0:2, 6:8] = 7  # overlaps nothing
    iou = instance_iou(truth, prediction)
    assert iou.shape == (2, 2)
    assert iou[0, 0] == pytest.approx(0.75) and iou[1].max() == 0
    assert match_counts(iou, 0.5) == (1, 1, 1)
    assert match_counts(iou, 0.8) == (0, 2, 2)
    assert average_precision(1, 1, 1) == pytest.approx(1 / 3)
    assert match_counts(instance_iou(truth, np.zeros_like(truth)), 0.5) == (0, 0, 2)  # empty prediction
    assert match_counts(instance_iou(np.zeros_like(truth), prediction), 0.5) == (0, 2, 0)  # empty truth
    score = InstanceScore()
    score.add(np.zeros_like(truth), np.zeros_like(truth))
    assert score.metrics()["ap50"] == 1.0  # nothing to find, nothing found


def test_hungarian_matching_beats_greedy():
    # Prediction A overlaps truths 1 and 2; B only truth 1. Greedy on A-1 would lose a match.
    iou = np.array([[0.7, 0.6], [0.65, 0.0]])
    assert match_counts(iou, 0.5) == (2, 0, 0)


def test_point_and_classification_metrics_match_hand_computed_cases():
    truth = np.array([[0, 0], [10, 10], [50, 50]], float)
    prediction = np.array([[1, 1], [10, 14], [30, 30], [90, 90]], float)
    assert match_points(truth, prediction, radius=5) == (2, 2, 1)
    assert match_points(truth, np.zeros((0, 2)), 5) == (0, 0, 3)
    assert match_points(np.zeros((0, 2)), prediction, 5) == (0, 4, 0)
    assert detection_scores(2, 2, 1) == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7})
    assert detection_scores(0, 0, 0)["f1"] == 1.0
    score = PointScore(["a", "b"], radius=5)
    score.add(np.array([[0, 0, 0], [10, 10, 1]]), np.array([[0, 1, 1], [10, 10, 1]]))  # class a missed
    assert score.metrics()["f1_b"] == pytest.approx(2 / 3) and score.metrics()["f1_a"] == 0
    matrix = np.array([[3, 1, 0], [0, 0, 0], [1, 0, 0]])  # class 1 absent, class 2 never predicted
    metrics = classification_metrics(matrix, ["r", "w", "p"])
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["precision_r"] == pytest.approx(3 / 4) and metrics["recall_r"] == pytest.approx(3 / 4)
    assert metrics["precision_p"] == 0 and metrics["f1_p"] == 0
    assert metrics["macro_f1"] == pytest.approx((0.75 + 0) / 2)  # absent class 1 left out of the mean


def test_per_class_thresholds_are_calibrated_on_validation_frames():
    from napari_mia.core.postprocess import calibrate_peak_thresholds

    points = np.array([[10, 10, 0], [30, 30, 1], [50, 12, 1]], float)
    heatmaps = points_heatmaps(points, (64, 64), 2, sigma=2)
    heatmaps[0] *= 0.12  # class 0 learned weak peaks: only a low threshold finds it
    heatmaps[1, 40:43, 50:53] = 0.45  # a false class-1 blob that a low threshold would keep
    config = fixed_config(application="detection", classes=["a", "b"], object_size=6)
    low, high = calibrate_peak_thresholds([heatmaps], [points], config)
    assert low <= 0.1 and 0.45 < high < 0.95
    elsewhere = np.array([[10, 40, 0], [30, 30, 1], [50, 12, 1]], float)  # class 0 where it has no peak
    assert calibrate_peak_thresholds([heatmaps], [elsewhere], config)[0] == 0.05  # weak peaks shown, to correct
    assert calibrate_peak_thresholds([heatmaps], [points[1:]], config)[0] == config.peak_threshold  # none to judge


def test_a_threshold_chosen_on_few_frames_does_not_over_count_new_images():
    """One validation frame finds its objects at any threshold up to their peak: the chosen one is the
    middle of that range, not its low end, so weak specks on a new image are not counted as objects."""
    from napari_mia.core.postprocess import calibrate_peak_thresholds, config_points

    config = fixed_config(application="detection", classes=["cell"], object_size=6)
    objects = np.array([[10, 10, 0], [40, 40, 0]], float)
    (threshold,) = calibrate_peak_thresholds([0.8 * points_heatmaps(objects, (64, 64), 1, sigma=2)], [objects], config)
    assert 0.3 < threshold < 0.6
    new_image = 0.8 * points_heatmaps(objects, (64, 64), 1, sigma=2)
    new_image += 0.15 * points_heatmaps(np.array([[20, 50, 0], [55, 15, 0], [50, 50, 0]], float), (64, 64), 1, 2)
    positions, _, _ = config_points(new_image, config.replace(peak_thresholds=[threshold]))
    assert len(positions) == 2


def test_from_ten_validation_frames_the_threshold_gives_them_their_true_count():
    """Where weak objects and false peaks are mixed, the best F1 on the validation frames keeps a false peak
    to find one more object and over-counts; from ten frames on the threshold keeps as many peaks as the
    frames hold objects."""
    from napari_mia.core.postprocess import COUNTED_THRESHOLD_FRAMES, calibrate_peak_thresholds

    config = fixed_config(application="detection", classes=["cell"], object_size=6)
    peaks = {(12, 12): 0.8, (12, 44): 0.8, (12, 76): 0.8, (44, 12): 0.8,  # objects, then false peaks
             (44, 44): 0.3, (44, 76): 0.2, (76, 12): 0.35, (76, 44): 0.15}
    frame = sum(height * points_heatmaps(np.array([[y, x, 0]], float), (96, 96), 1, sigma=2)
                for (y, x), height in peaks.items())
    objects = np.array([[y, x, 0] for y, x in list(peaks)[:6]], float)
    frames, truths = [frame] * COUNTED_THRESHOLD_FRAMES, [objects] * COUNTED_THRESHOLD_FRAMES

    def points_per_frame(threshold: float) -> int:
        return len(points_from_heatmaps(frame, threshold, 3)[0])

    (counted,) = calibrate_peak_thresholds(frames, truths, config)
    (by_f1,) = calibrate_peak_thresholds(frames, truths, config, counted_from=COUNTED_THRESHOLD_FRAMES + 1)
    assert points_per_frame(counted) == len(objects)
    assert points_per_frame(by_f1) == len(objects) + 1  # six objects found, one false peak kept
    more_than_found = [np.vstack([objects] * 2)] * COUNTED_THRESHOLD_FRAMES
    assert calibrate_peak_thresholds(frames, more_than_found, config) == [0.05]  # every peak, down to the lowest


def test_weak_peaks_are_counted_by_their_mass_measured_on_the_labelled_frames():
    """A model trained on a handful of images learns weak peaks that no threshold chosen on one frame
    counts right; the mass of one object on the labelled frames does: a new image gets one point per
    object, and an empty one none."""
    from napari_mia.core.postprocess import calibrate_mass_per_object, config_points, counting_rule

    def weak(points, shape=(64, 64)):
        return 0.01 + 0.2 * points_heatmaps(np.asarray(points, float), shape, 2, sigma=2)

    labelled = np.array([[10, 10, 0], [40, 40, 0], [20, 50, 0]], float)  # no object of class 1 labelled
    config = fixed_config(application="detection", classes=["cell", "other"], object_size=6)
    mass_per_object = calibrate_mass_per_object([weak(labelled)], [labelled], config.n_classes)
    assert mass_per_object[0] > 0 and mass_per_object[1] == 0
    counted = config.replace(mass_per_object=mass_per_object, peak_thresholds=[0.3, 0.3], threshold_frames=2)
    new_objects = np.array([[10, 50, 0], [30, 30, 0], [50, 10, 0], [55, 55, 0], [12, 25, 0]], float)
    positions, classes, _ = config_points(weak(new_objects, (72, 72)), counted)
    assert len(positions) == 5 and match_points(new_objects[:, :2], positions, radius=2)[0] == 5
    assert not (classes == 1).any()  # class 1's weak peaks stay under its threshold, as before
    assert len(config_points(np.full((2, 64, 64), 0.01, np.float32), counted)[0]) == 0
    # thresholds chosen on mass_below_frames validation frames (10) or more decide instead
    assert len(config_points(weak(new_objects, (72, 72)), counted.replace(threshold_frames=10))[0]) == 0
    # and the command line and the dock say which rule counts
    assert counting_rule(counted).startswith(
        "points counted by each class's heatmap mass (2 validation frames to choose")
    assert "(1 validation frame to choose" in counting_rule(counted.replace(threshold_frames=1))
    by_thresholds = counted.replace(threshold_frames=1, mass_below_frames=0)
    assert counting_rule(by_thresholds).endswith("(chosen on 1 validation frame)")
    assert counting_rule(counted.replace(threshold_frames=10)) == (
        "points above the peak thresholds cell 0.30, other 0.30 (chosen on 10 validation frames)")


def test_the_default_seed_height_keeps_a_waisted_nucleus_whole_and_travels_in_the_config():
    """A nucleus with a shallow waist holds two maxima of the distance less than a pixel apart in height: the
    default seed height (1 px) keeps it whole, 0.5 px split it; two nuclei that only touch stay two."""
    from napari_mia.core.postprocess import config_instances

    yy, xx = np.mgrid[:64, :96]
    waisted = (np.hypot(yy - 32, xx - 40) < 16) | (np.hypot(yy - 32, xx - 57) < 13)
    probabilities = np.stack([1 - waisted, waisted, np.zeros_like(waisted)]).astype(np.float32)
    config = fixed_config(application="instance", min_object_size=0)
    assert config.seed_height == 1.0 and config_instances(probabilities, config).max() == 1
    assert config_instances(probabilities, config.replace(seed_height=0.5)).max() == 2
    touching = (np.hypot(yy - 32, xx - 30) < 12) | (np.hypot(yy - 32, xx - 53) < 12)
    probabilities = np.stack([1 - touching, touching, np.zeros_like(touching)]).astype(np.float32)
    assert config_instances(probabilities, config).max() == 2
    assert TrainingConfig.from_dict(config.replace(seed_height=2.0).to_dict()).seed_height == 2.0  # saved models
    with pytest.raises(ConfigError, match="seed_height"):
        config.replace(seed_height=0)


def test_each_class_keeps_its_own_distance_between_peaks():
    """A white cell five times a platelet's size yields one point for its two bumps; two touching platelets
    stay two."""
    from napari_mia.core.postprocess import config_points, peak_distances

    heatmaps = np.zeros((2, 80, 80), np.float32)
    heatmaps[0] = points_heatmaps(np.array([[20, 20, 0], [20, 27, 0]], float), (80, 80), 1, sigma=1.5)[0]
    heatmaps[1] = points_heatmaps(np.array([[50, 40, 0], [50, 56, 0]], float), (80, 80), 1, sigma=3)[0]
    heatmaps[1, 50, 56] = 0.9  # the weaker bump of the white cell
    config = fixed_config(application="detection", classes=["platelet", "white cell"], object_size=20,
                          class_object_sizes=[6, 40])
    assert peak_distances(config).tolist() == [3.0, 20.0]
    positions, classes, _ = config_points(heatmaps, config)
    assert sorted(classes.tolist()) == [0, 0, 1] and positions[classes == 1].tolist() == [[50, 40]]
    one_size = config.replace(class_object_sizes=None)  # Object Size 20 for both: the platelets merge
    positions, classes, _ = config_points(heatmaps, one_size)
    assert sorted(classes.tolist()) == [0, 1, 1]


def test_heatmaps_peak_at_points_and_peaks_come_back():
    points = np.array([[10, 12, 0], [30, 40, 1], [31, 5, 1]], float)
    heatmaps = points_heatmaps(points, (48, 64), 2, sigma=2)
    assert heatmaps.shape == (2, 48, 64)
    assert heatmaps[0, 10, 12] == 1 and heatmaps[1, 30, 40] == 1 and heatmaps[0, 30, 40] < 1e-6
    positions, classes, scores = points_from_heatmaps(heatmaps, threshold=0.5, min_distance=3)
    found = sorted(zip(positions[:, 0], positions[:, 1], classes))
    assert found == [(10, 12, 0), (30, 40, 1), (31, 5, 1)]
    assert (scores == 1).all()


def test_point_samples_use_stack_coordinates_and_down_scaling():
    stack = np.zeros((2, 64, 64), np.uint8)
    stack[1, 20:30, 30:40] = 200
    config = fixed_config(application="detection", classes=["cell"], downscale=0.5, object_size=12)
    samples = make_point_samples(stack, np.array([[1, 25, 35], [7, 5, 5]]), None, config)  # frame 7 is outside
    assert len(samples) == 2 and len(samples[0].truth) == 0
    assert samples[1].truth.tolist() == [[12.5, 17.5, 0]]
    assert samples[1].labels.shape == (1, 32, 32) and samples[1].labels.max() > 0.9


def test_heatmap_losses_on_known_input():
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 0, 0] = 1.0
    target[0, 0, 1, 1] = -1  # ignored
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    # peak: -log(.5) * .5^2; two negatives with target 0: -log(.5) * .5^2 each; one peak to normalise by
    assert heatmap_focal_loss(logits, target).item() == pytest.approx(3 * np.log(2) * 0.25, rel=1e-4)
    assert masked_mse(logits, target).item() == pytest.approx((0.25 + 0.25 + 0.25) / 3)


def test_config_defaults_follow_the_application():
    assert fixed_config(application="instance").classes == ["background", "object"]
    assert fixed_config(application="detection").loss == "heatmap_focal"
    classification = fixed_config(application="classification")
    assert classification.architecture == "Standard" and classification.loss == "cross_entropy"
    assert fixed_config(application="instance").n_outputs == 3
    with pytest.raises(ConfigError, match="architecture"):
        fixed_config(application="classification", architecture="Unet")
    with pytest.raises(ConfigError, match="loss"):
        fixed_config(application="detection", loss="dice")
    with pytest.raises(ConfigError, match="instance"):
        fixed_config(application="instance", classes=["background", "a", "b"])
    restored = TrainingConfig.from_dict(fixed_config(application="detection", object_size=30).to_dict())
    assert restored.application == "detection" and restored.object_size == 30


def _train(config, samples):
    trainer = Trainer(config, samples, samples)
    events = list(trainer.run())
    return trainer, events


def test_instance_training_predicts_unique_ids_per_object():
    image, truth, _ = instance_blobs((96, 96), n=6, seed=3)
    config = fixed_config(application="instance", epochs=12, batch_size=8, patch_size=64, seed=0)
    trainer, _ = _train(config, make_samples(image, truth, config))
    assert {"ap50", "ap50_95", "foreground_iou"} <= set(trainer.history[-1].val_metrics)
    stack = np.stack([image, image])
    instances = run(iter_predict(trainer.model, stack, config))
    assert instances.shape == stack.shape and instances.dtype == np.uint32
    first, second = set(np.unique(instances[0])) - {0}, set(np.unique(instances[1])) - {0}
    assert first and not first & second  # ids are unique across the frames of a stack
    assert trainer.history[-1].val_metrics["foreground_iou"] > 0.5


def test_detection_training_finds_points():
    image, _, centres = instance_blobs((96, 96), n=6, seed=3)
    config = fixed_config(application="detection", classes=["cell"], epochs=40, batch_size=8, patch_size=64,
                            object_size=12)
    trainer, _ = _train(config, make_point_samples(image, centres, None, config))
    assert {"precision", "recall", "f1"} <= set(trainer.history[-1].val_metrics)
    assert len(config.peak_thresholds) == 1  # chosen on the validation frames when training ended
    assert config.mass_per_object[0] > 0  # measured on the labelled frames when training ended
    assert config.threshold_frames == 1  # the validation frames they were chosen on
    points, classes, scores = run(iter_predict_points(trainer.model, image, config))
    assert points.shape[1] == 2 and len(points) == len(classes) == len(scores) > 0
    assert match_points(centres, points, radius=6)[0] >= 3  # most discs found near their centres


def test_classification_training_and_object_classes():
    sizes = [4, 10] * 6
    stack = np.stack([instance_blobs((64, 64), n=3, radius=r, seed=i)[0] for i, r in enumerate(sizes)])
    config = fixed_config(application="classification", classes=["small", "big"], epochs=10, batch_size=4,
                            patch_size=64)
    trainer, _ = _train(config, make_class_samples(stack, [0, 1] * 6, config))
    assert {"accuracy", "macro_f1", "f1_small", "f1_big"} <= set(trainer.history[-1].val_metrics)
    classes, scores = predict_classes(trainer.model, stack, config)
    assert classes.shape == (12,) and ((0 <= scores) & (scores <= 1)).all()
    image, instances, _ = instance_blobs((96, 96), n=4, radius=8, seed=1)
    ids, object_classes, object_scores = predict_object_classes(trainer.model, image, instances, config)
    assert sorted(ids.tolist()) == [1, 2, 3, 4] and len(object_classes) == 4


def test_detection_heatmaps_start_low():
    from napari_mia.core.models import build_model

    model = build_model(fixed_config(application="detection", classes=["a", "b"])).eval()
    with torch.no_grad():
        heatmaps = torch.sigmoid(model(torch.zeros(1, 1, 64, 64)))
    assert heatmaps.shape == (1, 2, 64, 64) and float(heatmaps.mean()) < 0.05
