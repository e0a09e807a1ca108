import numpy as np

from napari_mia.core.data import IGNORE
from napari_mia.core.metrics import confusion_matrix, iou_per_class, segmentation_metrics


def test_iou_per_class_matches_hand_computed_values_including_the_last_class():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, IGNORE]])
    prediction = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
    matrix = confusion_matrix(prediction, truth, 3)
    # class 0: tp 1, fp 1 (at 2,2), fn 1 -> 1/3 ; class 1: tp 2, fp 1 -> 2/3 ; class 2: tp 2, fn 1 -> 2/3
    np.testing.assert_allclose(iou_per_class(matrix), [1 / 3, 2 / 3, 2 / 3])
    metrics = segmentation_metrics(matrix)
    assert np.isclose(metrics["mean_iou"], (1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert np.isclose(metrics["pixel_accuracy"], 5 / 7)


def test_absent_class_is_nan_not_zero_and_not_skipped():
    truth = np.array([0, 0, 1, 1])
    prediction = np.array([0, 0, 1, 0])
    iou = iou_per_class(confusion_matrix(prediction, truth, 3))
    assert np.isclose(iou[0], 2 / 3) and np.isclose(iou[1], 1 / 2) and np.isnan(iou[2])
    binary = segmentation_metrics(confusion_matrix(prediction, truth, 2))
    assert np.isclose(binary["foreground_iou"], 0.5)
