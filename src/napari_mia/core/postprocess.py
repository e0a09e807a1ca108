"""From network maps to objects: instance ids by seeded watershed, points by peak finding."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima, remove_small_objects
from skimage.segmentation import watershed

from .config import TrainingConfig
from .metrics import detection_scores, match_points


def instances_from_probabilities(
    probabilities: np.ndarray,
    foreground_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: int = 0,
    seed_height: float = 1.0,
) -> np.ndarray:
    """Object ids from (background, interior, boundary) probabilities.

    One seed per object: maxima (at least ``seed_height`` px above their surroundings) of the smoothed
    distance to the background, kept where the interior is confident. The watershed grows the seeds
    over the foreground along that distance, so touching objects split at their waist and along the
    boundary class. A foreground region that holds no seed (a tiny object) becomes an object of its own.
    Distance seeds split clumps that connected interior regions merge (DSB2018: AP@0.5 0.61 -> 0.72 on
    the same probabilities).
    """
    foreground = probabilities[0] < foreground_threshold
    interior = (probabilities[1] > seed_threshold) & foreground
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(interior), 1.0)
    seeds, count = ndimage.label(h_maxima(distance, seed_height) & interior)
    instances = watershed(-distance, seeds, mask=foreground)
    unseeded, _ = ndimage.label(foreground & (instances == 0))
    instances = np.where(unseeded > 0, unseeded + count, instances)
    if min_size > 1:
        instances = remove_small_objects(instances, max_size=min_size - 1)
    return relabel_sequential(instances)


def relabel_sequential(instances: np.ndarray) -> np.ndarray:
    ids = np.unique(instances)
    ids = ids[ids > 0]
    lookup = np.zeros(int(instances.max()) + 1 if instances.size else 1, np.int32)
    lookup[ids] = np.arange(1, len(ids) + 1)
    return lookup[instances].astype(np.int32)


def config_instances(probabilities: np.ndarray, config: TrainingConfig, scale: float | None = None) -> np.ndarray:
    """:func:`instances_from_probabilities` with the config's thresholds; the minimum object size is
    given in image pixels and scaled to the model's resolution (``scale``: Down Scaling unless given)."""
    min_size = round(config.min_object_size * (config.downscale if scale is None else scale) ** 2)
    return instances_from_probabilities(probabilities, config.foreground_threshold, config.seed_threshold, min_size,
                                        config.seed_height)


def peak_distances(config: TrainingConfig) -> np.ndarray:
    """Per class, the minimum distance between detections in image pixels: half the class's Object Size
    (``class_object_sizes`` when measured per class, else Object Size) unless ``min_peak_distance`` is
    given."""
    if config.min_peak_distance:
        return np.full(config.n_classes, float(config.min_peak_distance))
    sizes = config.class_object_sizes or [config.object_size] * config.n_classes
    return np.maximum(2.0, np.asarray(sizes, np.float64) / 2)


def points_from_heatmaps(
    heatmaps: np.ndarray, threshold=0.3, min_distance=2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of the strongest class at every pixel: (N, 2) y, x; class ids; scores.

    Peaks are found on the maximum over classes, so one object never yields a point per class.
    ``threshold`` and ``min_distance`` are one value or one per class: a peak is kept if it passes its
    class's threshold and lies farther than a stronger kept peak's class distance from it (a white cell
    five times a platelet's size holds no second point where two platelets may touch).
    """
    n_classes = heatmaps.shape[0]
    thresholds = np.broadcast_to(np.asarray(threshold, np.float32), (n_classes,))
    distances = np.broadcast_to(np.maximum(1, np.round(np.asarray(min_distance, np.float64))), (n_classes,))
    strongest = heatmaps.max(axis=0)
    peaks = peak_local_max(strongest, min_distance=int(distances.min()), threshold_abs=float(thresholds.min()),
                           exclude_border=False)
    classes = heatmaps[:, peaks[:, 0], peaks[:, 1]].argmax(axis=0) if len(peaks) else np.zeros(0, np.int64)
    scores = strongest[peaks[:, 0], peaks[:, 1]]
    keep = scores >= thresholds[classes]
    if distances.max() > distances.min():
        keep &= _claimed_by_none(peaks, scores, distances[classes], keep)
    return peaks[keep].astype(np.float64), classes[keep].astype(np.int64), scores[keep].astype(np.float32)


def _claimed_by_none(peaks: np.ndarray, scores: np.ndarray, claims: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Greedy, strongest first: a candidate peak survives unless a stronger surviving one lies within that
    one's claim (its class's distance)."""
    survives = np.zeros(len(peaks), bool)
    kept: list[int] = []
    for index in np.argsort(-scores, kind="stable"):
        if not candidate[index]:
            continue
        if kept:
            gaps = np.hypot(*(peaks[kept] - peaks[index]).T)
            if np.any(gaps < claims[kept]):
                continue
        survives[index] = True
        kept.append(index)
    return survives


def config_points(heatmaps: np.ndarray, config: TrainingConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points at model scale with the config's distances: as many per class as the heatmap's mass holds
    objects (once measured, while the thresholds rest on fewer than ``mass_below_frames`` validation frames),
    else those above the config's thresholds."""
    distances = peak_distances(config) * config.downscale
    thresholds = class_thresholds(config)
    if not counts_by_mass(config):
        return points_from_heatmaps(heatmaps, thresholds, distances)
    positions, classes, scores = points_from_heatmaps(heatmaps, MASS_PEAK_FLOOR, distances)
    expected = np.round(heatmap_masses(heatmaps) / np.maximum(config.mass_per_object, 1e-12)).astype(np.int64)
    keep = np.zeros(len(scores), bool)
    for class_id, mass_per_object in enumerate(config.mass_per_object):
        mine = np.flatnonzero(classes == class_id)
        if mass_per_object > 0:  # its strongest peaks, as many as its mass holds objects
            keep[mine[np.argsort(-scores[mine], kind="stable")[: expected[class_id]]]] = True
        else:  # no labelled object to measure by: its threshold
            keep[mine[scores[mine] >= thresholds[class_id]]] = True
    return positions[keep], classes[keep], scores[keep]


def class_thresholds(config: TrainingConfig) -> np.ndarray:
    return np.broadcast_to(np.asarray(config.peak_thresholds or config.peak_threshold, np.float64), (config.n_classes,))


def counts_by_mass(config: TrainingConfig) -> bool:
    """Whether the heatmap's mass decides how many points an image gets (else the peak thresholds)."""
    return bool(config.mass_per_object) and config.threshold_frames < config.mass_below_frames


def counting_rule(config: TrainingConfig) -> str:
    """How prediction decides how many points an image gets, as the command line and the dock say it."""
    frames = config.threshold_frames
    frames_said = {0: "no validation frame", 1: "1 validation frame"}.get(frames, f"{frames} validation frames")
    if counts_by_mass(config):
        return (f"points counted by each class's heatmap mass ({frames_said} to choose peak thresholds on; "
                f"from {config.mass_below_frames} on they decide)")
    chosen = ", ".join(f"{name} {t:.2f}" for name, t in zip(config.classes, class_thresholds(config)))
    source = (f"chosen on {frames_said}" if frames else
              "chosen on the validation frames" if config.peak_thresholds else "no validation frame to choose them on")
    return f"points above the peak thresholds {chosen} ({source})"


# Peaks weaker than this are not points even when the heatmap's mass asks for more (the network's output
# starts near 0.01 everywhere).
MASS_PEAK_FLOOR = 0.001


def heatmap_masses(heatmaps: np.ndarray) -> np.ndarray:
    """Per class, the heatmap's mass above its background: the sum, where the class is the strongest, of its
    values above the image's median of them (most pixels are background)."""
    strongest = heatmaps.argmax(axis=0)
    return np.array([np.sum(np.clip(plane - np.median(plane), 0, None)[strongest == class_id])
                     for class_id, plane in enumerate(heatmaps)], np.float64)


def calibrate_mass_per_object(heatmaps: list[np.ndarray], truths: list[np.ndarray], n_classes: int) -> list[float]:
    """Per class, the heatmap mass of one labelled object over these frames (0: no object of the class).
    Counting by mass does not hinge on a threshold chosen on one or two validation frames: on BCCD from 5
    images it counted platelets and white cells within 10 % where the thresholds were off up to 10-fold; with
    31 validation frames the thresholds kept a better F1 (benchmarks/counting.py)."""
    masses = np.sum([heatmap_masses(h) for h in heatmaps], axis=0)
    objects = np.sum([np.bincount(t[:, 2].astype(np.int64), minlength=n_classes)[:n_classes] for t in truths], axis=0)
    return [float(m / n) if n else 0.0 for m, n in zip(masses, objects)]


# Peak thresholds tried when detection training ends.
PEAK_THRESHOLD_CANDIDATES = np.round(np.arange(0.05, 0.951, 0.025), 3)
# From this many validation frames on, a class's threshold gives them as many points as they hold objects.
COUNTED_THRESHOLD_FRAMES = 10


def calibrate_peak_thresholds(heatmaps: list[np.ndarray], truths: list[np.ndarray], config: TrainingConfig,
                              candidates: np.ndarray = PEAK_THRESHOLD_CANDIDATES,
                              counted_from: int = COUNTED_THRESHOLD_FRAMES) -> list[float]:
    """Per class, from ``counted_from`` (validation) frames on, the threshold at which these frames get as
    many points as they hold objects; on fewer, the middle of the thresholds with the best F1 there. Rare
    or large objects learn lower peaks than common small ones, so one threshold rarely suits every class.
    On BCCD's 15 or 31 validation frames the true count on them counted new images closer than the best F1
    did, at about the same F1; on one or two frames their few objects are no count to go by, and the best
    F1 holds over a wide range, whose low end over-counts new images (benchmarks/counting.py)."""
    radius = config.object_size * config.downscale
    found = [points_from_heatmaps(h, candidates.min(), peak_distances(config) * config.downscale) for h in heatmaps]
    chosen = []
    for class_id in range(config.n_classes):
        truth = [t[t[:, 2] == class_id, :2] for t in truths]
        if not any(len(t) for t in truth):  # no object of this class to judge by
            chosen.append(float(config.peak_threshold))
        elif len(heatmaps) >= counted_from:
            scores = np.concatenate([s[c == class_id] for _, c, s in found])
            chosen.append(threshold_keeping(scores, sum(map(len, truth)), candidates))
        else:
            f1 = np.array([class_f1_at(threshold, class_id, found, truth, radius) for threshold in candidates])
            # A class there but never found: its weak peaks are shown, for the user to correct, rather than none.
            chosen.append(float(np.median(candidates[f1 == f1.max()]) if f1.max() > 0 else candidates.min()))
    return chosen


def threshold_keeping(scores: np.ndarray, count: int, candidates: np.ndarray) -> float:
    """A threshold between the ``count``-th (``count`` >= 1) and the next strongest of these peak scores, within
    the candidates' range (more objects than peaks: the lowest candidate, so every peak)."""
    strongest = np.sort(scores)[::-1]
    if count > len(strongest):
        return float(candidates.min())
    dropped = strongest[count] if count < len(strongest) else candidates.min()
    return float(np.clip((strongest[count - 1] + dropped) / 2, candidates.min(), candidates.max()))


def class_f1_at(threshold: float, class_id: int, found, truth: list[np.ndarray], radius: float) -> float:
    """F1 of one class over frames: its points in ``found`` (``points_from_heatmaps`` per frame) scoring at
    least ``threshold``, matched within ``radius`` to ``truth`` (that class's (N, 2) points per frame)."""
    counts = np.zeros(3, np.int64)
    for (positions, classes, scores), theirs in zip(found, truth):
        counts += match_points(theirs, positions[(classes == class_id) & (scores >= threshold)], radius)
    return detection_scores(*counts)["f1"]
