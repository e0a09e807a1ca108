"""Metrics per application: pixel classes from a confusion matrix (none skipped; MIA drops the last
class), instances and points matched one to one, image classes."""

from __future__ import annotations

import numpy as np

from .data import IGNORE


def confusion_matrix(prediction: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """``matrix[t, p]`` counts pixels of true class t predicted as p; IGNORE pixels are left out."""
    keep = target != IGNORE
    target = target[keep].astype(np.int64)
    prediction = prediction[keep].astype(np.int64)
    return np.bincount(target * n_classes + prediction, minlength=n_classes**2).reshape(n_classes, n_classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """Intersection over union per class; NaN for a class absent from both prediction and truth."""
    true_positive = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def dice_per_class(matrix: np.ndarray) -> np.ndarray:
    true_positive = np.diag(matrix).astype(np.float64)
    total = matrix.sum(0) + matrix.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * true_positive / total, np.nan)


def segmentation_metrics(matrix: np.ndarray) -> dict[str, float]:
    """Mean IoU/Dice over every class present in truth or prediction, foreground classes and pixel accuracy."""
    iou, dice = iou_per_class(matrix), dice_per_class(matrix)
    metrics = {
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "mean_dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
        "pixel_accuracy": float(np.trace(matrix) / max(1, matrix.sum())),
    }
    if len(iou) == 2:
        metrics["foreground_iou"] = float(iou[1])
    return metrics


def headline_metric(metrics: dict) -> str | None:
    """The metric that early stopping, keep-best and the plots follow."""
    for name in ("ap50", "f1", "accuracy", "foreground_iou", "mean_iou"):
        if name in metrics:
            return name
    return next(iter(metrics), None)


# --- Instances: matched one to one by IoU with the Hungarian algorithm, as StarDist and Cellpose do.

AP_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def instance_iou(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """IoU between every true object (rows) and every predicted object (columns), ids relabelled 1..N."""
    truth_ids, truth_index = np.unique(truth, return_inverse=True)
    predicted_ids, predicted_index = np.unique(prediction, return_inverse=True)
    overlap = np.zeros((len(truth_ids), len(predicted_ids)), np.int64)
    np.add.at(overlap, (truth_index.ravel(), predicted_index.ravel()), 1)
    truth_areas, predicted_areas = overlap.sum(1, keepdims=True), overlap.sum(0, keepdims=True)
    union = truth_areas + predicted_areas - overlap
    iou = overlap / np.maximum(union, 1)
    keep_rows, keep_columns = truth_ids > 0, predicted_ids > 0  # background is not an object
    return iou[keep_rows][:, keep_columns]


def match_counts(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of the best one-to-one matching whose
    pairs overlap by at least ``threshold``."""
    n_true, n_predicted = iou.shape
    if n_true == 0 or n_predicted == 0:
        return 0, n_predicted, n_true
    from scipy.optimize import linear_sum_assignment

    eligible = iou >= threshold
    rows, columns = linear_sum_assignment(-np.where(eligible, iou, 0.0))
    true_positives = int(eligible[rows, columns].sum())
    return true_positives, n_predicted - true_positives, n_true - true_positives


def average_precision(true_positives: int, false_positives: int, false_negatives: int) -> float:
    """StarDist's AP: TP / (TP + FP + FN); 1 when there is nothing to find and nothing was found."""
    total = true_positives + false_positives + false_negatives
    return true_positives / total if total else 1.0


class InstanceScore:
    """Accumulates matches over frames: AP@0.5 and the mean over 0.5:0.95, pooled over all objects."""

    def __init__(self):
        self.counts = np.zeros((len(AP_THRESHOLDS), 3), np.int64)
        self.per_image_ap50: list[float] = []

    def add(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        iou = instance_iou(truth, prediction)
        frame = np.array([match_counts(iou, t) for t in AP_THRESHOLDS])
        self.counts += frame
        self.per_image_ap50.append(average_precision(*frame[0]))

    def metrics(self) -> dict[str, float]:
        ap = [average_precision(*row) for row in self.counts]
        return {"ap50": ap[0], "ap50_95": float(np.mean(ap)),
                "ap50_per_image": float(np.mean(self.per_image_ap50)) if self.per_image_ap50 else float("nan")}


# --- Points: matched one to one within a radius.


def match_points(truth: np.ndarray, prediction: np.ndarray, radius: float) -> tuple[int, int, int]:
    """(TP, FP, FN) for (N, 2) true and predicted positions; pairs farther than ``radius`` never match."""
    truth, prediction = np.reshape(truth, (-1, 2)), np.reshape(prediction, (-1, 2))
    if len(truth) == 0 or len(prediction) == 0:
        return 0, len(prediction), len(truth)
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    distance = cdist(truth, prediction)
    rows, columns = linear_sum_assignment(np.where(distance <= radius, distance, 1e9))
    true_positives = int((distance[rows, columns] <= radius).sum())
    return true_positives, len(prediction) - true_positives, len(truth) - true_positives


def detection_scores(true_positives: int, false_positives: int, false_negatives: int) -> dict[str, float]:
    """Precision, recall and F1; each is 1 when there was nothing to get wrong."""
    found, present = true_positives + false_positives, true_positives + false_negatives
    precision = true_positives / found if found else 1.0
    recall = true_positives / present if present else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


class PointScore:
    """Accumulates point matches per class over frames; matching is within each class."""

    def __init__(self, classes: list[str], radius: float):
        self.classes, self.radius = classes, radius
        self.counts = np.zeros((len(classes), 3), np.int64)

    def add(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        """``truth`` and ``prediction``: (N, 3) y, x, class."""
        truth, prediction = np.reshape(truth, (-1, 3)), np.reshape(prediction, (-1, 3))
        for class_id in range(len(self.classes)):
            self.counts[class_id] += match_points(truth[truth[:, 2] == class_id, :2],
                                                  prediction[prediction[:, 2] == class_id, :2], self.radius)

    def metrics(self) -> dict[str, float]:
        metrics = {f"{k}": v for k, v in detection_scores(*self.counts.sum(0)).items()}
        if len(self.classes) > 1:
            for name, row in zip(self.classes, self.counts):
                metrics[f"f1_{name}"] = detection_scores(*row)["f1"]
        return metrics


# --- Classes of whole images or objects.


def classification_metrics(matrix: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy, macro F1 and per-class precision/recall/F1 from ``matrix[true, predicted]``;
    a class never predicted has precision 0 (not a crash, as in MIA), one never present is left out
    of the mean."""
    true_positive = np.diag(matrix).astype(np.float64)
    predicted, present = matrix.sum(0), matrix.sum(1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, present, out=np.zeros_like(true_positive), where=present > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    metrics = {"accuracy": float(true_positive.sum() / max(1, matrix.sum())),
               "macro_f1": float(f1[present > 0].mean()) if (present > 0).any() else float("nan")}
    for index, name in enumerate(classes):
        metrics[f"precision_{name}"] = float(precision[index])
        metrics[f"recall_{name}"] = float(recall[index])
        metrics[f"f1_{name}"] = float(f1[index])
    return metrics
