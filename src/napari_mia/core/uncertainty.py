"""How sure the model is of a prediction, from its own class probabilities (no extra forward pass).

- **Per pixel**: the entropy of the class probabilities divided by its largest possible value,
  ``-sum_k p_k log p_k / log K``: 0 where one class holds all the probability, 1 where all K classes are
  equally likely. A sigmoid heatmap channel (detection) counts as two classes, p and 1 - p, and a pixel
  takes its most uncertain channel.
- **Per object**: confidence = 1 - the mean pixel uncertainty over the object's pixels.
- **Per image**: the mean pixel uncertainty over the image: the share of its pixels the model is unsure
  of, weighted by how unsure; or, per object, the mean of 1 - confidence over the image's objects.

With test-time augmentation the probabilities are the mean over the flips, so flips that disagree make
the entropy higher too.
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-7  # 0 log 0 is 0


def pixel_uncertainty(probabilities: np.ndarray, activation: str = "softmax") -> np.ndarray:
    """Normalised entropy (H, W) in [0, 1] of ``(K, H, W)`` class probabilities ("softmax") or of K
    independent heatmaps ("sigmoid")."""
    p = np.clip(np.asarray(probabilities, np.float32), _TINY, 1.0)
    if activation == "sigmoid":
        q = np.clip(1.0 - p, _TINY, 1.0)
        return ((-(p * np.log(p) + q * np.log(q))) / np.log(2.0)).max(axis=0)
    classes = p.shape[0]
    if classes < 2:
        return np.zeros(p.shape[1:], np.float32)
    return np.clip(-(p * np.log(p)).sum(axis=0) / np.log(classes), 0.0, 1.0)


def object_confidence(labels, uncertainty, rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, confidences)`` of the objects (or classes) of a label image: 1 - their mean pixel
    uncertainty, ids in increasing order, 0 (background) left out. Arrays (numpy, zarr) are read ``rows``
    along their first axis at a time."""
    if tuple(labels.shape) != tuple(uncertainty.shape):
        raise ValueError(f"labels {labels.shape} and uncertainty {uncertainty.shape} do not cover the same pixels")
    counts, sums = np.zeros(1, np.int64), np.zeros(1, np.float64)
    for top in range(0, labels.shape[0], rows):
        flat = np.asarray(labels[top : top + rows]).ravel().astype(np.int64)
        weights = np.asarray(uncertainty[top : top + rows], np.float64).ravel()
        size = max(len(counts), int(flat.max(initial=0)) + 1)
        counts = np.pad(counts, (0, size - len(counts))) + np.bincount(flat, minlength=size)
        sums = np.pad(sums, (0, size - len(sums))) + np.bincount(flat, weights=weights, minlength=size)
    ids = np.flatnonzero(counts)
    ids = ids[ids > 0]
    return ids, (1.0 - sums[ids] / counts[ids]).astype(np.float32)


def image_score(uncertainty, rows: int = 1024) -> float:
    """The image's uncertainty: the mean of its pixels' (0 for an empty image); read like
    :func:`object_confidence`."""
    total = sum(float(np.sum(uncertainty[top : top + rows], dtype=np.float64))
                for top in range(0, uncertainty.shape[0], rows))
    size = int(np.prod(uncertainty.shape))
    return total / size if size else 0.0


def object_score(labels, uncertainty) -> float:
    """The image's uncertainty per object: the mean over its predicted objects of 1 - their confidence, so
    that an image of many sure objects does not outrank one of a few unsure ones (the edges every object
    has make :func:`image_score` grow with the number of objects). 1 when no object was predicted: nothing
    there is sure, and an image where the model finds nothing is one to look at."""
    _, confidences = object_confidence(labels, uncertainty)
    return float(1.0 - confidences.mean()) if len(confidences) else 1.0


def least_confident(labels: np.ndarray, uncertainty: np.ndarray) -> list[tuple[int, float]]:
    """``(id, confidence)`` of every object, least confident first (ties by id)."""
    ids, confidences = object_confidence(labels, uncertainty)
    order = np.lexsort((ids, confidences))
    return [(int(ids[i]), float(confidences[i])) for i in order]
