"""Segmentation metrics from a confusion matrix, per class, none skipped (MIA drops the last class)."""

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
    for name in ("foreground_iou", "mean_iou"):
        if name in metrics:
            return name
    return next(iter(metrics), None)
